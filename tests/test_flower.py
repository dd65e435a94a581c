"""Flower sees inferq's workers and tasks, and agrees with `inferq workers`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import free_port

pytest.importorskip("flower")

INFERQ = str(Path(sys.executable).parent / "inferq")
CELERY = str(Path(sys.executable).parent / "celery")


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_flower_lists_the_same_workers_as_inferq_and_the_chunks_they_ran(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w-flower", str(results), backends="fake", fake_models="demo")
    port = free_port()
    env = os.environ | {"INFERQ_BROKER_URL": redis_url, "FLOWER_UNAUTHENTICATED_API": "true"}
    with open(tmp_path / "flower.log", "wb") as log:
        flower = subprocess.Popen([CELERY, "-A", "worker.celery_app", "flower",
                                   f"--port={port}", "--address=127.0.0.1"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                seen = get(f"{base}/api/workers?refresh=1")
                if seen:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
            time.sleep(0.5)
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"row {i}"}) + "\n" for i in range(30)))
        out = subprocess.run([INFERQ, "--broker-url", redis_url, "--results", str(results),
                              "submit", "classify", str(path), "--model", "demo",
                              "--chunk-size", "10", "--wait"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        listed = subprocess.run([INFERQ, "--broker-url", redis_url, "workers", "--json"],
                                capture_output=True, text=True, timeout=30)
        ours = {w["name"] for w in json.loads(listed.stdout)}
        theirs = {name.split("@")[-1] for name in get(f"{base}/api/workers?refresh=1")}
        assert ours == theirs == {"w-flower"}
        deadline = time.monotonic() + 30
        while True:
            tasks = get(f"{base}/api/tasks")
            done = [t for t in tasks.values()
                    if t["name"] == "inferq.run_chunk" and t["state"] == "SUCCESS"]
            if len(done) == 3:
                break
            assert time.monotonic() < deadline, tasks
            time.sleep(0.5)
        assert {t["worker"].split("@")[-1] for t in done} == {"w-flower"}
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=15)
