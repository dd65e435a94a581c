"""The images built and run: docker/check under podman, opt-in (INFERQ_CONTAINER_CHECK=1).

docker/check builds the CPU image from a Debian base, runs docker/compose.yaml's Redis,
worker, beat and flower with podman-compose, and submits a job from the host. From
nothing it takes 10 to 25 minutes on a shared 2-core machine (llama.cpp compiles in
the image); with the image layers cached about 35 s (BENCHMARKS.md). Too long for every CI
run, so it runs only when asked, where podman is installed:

    INFERQ_CONTAINER_CHECK=1 ./scripts/test tests/test_containers.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "docker" / "check"
BIN = Path(sys.executable).parent


def check_env(project: str, **extra: str) -> dict[str, str]:
    """docker/check's environment: this test's inferq, its own compose project name."""
    if os.environ.get("INFERQ_CONTAINER_CHECK") != "1":
        pytest.skip("opt-in: set INFERQ_CONTAINER_CHECK=1 to build the CPU image and run "
                    "docker/check (10-25 min from nothing, 35 s cached)")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman runc mmdebstrap)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    return clean | {"INFERQ_CHECK_PROJECT": project, "INFERQ": str(BIN / "inferq"),
                    "INFERQ_PYTHON": sys.executable,
                    "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF",
                                                      str(ROOT / "docker" / "containers.conf"))
                    } | extra


def left_behind(project: str, env: dict[str, str]) -> list[str]:
    """Containers, volumes and networks of the compose project that still exist."""
    label = f"label=io.podman.compose.project={project}"
    found = []
    for what in (["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
        out = subprocess.run(["podman", *what, "-q", "--filter", label], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        found += [f"{what[0]} {line}" for line in out.stdout.split()]
    return found


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docker_check_serves_a_job_from_the_cpu_image_and_removes_everything() -> None:
    project = f"inferq-test-{os.getpid()}"
    env = check_env(project)
    out = subprocess.run([str(CHECK)], env=env, capture_output=True, text=True, timeout=1700)
    assert out.returncode == 0, out.stderr[-8000:]
    lines = out.stderr.splitlines()
    assert "docker/check: ok" in lines
    assert "docker/check: 40 rows in 4 parts, labels " in out.stderr
    assert any(line.startswith("docker/check: beat ran the sentiment suite") for line in lines)
    assert any("the worker exits 0" in line for line in lines)
    assert left_behind(project, env) == []


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docker_check_removes_everything_when_a_step_fails(tmp_path: Path) -> None:
    """The job submission fails after compose is up: the trap still takes it all down."""
    project = f"inferq-test-fail-{os.getpid()}"
    broken = tmp_path / "inferq"
    broken.write_text(f'#!/usr/bin/env bash\n[ "$1" = submit ] && exit 3\n'
                      f'exec {BIN / "inferq"} "$@"\n')
    broken.chmod(0o755)
    env = check_env(project, INFERQ=str(broken))
    out = subprocess.run([str(CHECK)], env=env, capture_output=True, text=True, timeout=1700)
    assert out.returncode != 0
    assert "docker/check: FAILED: the job did not complete" in out.stderr, out.stderr[-8000:]
    assert "docker/check: stopped and removed everything" in out.stderr
    assert left_behind(project, env) == []
