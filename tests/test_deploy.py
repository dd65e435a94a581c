"""Deployment: `inferq config check`, the Procfile under honcho, the Docker files and compose."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
import redis
import yaml

from jobs.redis_store import RedisJobStore
from tests.processes import RedisServer, free_port
from tests.test_evals import SUITE, suites_file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INFERQ = str(BIN / "inferq")
FAKE = {"INFERQ_BACKENDS": "fake", "INFERQ_FAKE_MODELS": "demo"}


def config_check(broker_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    return subprocess.run([INFERQ, "config", "check", *args], capture_output=True, text=True,
                          timeout=60, env=clean | FAKE | {"INFERQ_BROKER_URL": broker_url} | env)


def refusals(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.startswith("inferq: refused:")]


# -- inferq config check -------------------------------------------------------------


def test_config_check_reports_what_a_worker_would_consume(redis_url):
    out = config_check(redis_url, "--json", INFERQ_WORKER_NAME="gpu-1")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["name"] == "gpu-1" and report["backends"] == ["fake"]
    assert report["models"] == ["demo"] and report["served"] == {"demo": ["fake"]}
    assert report["queues"] == ["inferq.model.demo", "inferq.fake.demo"]
    assert report["refused"] == [] and report["warnings"] == []
    text = config_check(redis_url)
    assert text.returncode == 0 and "queues: inferq.model.demo, inferq.fake.demo" in text.stdout


def test_config_check_reads_the_config_file_like_every_command(redis_url, tmp_path):
    path = tmp_path / "inferq.toml"
    path.write_text('worker_name = "from-file"\nchunk_time_limit = 600\n'
                    'visibility_timeout = 620\n')
    out = config_check(redis_url, "--json", INFERQ_CONFIG=str(path))
    assert out.returncode == 2
    assert json.loads(out.stdout)["name"] == "from-file"
    assert refusals(out) == [
        "inferq: refused: visibility_timeout=620 is shorter than chunk_time_limit + 60 = 660 "
        "(retries wait up to 60 s), so Redis redelivers chunks still running; set "
        "INFERQ_VISIBILITY_TIMEOUT to at least 660"]


def test_a_visibility_timeout_with_room_for_the_retry_wait_passes(redis_url):
    out = config_check(redis_url, INFERQ_CHUNK_TIME_LIMIT="600", INFERQ_VISIBILITY_TIMEOUT="660")
    assert out.returncode == 0, out.stderr


def non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            pytest.skip("no non-loopback IPv4 route on this host")
        address = str(s.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("no non-loopback IPv4 address on this host")
    return address


@pytest.fixture
def exposed_redis(tmp_path):
    """A redis-server without a password on a non-loopback address of this host."""
    address, port = non_loopback_address(), free_port()
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", address,
         "--protected-mode", "no", "--save", "", "--dir", str(tmp_path),
         "--logfile", str(tmp_path / "redis.log")], stdout=subprocess.DEVNULL)
    url = f"redis://{address}:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.skip(f"cannot serve Redis on {address}")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def test_no_password_on_a_non_loopback_redis_is_refused(exposed_redis):
    out = config_check(exposed_redis)
    assert out.returncode == 2
    [line] = refusals(out)
    assert "no password for a Redis on" in line and "which is not loopback" in line
    assert "redis://:PASSWORD@host:port/db" in line


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "localhost", "[::1]"])
def test_loopback_hosts_need_no_password(host):
    from worker.cli.config import check_settings
    from worker.config import Settings

    assert check_settings(Settings(broker_url=f"redis://{host}:6379/0")).refused == []


def test_a_password_satisfies_the_non_loopback_check():
    from worker.cli.config import check_settings
    from worker.config import Settings

    assert check_settings(Settings(broker_url="redis://:s3cret@10.0.0.5:6379/0")).refused == []
    assert check_settings(Settings(broker_url="redis://10.0.0.5:6379/0")).refused


def test_an_evicting_redis_is_refused(tmp_path):
    server = RedisServer(tmp_path / "redis")
    try:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
        out = config_check(server.url, "--json")
    finally:
        server.stop()
    assert out.returncode == 2
    assert json.loads(out.stdout)["queues"]  # the report still comes, then the refusal
    [line] = refusals(out)
    assert "maxmemory-policy allkeys-lru" in line and "set maxmemory-policy noeviction" in line


def test_a_redis_that_hides_config_is_a_warning_not_a_refusal(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.stop()
    server.args += ["--rename-command", "CONFIG", ""]
    server.start()
    try:
        out = config_check(server.url)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    assert "inferq: warning:" in out.stderr and "does not permit CONFIG GET" in out.stderr


def test_an_unreachable_redis_fails_like_every_command():
    out = config_check(f"redis://127.0.0.1:{free_port()}/0")
    assert out.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:" in out.stderr


def test_an_unsafe_pool_is_refused_by_settings(redis_url):
    out = config_check(redis_url, INFERQ_POOL="prefork")
    assert out.returncode == 2 and "pool='prefork'" in out.stderr


# -- Procfile under honcho --------------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_the_procfile_runs_worker_beat_and_a_loopback_flower():
    procs = procfile()
    assert procs["worker"] == "inferq worker"
    assert procs["beat"] == "inferq beat --suites ${INFERQ_SUITES:-evals.toml}"
    assert procs["flower"].startswith("celery -A worker.celery_app flower ")
    assert "--address=127.0.0.1" in procs["flower"] and "${FLOWER_PORT:-5555}" in procs["flower"]


def stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(condition, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s; honcho log:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_honcho_runs_the_procfile_and_jobs_and_evaluations_complete(redis_url, tmp_path):
    honcho = BIN / "honcho"
    if not honcho.exists():
        pytest.skip("honcho is not installed (.venv/bin/pip install honcho)")
    results = tmp_path / "results"
    suites = suites_file(tmp_path, SUITE.format(extra='every = "2s"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")} | FAKE | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "INFERQ_BROKER_URL": redis_url,
        "INFERQ_RESULTS": str(results), "INFERQ_SUITES": str(suites),
        "INFERQ_WORKER_NAME": "honcho-1", "INFERQ_HEARTBEAT_SECONDS": "0.5"}
    log = tmp_path / "honcho.log"
    store = RedisJobStore.from_url(redis_url)
    with open(log, "wb") as out:
        process = subprocess.Popen([str(honcho), "start", "-f", str(ROOT / "Procfile"),
                                    "worker", "beat"], env=env, cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: store.redis.exists("inferq:worker:honcho-1"), 60, "no worker", log)
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5)))
        submitted = subprocess.run([INFERQ, "submit", "generate", str(rows), "-m", "demo",
                                    "--wait", "--json"], env=env, capture_output=True,
                                   text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stderr + log.read_text()
        wait_for(lambda: any(r.get("accuracy") is not None for r in
                             store.evaluations.history("sentiment", "demo", limit=10)),
                 60, "no scheduled evaluation landed", log)
    finally:
        stop_group(process)
    assert process.returncode is not None


# -- Docker files, as files (tests/test_containers.py builds and runs the CPU image) --------


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_has_redis_workers_beat_flower_and_volumes():
    doc = compose()
    assert set(doc["services"]) == {"redis", "worker", "beat", "flower"}
    assert {"models", "results"} <= set(doc["volumes"])
    for name in ("worker", "beat", "flower"):
        service = doc["services"][name]
        env = service["environment"]
        assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD[^}]*\}@redis:6379/0",
                            env["INFERQ_BROKER_URL"])
        assert env["INFERQ_RESULTS"] == "/results" and env["INFERQ_MODEL_ROOTS"] == "/models"
        assert {"${INFERQ_MODELS_DIR:-models}:/models:ro",
                "${INFERQ_RESULTS_DIR:-results}:/results"} <= set(service["volumes"])
        assert service["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert doc["services"]["worker"]["command"] == ["worker"]
    assert doc["services"]["beat"]["command"][0] == "beat"
    assert "flower" in doc["services"]["flower"]["entrypoint"]
    assert all(p.startswith("127.0.0.1:") for p in doc["services"]["flower"]["ports"])
    assert doc["services"]["redis"]["ports"] == ["127.0.0.1:${INFERQ_REDIS_PORT:-6379}:6379"]


def test_compose_redis_has_a_password_aof_and_no_eviction():
    command = compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--requirepass"].startswith("${REDIS_PASSWORD")
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"


@pytest.mark.parametrize(("name", "bases", "cmake"), [
    ("cpu", ["${BASE}", "build", "${BASE}"], None),
    ("rocm", ["rocm/dev-ubuntu-"], "-DGGML_HIP=on"),
    ("cuda", ["nvidia/cuda:", "nvidia/cuda:"], "-DGGML_CUDA=on"),
])
def test_dockerfiles_build_the_engine_before_copying_the_code(name, bases, cmake):
    text = (ROOT / "docker" / f"Dockerfile.{name}").read_text()
    lines = [line.strip() for line in text.splitlines()]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(froms) == len(bases)
    assert all(f.startswith(b) for f, b in zip(froms, bases, strict=True))
    if name == "cuda":
        assert "-devel-" in froms[0] and "-runtime-" in froms[1]
        assert "COPY --from=build /opt/venv /opt/venv" in lines
    engine = next(i for i, line in enumerate(lines) if "pip install -c constraints.txt "
                  "llama-cpp-python" in line)
    first_code = min(i for i, line in enumerate(lines)
                     if re.match(r"COPY (inference|jobs|worker)\b", line))
    assert lines.index("COPY constraints.txt .") < engine < first_code
    assert any(re.search(r"pip (install|wheel) --no-deps (--wheel-dir \S+ )?\.( |$)", line)
               for line in lines[first_code:])
    if cmake:
        assert f'CMAKE_ARGS="{cmake}' in text
    assert 'ENTRYPOINT ["inferq-entrypoint"]' in lines and 'CMD ["worker"]' in lines


def test_the_cpu_image_builds_from_any_base_and_runs_without_build_tools_as_inferq() -> None:
    lines = [line.strip() for line in
             (ROOT / "docker" / "Dockerfile.cpu").read_text().splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    assert "ARG BASE=python:3.11-slim-bookworm" in lines[:first]
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    assert final[0] == "FROM ${BASE}"
    assert "COPY --from=build /opt/venv /opt/venv" in final
    installed = " ".join(line for line in final if "apt-get install" in line)
    assert "libgomp1" in installed
    assert not re.search(r"build-essential|cmake|gcc|g\+\+|-dev\b", " ".join(final))
    assert "USER inferq" in final


def entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(ROOT / "docker" / "entrypoint.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_entrypoint_runs_inferq_with_its_arguments():
    out = entrypoint("--help")
    assert out.returncode == 0, out.stderr
    assert "inferq: bulk LLM inference" in out.stdout and "config" in out.stdout


def test_the_entrypoint_defaults_to_a_worker(tmp_path):
    recorder = tmp_path / "inferq"
    recorder.write_text('#!/usr/bin/env bash\necho "inferq $*"\n')
    recorder.chmod(0o755)
    env = os.environ | {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    run = [["bash", str(ROOT / "docker" / "entrypoint.sh"), *a] for a in ([], ["beat", "-x y"])]
    outs = [subprocess.run(r, env=env, capture_output=True, text=True, timeout=30) for r in run]
    assert [o.stdout for o in outs] == ["inferq worker\n", "inferq beat -x y\n"]
