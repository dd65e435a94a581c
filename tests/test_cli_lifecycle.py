"""`inferq delete` and `inferq reconcile`'s input check, run as a user runs them against a
real redis-server (no worker: the job's chunks are run in this process on the fake
backend where a test needs them done)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from inference.testing import FakeModel
from jobs import ChunkRunner, ParquetSink, keys
from jobs.errors import ChunkInputMissing
from jobs.redis_store import RedisJobStore
from tests.test_cli_jobs import inferq, submitted, write_rows

pytestmark = pytest.mark.timeout(120)


#: A deployment that keeps chunk inputs in Redis: losing Redis loses them too.
INPUTS_IN_REDIS = {"INFERQ_INPUTS": "redis"}


def queued_job(redis_url: str, results: Path, tmp: Path, rows: int = 6,
               env: dict[str, str] | None = None) -> tuple[str, Path]:
    path = tmp / "in.jsonl"
    write_rows(path, [f"row {i}" for i in range(rows)])
    job_id = submitted(inferq(redis_url, results, "submit", "generate", str(path), "--model",
                              "demo", "--chunk-size", "2", "--queue-anyway", env=env))
    return job_id, path


def store_of(redis_url: str, results: Path) -> RedisJobStore:
    """The store as a worker sharing the results root sees it (chunk inputs live there)."""
    return RedisJobStore(redis.Redis.from_url(redis_url), results_root=str(results))


def run_all(redis_url: str, results: Path, job_id: str) -> None:
    store = store_of(redis_url, results)
    runner = ChunkRunner(store, ParquetSink(str(results)),
                         lambda spec: (FakeModel("fake://demo"), "fake", "cpu"), worker="w1")
    for chunk in range(store.status(job_id).chunks):
        runner.process(job_id, chunk)
    assert store.status(job_id).state == "completed"


def keys_of(redis_url: str, job_id: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    return client.keys(keys.job_pattern(job_id)) + (
        [keys.JOBS.encode()] if client.zscore(keys.JOBS, job_id) is not None else [])


def test_delete_forgets_an_ended_job_and_keeps_its_results(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, _ = queued_job(redis_url, results, tmp_path)
    run_all(redis_url, results, job_id)
    out = inferq(redis_url, results, "delete", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{job_id} deleted (completed); results kept under")
    assert keys_of(redis_url, job_id) == []
    assert len(ParquetSink(str(results)).read_results(job_id)) == 6  # on disk still
    again = inferq(redis_url, results, "status", job_id)
    assert again.returncode == 2 and f"no job '{job_id}'" in again.stderr


def test_delete_with_files_removes_its_parts_and_documents_too(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, _ = queued_job(redis_url, results, tmp_path)
    run_all(redis_url, results, job_id)
    other, _ = queued_job(redis_url, results, tmp_path)
    out = inferq(redis_url, results, "delete", job_id, "--files")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{job_id} deleted (completed); 3 results folder(s) removed"
    for folder in (f"results/job={job_id}", f"metrics/job={job_id}", f"jobs/{job_id}"):
        assert not (results / folder).exists(), folder
    assert keys_of(redis_url, job_id) == []
    assert (results / "jobs" / other / "spec.json").exists()  # another job is untouched
    assert RedisJobStore.from_url(redis_url).status(other).state == "queued"


def test_delete_refuses_a_job_that_has_not_ended_unless_forced(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, _ = queued_job(redis_url, results, tmp_path)
    out = inferq(redis_url, results, "delete", job_id)
    assert out.returncode == 1
    assert f"job '{job_id}' is queued: cancel it first (`inferq cancel {job_id}`)" in out.stderr
    assert RedisJobStore.from_url(redis_url).status(job_id).state == "queued"  # untouched
    forced = inferq(redis_url, results, "delete", job_id, "--force", "--files")
    assert forced.returncode == 0, forced.stderr
    assert keys_of(redis_url, job_id) == [] and not (results / "jobs" / job_id).exists()


def test_delete_of_an_unknown_job_exits_2_naming_it(redis_url, tmp_path):
    out = inferq(redis_url, tmp_path, "delete", "job-nobody", "--files")
    assert out.returncode == 2
    assert out.stderr.strip() == "inferq: no job 'job-nobody'"


def lose_redis_and_finish_chunk_0(redis_url: str, results: Path, job_id: str) -> None:
    """Chunk 0 runs, then Redis loses everything: reconcile must re-read the input."""
    store = store_of(redis_url, results)
    ChunkRunner(store, ParquetSink(str(results)),
                lambda spec: (FakeModel("fake://demo"), "fake", "cpu"),
                worker="w1").process(job_id, 0)
    redis.Redis.from_url(redis_url).flushall()


def test_reconcile_refuses_an_input_that_changed_size_since_submit(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, path = queued_job(redis_url, results, tmp_path, env=INPUTS_IN_REDIS)
    submitted_size = path.stat().st_size
    lose_redis_and_finish_chunk_0(redis_url, results, job_id)
    write_rows(path, [f"another row {i}" for i in range(9)])  # the file was edited
    out = inferq(redis_url, results, "reconcile", job_id)
    assert out.returncode == 2
    assert str(path) in out.stderr
    assert (f"is not the input job {job_id} was submitted from: size "
            f"{path.stat().st_size:,} bytes, expected {submitted_size:,} (spec.json)"
            ) in out.stderr


def test_reconcile_refuses_an_input_of_the_same_size_with_other_rows(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, path = queued_job(redis_url, results, tmp_path, env=INPUTS_IN_REDIS)
    spec = json.loads((results / "jobs" / job_id / "spec.json").read_text())
    lose_redis_and_finish_chunk_0(redis_url, results, job_id)
    path.write_text(path.read_text().replace("row 4", "row 9"))
    out = inferq(redis_url, results, "reconcile", job_id)
    assert out.returncode == 2
    assert "sha256 " in out.stderr and f"expected {spec['input_sha256']}" in out.stderr
    moved = tmp_path / "moved.jsonl"
    write_rows(moved, [f"row {i}" for i in range(6)])  # the original, somewhere else
    ok = inferq(redis_url, results, "reconcile", job_id, "--input", str(moved), "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    # chunk 0 was recorded from its part by the refused run already; 1 and 2 run again
    assert (report["recreated"], report["recorded"], report["requeued"]) == (False, [], [1, 2])


def test_a_delivery_of_a_chunk_whose_input_is_gone_says_so(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, _ = queued_job(redis_url, results, tmp_path)
    store = store_of(redis_url, results)
    store.drop_inputs(job_id)
    runner = ChunkRunner(store, ParquetSink(str(results)),
                         lambda spec: (FakeModel("fake://demo"), "fake", "cpu"), worker="w1")
    with pytest.raises(ChunkInputMissing) as raised:
        runner.process(job_id, 1)
    decision = runner.decide(job_id, 1, raised.value)
    assert decision.verdict == "drop"
    assert decision.reason.startswith(f"job '{job_id}' has no input for chunk 1 in ")
    assert f"`inferq reconcile {job_id}`" in decision.reason
