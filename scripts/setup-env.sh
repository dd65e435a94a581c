# Sourced by scripts/*: creates .venv and installs inferq with every extra,
# pinned by constraints.txt, then activates it. Idempotent and quick when done.
# The first run builds llama-cpp-python from source (about 6 minutes on 2 cores);
# pip caches the wheel for later runs.
set -euo pipefail
PYTHON=${PYTHON:-python3}
# System packages the tests use: redis-server (every queue test starts its own),
# chromium (the evaluation report is checked in a headless browser) and jq (the
# README's shell pipes are run as written). Not podman: the container check
# (tests/test_containers.py) is opt-in, INFERQ_CONTAINER_CHECK=1, see docs/deploy.md.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.inferq-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    python -m pip install -q --upgrade pip
    python -m pip install -q -c constraints.txt -e ".[llama,mlx,dev]"
    echo "$want" > "$stamp"
fi
