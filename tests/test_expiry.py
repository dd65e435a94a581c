"""A job past its deadline ends ``expired`` with no worker left to notice: `jobs.expire`
against a real redis-server and Parquet results, the chunk runner on the fake backend.
Every test ends with `tests/faults.py:check_job`: every row once, one part per chunk."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import JobSpec, ParquetSink, submit_job
from jobs.expire import REASON, Sweeper, expire_job
from jobs.reconcile import reconcile_job
from jobs.redis_store import RedisJobStore
from tests.faults import check_job

pytestmark = pytest.mark.timeout(60)


def new_job(redis_url: str, results: Path, tmp: Path, rows: int, *, deadline: float,
            chunk_size: int = 4) -> tuple[str, list[str]]:
    """A generate job of ``rows`` rows submitted, its chunks on no queue: as if no worker
    ever consumed it."""
    path = tmp / "in.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i}"}) + "\n")
    spec = JobSpec(op="generate", model="demo", chunk_size=chunk_size, deadline=deadline,
                   created_at=min(time.time(), deadline - 1))
    submit_job(spec, str(path), RedisJobStore.from_url(redis_url), ParquetSink(str(results)),
               lambda job, chunk: None)
    return spec.job_id, [f"r{i}" for i in range(rows)]


def result_rows(results: Path, job_id: str) -> list[dict]:
    return [row for part in sorted((results / "results" / f"job={job_id}").glob("*.parquet"))
            for row in pq.read_table(part).to_pylist()]


def test_a_job_no_worker_ran_expires_with_every_row_an_expired_error_row(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 10, deadline=time.time() - 1)
    store = RedisJobStore.from_url(redis_url)
    reports = Sweeper(store, ParquetSink(str(results))).sweep()
    assert [(r.job_id, r.expired, r.state) for r in reports] == [(job_id, [0, 1, 2], "expired")]
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert (status.state, status.completed, status.failed) == ("expired", 0, 10)
    assert status.timestamps["expired_at"] >= status.timestamps["queued_at"]
    assert {(r["error_code"], r["error_message"]) for r in rows} == {("expired", REASON)}


def test_a_job_before_its_deadline_or_without_one_is_left_alone(redis_url, tmp_path):
    results = tmp_path / "results"
    later, _ = new_job(redis_url, results, tmp_path, 4, deadline=time.time() + 60)
    store = RedisJobStore.from_url(redis_url)
    sink = ParquetSink(str(results))
    assert Sweeper(store, sink).sweep() == []
    assert expire_job(store, sink, later) is None
    assert store.status(later).state == "queued" and not sink.part_chunks(later)
    assert [r.job_id for r in Sweeper(store, sink).sweep(now=time.time() + 61)] == [later]


def test_sweepers_racing_on_one_job_write_every_row_once(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 40, deadline=time.time() - 1,
                          chunk_size=2)
    start = threading.Barrier(6)
    reports = []

    def sweep() -> None:
        sweeper = Sweeper(RedisJobStore.from_url(redis_url), ParquetSink(str(results)))
        start.wait()
        reports.extend(sweeper.sweep())

    threads = [threading.Thread(target=sweep) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status, _ = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert (status.state, status.failed, status.chunks_done) == ("expired", 40, 20)
    expired = [c for r in reports for c in r.expired]
    assert sorted(expired) == list(range(20))  # each chunk's part published by one sweeper


def test_finished_chunks_stay_results_and_a_worker_finishing_late_loses_the_publish(
        redis_url, tmp_path):
    from inference.testing import FakeModel
    from jobs import ChunkRunner

    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 12, deadline=time.time() + 60)
    store = RedisJobStore.from_url(redis_url)
    sink = ParquetSink(str(results))
    sweeper = Sweeper(store, sink)
    late = time.time() + 120

    def model_expiring_first(spec: JobSpec):
        """The model, handed over only once the job has expired meanwhile: a worker that
        started chunk 1 before the deadline and finishes it after."""
        if store.status(spec.job_id).chunks_done == 1:
            assert [r.expired for r in sweeper.sweep(now=late)] == [[1, 2]]
        return FakeModel("fake://demo"), "fake", "cpu"

    runner = ChunkRunner(store, sink, model_expiring_first, worker="w-late")
    assert runner.process(job_id, 0).outcome == "ran"
    assert runner.process(job_id, 1).outcome == "skipped"  # ran, lost the publish
    assert runner.process(job_id, 2).outcome == "gone"     # the job had ended
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert (status.state, status.completed, status.failed) == ("expired", 4, 8)
    assert {r["custom_id"] for r in rows if r["error_code"] is None} == {"r0", "r1", "r2",
                                                                          "r3"}
    assert {r["worker"] for r in rows if r["chunk"] == 1} == {"inferq-expiry"}


def test_a_part_published_before_the_sweep_is_recorded_as_it_is(redis_url, tmp_path):
    from inference.testing import FakeModel
    from jobs.execute import ChunkContext, execute_chunk
    from jobs.sinks import encode_table

    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 8, deadline=time.time() - 1)
    store = RedisJobStore.from_url(redis_url)
    sink = ParquetSink(str(results))
    spec = store.get_spec(job_id)
    ctx = ChunkContext(job_id=job_id, chunk=1, backend="fake", worker="w-dead")
    output = execute_chunk(FakeModel("fake://demo"), spec, store.get_chunk_input(job_id, 1),
                           ctx)  # a worker that published chunk 1 and died before recording
    assert sink.put_part(job_id, 1, "results", encode_table(output.results))
    report = expire_job(store, sink, job_id)
    assert report is not None and (report.expired, report.recorded) == ([0], [1])
    status, _ = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert (status.state, status.completed, status.failed) == ("expired", 4, 4)


def test_reconcile_expires_a_job_past_its_deadline_instead_of_requeueing_it(redis_url,
                                                                              tmp_path):
    import redis

    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 10, deadline=time.time() - 1)
    redis.Redis.from_url(redis_url).flushall()  # Redis lost the job
    queued: list[int] = []
    report = reconcile_job(job_id, RedisJobStore.from_url(redis_url),
                           ParquetSink(str(results)), lambda job, chunk: queued.append(chunk))
    assert report.recreated and report.expired == [0, 1, 2] and not report.requeued
    assert queued == [] and report.state == "expired"
    status, _ = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert (status.state, status.failed) == ("expired", 10)


def test_with_results_via_redis_the_sweep_publishes_where_workers_do(redis_url, tmp_path):
    import redis

    from jobs import RedisPartSink

    results = tmp_path / "results"
    client = redis.Redis.from_url(redis_url)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"r{i}", "prompt": "x"}) + "\n"
                            for i in range(6)))
    now = time.time()
    spec = JobSpec(op="generate", model="demo", chunk_size=4, deadline=now - 1,
                   created_at=now - 2)
    store, sink = RedisJobStore(client), RedisPartSink(client)
    submit_job(spec, str(path), store, sink, lambda job, chunk: None)
    assert [r.expired for r in Sweeper(store, sink).sweep()] == [[0, 1]]
    assert sink.has_part(spec.job_id, 0) and sink.has_part(spec.job_id, 1)
    sink.collect(spec.job_id, 2, ParquetSink(str(results)))
    status, _ = check_job(redis_url, results, spec.job_id, [f"r{i}" for i in range(6)],
                          max_attempts=3)
    assert (status.state, status.failed) == ("expired", 6)
