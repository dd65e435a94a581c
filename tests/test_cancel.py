"""A cancelled job ends ``cancelled`` with no worker left to notice, and a worker or an
expiry sweep racing the cancel writes no row twice and loses none: `jobs.cancel` against
a real redis-server and Parquet results, the chunk runner on the fake backend, and a real
``inferq worker`` process."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from inference.testing import FakeModel
from jobs import ChunkRunner, JobSpec, ParquetSink, submit_job
from jobs.cancel import cancel_job
from jobs.expire import Sweeper
from jobs.redis_store import RedisJobStore
from tests.faults import part_files

pytestmark = pytest.mark.timeout(120)


def new_job(redis_url: str, results: Path, tmp: Path, rows: int, *, chunk_size: int = 2,
            prompt: str = "row {i}", deadline: float | None = None) -> tuple[str, list[str]]:
    """A generate job submitted, its chunks on no queue: as if no worker consumed it."""
    path = tmp / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"r{i}", "prompt": prompt.format(i=i)})
                            + "\n" for i in range(rows)))
    spec = JobSpec(op="generate", model="demo", chunk_size=chunk_size, deadline=deadline,
                   created_at=time.time() - 2)
    submit_job(spec, str(path), RedisJobStore.from_url(redis_url), ParquetSink(str(results)),
               lambda job, chunk: None)
    return spec.job_id, [f"r{i}" for i in range(rows)]


def check_cancelled(redis_url: str, results: Path, job_id: str, ids: list[str]) -> list[int]:
    """The invariant after a cancel: ended, every chunk recorded once, a part exactly for
    the chunks recorded with rows, each row of those once and no other; the chunks run."""
    store = RedisJobStore.from_url(redis_url)
    status = store.status(job_id)
    assert status.state == "cancelled", status.state
    done = store.done_chunks(job_id)
    assert sorted(done) == list(range(status.chunks))
    ran = sorted(c for c, s in done.items() if s.status != "cancelled")
    assert sorted(part_files(results, "results", job_id)) == ran  # none for a cancelled one
    rows = ParquetSink(str(results)).read_results(job_id).to_pylist()
    expected = [i for c in ran for i in ids[2 * c:2 * c + 2]]
    assert [r["custom_id"] for r in rows] == expected  # each once, in order
    assert (status.completed + status.failed, status.failed) == (len(rows), 0)
    manifest = json.loads((results / "jobs" / job_id / "manifest.json").read_text())
    assert (manifest["state"], manifest["chunks"]["parts"]) == ("cancelled", ran)
    return ran


def test_a_job_no_worker_consumes_ends_cancelled_at_once(redis_url, tmp_path):
    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 10)
    report = cancel_job(RedisJobStore.from_url(redis_url), ParquetSink(str(results)), job_id)
    assert (report.cancelled, report.running, report.state) == ([0, 1, 2, 3, 4], [],
                                                                "cancelled")
    assert check_cancelled(redis_url, results, job_id, ids) == []
    status = RedisJobStore.from_url(redis_url).status(job_id)
    assert {"cancelling_at", "cancelled_at"} <= set(status.timestamps)


def test_finished_chunks_stay_results_and_a_late_delivery_records_nothing_twice(redis_url,
                                                                               tmp_path):
    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 10)
    store, sink = RedisJobStore.from_url(redis_url), ParquetSink(str(results))
    runner = ChunkRunner(store, sink, lambda spec: (FakeModel("fake://demo"), "fake", "cpu"),
                         worker="w1")
    assert runner.process(job_id, 0).outcome == "ran"
    store.start_attempt(job_id, 1)  # a delivery of chunk 1 has started, elsewhere
    report = cancel_job(store, sink, job_id)
    assert (report.cancelled, report.running, report.state) == ([2, 3, 4], [1], "cancelling")
    assert runner.process(job_id, 1).outcome == "cancelled"  # its delivery sees the flag
    assert runner.process(job_id, 2).outcome == "gone"       # the job has ended
    assert check_cancelled(redis_url, results, job_id, ids) == [0]


def test_a_part_published_but_not_recorded_is_recorded_as_it_is(redis_url, tmp_path):
    from jobs.execute import ChunkContext, execute_chunk
    from jobs.sinks import encode_table

    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 6)
    store, sink = RedisJobStore.from_url(redis_url), ParquetSink(str(results))
    store.start_attempt(job_id, 1)
    ctx = ChunkContext(job_id=job_id, chunk=1, backend="fake", worker="w-dead")
    output = execute_chunk(FakeModel("fake://demo"), store.get_spec(job_id),
                           store.get_chunk_input(job_id, 1), ctx)
    assert sink.put_part(job_id, 1, "results", encode_table(output.results))  # then it died
    report = cancel_job(store, sink, job_id)
    assert (report.cancelled, report.recorded, report.state) == ([0, 2], [1], "cancelled")
    assert check_cancelled(redis_url, results, job_id, ids) == [1]


@pytest.mark.parametrize("seed", range(8))
def test_deliveries_racing_a_cancel_write_every_row_at_most_once(redis_url, tmp_path, seed):
    """Three runners take chunks while a cancel lands at a random moment: whatever the
    interleaving, the job ends cancelled and the parts hold exactly the recorded rows."""
    results = tmp_path / "results"
    job_id, ids = new_job(redis_url, results, tmp_path, 40, prompt="row {i} @@slow:0.002@@")
    chunks = list(range(20))
    random.Random(seed).shuffle(chunks)
    taken = iter(chunks)
    lock = threading.Lock()

    def deliver(name: str) -> None:
        store, sink = RedisJobStore.from_url(redis_url), ParquetSink(str(results))
        runner = ChunkRunner(store, sink,
                             lambda spec: (FakeModel("fake://demo"), "fake", "cpu"),
                             worker=name)
        while True:
            with lock:
                chunk = next(taken, None)
            if chunk is None:
                return
            runner.process(job_id, chunk)

    threads = [threading.Thread(target=deliver, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(random.Random(seed).uniform(0, 0.05))
    cancel_job(RedisJobStore.from_url(redis_url), ParquetSink(str(results)), job_id)
    for thread in threads:
        thread.join()
    check_cancelled(redis_url, results, job_id, ids)


@pytest.mark.parametrize("seed", range(4))
def test_an_expiry_sweep_racing_a_cancel_writes_every_chunk_once(redis_url, tmp_path, seed):
    results = tmp_path / "results"
    job_id, _ = new_job(redis_url, results, tmp_path, 60, deadline=time.time() - 1)
    start = threading.Barrier(3)

    def sweep() -> None:
        sweeper = Sweeper(RedisJobStore.from_url(redis_url), ParquetSink(str(results)))
        start.wait()
        sweeper.sweep()

    def cancel() -> None:
        store, sink = RedisJobStore.from_url(redis_url), ParquetSink(str(results))
        start.wait()
        time.sleep(random.Random(seed).uniform(0, 0.02))
        cancel_job(store, sink, job_id)

    threads = [threading.Thread(target=f) for f in (sweep, sweep, cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = RedisJobStore.from_url(redis_url)
    status = store.status(job_id)
    done = store.done_chunks(job_id)
    assert status.terminal and sorted(done) == list(range(30))
    parts = part_files(results, "results", job_id)
    assert sorted(parts) == sorted(c for c, s in done.items() if s.status != "cancelled")
    rows = ParquetSink(str(results)).read_results(job_id)
    assert rows.num_rows == status.failed == 2 * len(parts)  # every part: expired rows
    assert status.state == ("cancelled" if len(parts) < 30 else status.state)


@pytest.mark.slow
def test_a_real_worker_racing_a_cancel_leaves_each_row_once(redis_url, tmp_path,
                                                           start_worker):
    from tests.test_cli_jobs import inferq, submitted, wait_for, write_rows

    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = tmp_path / "slow.jsonl"
    ids = write_rows(path, [f"row {i} @@slow:0.1@@" for i in range(40)], prefix="s")
    job_id = submitted(inferq(redis_url, results, "submit", "generate", str(path), "--model",
                              "demo", "--chunk-size", "2"))
    store = RedisJobStore.from_url(redis_url)
    wait_for(lambda: store.status(job_id).chunks_done >= 1, what="a chunk")
    out = inferq(redis_url, results, "cancel", job_id)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: store.status(job_id).terminal, what="the job to end")
    ran = check_cancelled(redis_url, results, job_id, ids)
    assert 1 <= len(ran) < 20


def test_cancel_with_no_worker_ends_cancelled_on_the_command_line(redis_url, tmp_path):
    from tests.test_cli_jobs import inferq, submitted, write_rows

    results = tmp_path / "results"
    path = tmp_path / "in.jsonl"
    write_rows(path, [f"row {i}" for i in range(6)])
    job_id = submitted(inferq(redis_url, results, "submit", "generate", str(path), "--model",
                              "demo", "--chunk-size", "2", "--queue-anyway"))
    out = inferq(redis_url, results, "cancel", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [job_id, "cancelled"]
    status = json.loads(inferq(redis_url, results, "status", job_id, "--json").stdout)
    assert (status["state"], status["chunks_done"]) == ("cancelled", 3)
