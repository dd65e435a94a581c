"""A real job whose inputs and results live on S3: moto's server on loopback, a real
``inferq worker`` process, the real command line. Redis keeps state only.

The submitter's ``INFERQ_INPUTS`` names the bucket; the worker's own setting says
Redis, and it still reads the job's inputs from S3, because the job's spec says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import redis

from jobs import keys, layout
from jobs.redis_store import RedisJobStore
from jobs.sinks import ParquetSink

INFERQ = str(Path(sys.executable).parent / "inferq")
ROWS, CHUNK = 45, 10
CHUNKS = -(-ROWS // CHUNK)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def inferq(redis_url: str, results: str, inputs: str, cwd: Path,
           *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")} | {
        "INFERQ_INPUTS": inputs}
    return subprocess.run([INFERQ, "--broker-url", redis_url, "--results", results, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def input_files(inputs: str, job_id: str) -> list[str]:
    fs, root = pafs.FileSystem.from_uri(inputs)
    selector = pafs.FileSelector(f"{root}/{layout.input_dir(job_id)}", allow_not_found=True)
    return sorted(info.base_name for info in fs.get_file_info(selector))


def test_a_job_with_inputs_on_s3_runs_through_a_worker_and_leaves_no_input_anywhere(
        redis_url, s3_server, start_worker, tmp_path):
    inputs, results = s3_server.bucket("inputs"), s3_server.bucket("results")
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as f:
        for i in range(ROWS):
            f.write(json.dumps({"custom_id": f"req-{i:03d}", "expected": "positive",
                                "prompt": "" if i == 7 else f"review {i}: fine ☃"}) + "\n")
    out = inferq(redis_url, results, inputs, tmp_path, "submit", "classify", "in.jsonl",
                 "--model", "demo", "--labels", "positive,negative", "--chunk-size",
                 str(CHUNK), "--queue-anyway")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    client = redis.Redis.from_url(redis_url)
    # queued, nobody serving yet: every chunk's input is on S3, none in Redis
    assert input_files(inputs, job_id) == [layout.part_name(c) for c in range(CHUNKS)]
    assert client.keys(keys.chunk_input(job_id, "*")) == []
    store = RedisJobStore(client)
    assert store.get_spec(job_id).inputs == inputs
    assert ParquetSink(results).read_document(job_id, "spec.json")["inputs"] == inputs

    start_worker("w1", results, backends="fake", fake_models="demo", inputs="redis")
    deadline = time.monotonic() + 120
    while not store.status(job_id).terminal and time.monotonic() < deadline:
        time.sleep(0.2)
    status = store.status(job_id)
    assert (status.state, status.total, status.completed, status.failed) == (
        "completed", ROWS, ROWS - 1, 1)
    table = ParquetSink(results).read_results(job_id)
    assert table.column("custom_id").to_pylist() == [f"req-{i:03d}" for i in range(ROWS)]
    assert table.column("expected").to_pylist() == ["positive"] * ROWS
    assert [r["custom_id"] for r in table.to_pylist() if r["error_code"]] == ["req-007"]
    assert input_files(inputs, job_id) == []  # dropped at finalize
    assert client.keys(keys.chunk_input(job_id, "*")) == []
    client.close()
