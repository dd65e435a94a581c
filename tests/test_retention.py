"""An ended job's Redis state expires after its retention, and `reconcile` rebuilds it from
the Parquet parts, ``spec.json`` and ``manifest.json``: against a real redis-server whose
keys really expire, the chunk runner on the fake backend. `tests/faults.py:check_job`
checks every rebuilt job: every row once, Redis agreeing with the parts on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from inference.testing import FakeModel
from jobs import ChunkRunner, JobSpec, ParquetSink, keys, submit_job
from jobs.cancel import cancel_job
from jobs.reconcile import reconcile_job
from jobs.redis_store import RedisJobStore
from tests.faults import check_job

pytestmark = pytest.mark.timeout(60)


def store_of(redis_url: str, retention: int) -> RedisJobStore:
    return RedisJobStore(redis.Redis.from_url(redis_url), retention_seconds=retention)


def new_job(store: RedisJobStore, results: Path, tmp: Path, rows: int = 10,
            chunk_size: int = 4) -> tuple[str, list[str]]:
    """A generate job submitted, its chunks on no queue (the tests run them here)."""
    path = tmp / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i}"}) + "\n"
                            for i in range(rows)))
    spec = JobSpec(op="generate", model="demo", chunk_size=chunk_size)
    submit_job(spec, str(path), store, ParquetSink(str(results)), lambda job, chunk: None)
    return spec.job_id, [f"r{i}" for i in range(rows)]


def runner(store: RedisJobStore, results: Path) -> ChunkRunner:
    return ChunkRunner(store, ParquetSink(str(results)),
                       lambda spec: (FakeModel("fake://demo"), "fake", "cpu"), worker="w1")


def job_keys_left(redis_url: str, job_id: str) -> dict[str, int]:
    """Every key of the job still in Redis -> its TTL in seconds (-1: none)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return {k.decode(): client.ttl(k) for k in client.keys(keys.job_pattern(job_id))}
    finally:
        client.close()


def wait_gone(redis_url: str, job_id: str, timeout: float = 10) -> None:
    """Until Redis itself has expired every key of the job."""
    deadline = time.monotonic() + timeout
    while job_keys_left(redis_url, job_id):
        assert time.monotonic() < deadline, job_keys_left(redis_url, job_id)
        time.sleep(0.1)


def test_an_ended_jobs_keys_take_its_retention_and_a_running_jobs_do_not(redis_url, tmp_path):
    results = tmp_path / "results"
    store = store_of(redis_url, 3600)
    job_id, _ = new_job(store, results, tmp_path)
    assert runner(store, results).process(job_id, 0).outcome == "ran"
    assert set(job_keys_left(redis_url, job_id).values()) == {-1}  # still running: kept
    for chunk in (1, 2):
        runner(store, results).process(job_id, chunk)
    left = job_keys_left(redis_url, job_id)
    assert {keys.job(job_id), keys.done(job_id), keys.attempts(job_id), keys.metrics(job_id),
            keys.stream(job_id), keys.finalize(job_id)} == set(left)
    assert all(3500 < ttl <= 3600 for ttl in left.values()), left
    assert store.status(job_id).state == "completed"


def test_retention_zero_keeps_an_ended_job_until_it_is_deleted(redis_url, tmp_path):
    results = tmp_path / "results"
    store = store_of(redis_url, 0)
    job_id, _ = new_job(store, results, tmp_path)
    for chunk in range(3):
        runner(store, results).process(job_id, chunk)
    left = job_keys_left(redis_url, job_id)
    assert store.status(job_id).state == "completed"
    assert left and all(ttl == -1 for k, ttl in left.items() if k != keys.finalize(job_id))


def test_the_retention_recorded_by_the_job_wins_over_the_finishers_setting(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, _ = new_job(store_of(redis_url, 0), results, tmp_path)  # submitted: keep
    finisher = store_of(redis_url, 1)                                # a worker's: 1 s
    for chunk in range(3):
        runner(finisher, results).process(job_id, chunk)
    assert finisher.status(job_id).state == "completed"
    assert job_keys_left(redis_url, job_id)[keys.job(job_id)] == -1


def test_a_completed_job_whose_state_expired_is_rebuilt_by_reconcile(redis_url, tmp_path):
    results = tmp_path / "results"
    store = store_of(redis_url, 1)
    job_id, ids = new_job(store, results, tmp_path)
    for chunk in range(3):
        runner(store, results).process(job_id, chunk)
    before = store.status(job_id)
    wait_gone(redis_url, job_id)
    assert store.list_jobs() == []  # the index no longer names it
    assert redis.Redis.from_url(redis_url).zscore(keys.JOBS, job_id) is None

    queued: list[int] = []
    report = reconcile_job(job_id, store, ParquetSink(str(results)),
                           lambda job, chunk: queued.append(chunk))
    assert report.recreated and sorted(report.recorded) == [0, 1, 2] and not queued
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert (status.state, status.completed, status.failed) == ("completed", 10, 0)
    assert (status.completed, status.chunks) == (before.completed, before.chunks)
    assert [r["custom_id"] for r in rows] == ids
    assert [s.job_id for s in store.list_jobs()] == [job_id]
    wait_gone(redis_url, job_id)  # ended again: its retention applies again


def test_a_cancelled_job_whose_state_expired_is_rebuilt_cancelled_not_rerun(redis_url,
                                                                             tmp_path):
    results = tmp_path / "results"
    store = store_of(redis_url, 1)
    job_id, ids = new_job(store, results, tmp_path)
    assert runner(store, results).process(job_id, 0).outcome == "ran"
    report = cancel_job(store, ParquetSink(str(results)), job_id)
    assert (report.cancelled, report.state) == ([1, 2], "cancelled")
    wait_gone(redis_url, job_id)

    queued: list[int] = []
    rebuilt = reconcile_job(job_id, store, ParquetSink(str(results)),
                            lambda job, chunk: queued.append(chunk))
    assert (rebuilt.recorded, rebuilt.requeued, queued) == ([0], [], [])
    status = store.status(job_id)
    assert (status.state, status.completed, status.chunks_done) == ("cancelled", 4, 3)
    assert {c: s.status for c, s in store.done_chunks(job_id).items()} == {
        0: "ok", 1: "cancelled", 2: "cancelled"}
    on_disk = ParquetSink(str(results)).read_results(job_id)
    assert on_disk.column("custom_id").to_pylist() == ids[:4]


def test_listing_jobs_prunes_ids_whose_job_is_gone_and_still_lists_the_limit(redis_url,
                                                                             tmp_path):
    client = redis.Redis.from_url(redis_url)
    store = RedisJobStore(client)
    for i in range(5):
        store.create_job(JobSpec(op="generate", model="demo", job_id=f"job-{i}",
                                 created_at=1000.0 + i), total=1, chunks=1)
    client.delete(keys.job("job-4"), keys.job("job-3"))  # as their retention would
    client.hset(keys.attempts("job-4"), "0", 1)           # a late worker's write
    assert [s.job_id for s in store.list_jobs(2)] == ["job-2", "job-1"]
    assert [m.decode() for m in client.zrevrange(keys.JOBS, 0, -1)] == [
        "job-2", "job-1", "job-0"]
    assert not client.exists(keys.attempts("job-4"))
