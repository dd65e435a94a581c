"""Results through Redis: workers that share only Redis with the submitter.

Workers run with ``results = "redis"`` and write nothing to disk; the submitter's
client collects the parts into ``./results`` (relative to its working directory)
and writes the manifest. The job must end as one complete dataset there, and no
part may stay behind in Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from jobs import keys
from jobs.redis_store import RedisJobStore
from jobs.sinks import ParquetSink
from tests.test_store import undocumented_keys

INFERQ = str(Path(sys.executable).parent / "inferq")
ROOT = Path(__file__).resolve().parent.parent
ROWS, CHUNK = 57, 10
CHUNKS = -(-ROWS // CHUNK)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def inferq(redis_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERQ, "--broker-url", redis_url, "--results", "redis", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=90)


@pytest.fixture
def submitter(tmp_path: Path) -> Path:
    """The submitter's working directory, holding its input file (row 5's prompt is empty)."""
    cwd = tmp_path / "submitter"
    cwd.mkdir()
    with open(cwd / "in.jsonl", "w", encoding="utf-8") as f:
        for i in range(ROWS):
            f.write(json.dumps({"custom_id": f"req-{i:03d}",
                                "prompt": "" if i == 5 else f"review {i}: fine"}) + "\n")
    return cwd


def submit(redis_url: str, cwd: Path, *args: str) -> str:
    out = inferq(redis_url, cwd, "submit", "classify", "in.jsonl", "--model", "demo",
                 "--labels", "positive,negative", "--chunk-size", str(CHUNK), *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def part_keys(redis_url: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return sorted(client.keys(keys.part("*", "*", "*")))
    finally:
        client.close()


def assert_redis_holds_only_the_finished_job(redis_url: str, job_id: str) -> None:
    """No part, no input: the job's documented bookkeeping and nothing else."""
    client = redis.Redis.from_url(redis_url)
    try:
        assert {k.decode() for k in client.keys(keys.job_pattern(job_id))} == {
            keys.job(job_id), keys.done(job_id), keys.attempts(job_id), keys.metrics(job_id),
            keys.stream(job_id), keys.finalize(job_id)}
        assert undocumented_keys(client) == []
    finally:
        client.close()


def assert_one_complete_dataset(results: Path, redis_url: str, job_id: str) -> None:
    """Every input row exactly once, every metrics part, a manifest that agrees with Redis."""
    sink = ParquetSink(str(results))
    table = sink.read_results(job_id)
    assert table.column("custom_id").to_pylist() == [f"req-{i:03d}" for i in range(ROWS)]
    assert table.column("row_index").to_pylist() == list(range(ROWS))
    errors = [(r["custom_id"], r["error_code"]) for r in table.to_pylist() if r["error_code"]]
    assert errors == [("req-005", "empty_prompt")]
    assert set(table.column("worker").to_pylist()) == {"w1"}
    assert sink.part_chunks(job_id) == sink.part_chunks(job_id, "metrics") == list(
        range(CHUNKS))
    with redis.Redis.from_url(redis_url) as client:
        status = RedisJobStore(client).status(job_id)
    assert (status.state, status.total, status.completed, status.failed,
            status.chunks_done) == ("completed", ROWS, ROWS - 1, 1, CHUNKS)
    manifest = sink.read_document(job_id, "manifest.json")
    assert manifest["state"] == "completed"
    assert manifest["request_counts"] == {"total": ROWS, "completed": ROWS - 1, "failed": 1}
    assert manifest["chunks"] == {"total": CHUNKS, "parts": list(range(CHUNKS)),
                                  "cancelled": []}
    assert sink.read_document(job_id, "spec.json")["rows"] == ROWS
    assert not (ROOT / "results" / "results" / f"job={job_id}").exists()  # worker's cwd


def test_a_waited_job_collects_into_one_dataset_where_it_was_submitted(
        redis_url, submitter, start_worker):
    start_worker("w1", "redis", backends="fake", fake_models="demo")
    job_id = submit(redis_url, submitter, "--wait")
    assert_one_complete_dataset(submitter / "results", redis_url, job_id)
    assert_redis_holds_only_the_finished_job(redis_url, job_id)


def test_parts_wait_in_redis_until_the_submitter_reads_the_results(
        redis_url, submitter, start_worker):
    start_worker("w1", "redis", backends="fake", fake_models="demo")
    job_id = submit(redis_url, submitter)
    with redis.Redis.from_url(redis_url) as client:
        deadline = time.monotonic() + 60
        while not RedisJobStore(client).status(job_id).terminal \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(part_keys(redis_url)) == 2 * CHUNKS  # results and metrics, nobody collected
    assert not (submitter / "results" / "results").exists()
    out = inferq(redis_url, submitter, "results", job_id, "--to", "out.jsonl")
    assert out.returncode == 0, out.stderr
    exported = [json.loads(line) for line in (submitter / "out.jsonl").read_text().splitlines()]
    assert len(exported) == ROWS
    assert_one_complete_dataset(submitter / "results", redis_url, job_id)
    assert_redis_holds_only_the_finished_job(redis_url, job_id)
