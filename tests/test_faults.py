"""Faults injected into real processes: every row still ends exactly once.

Each test breaks something (a worker told to stop, a stalled worker whose chunk
outlives the visibility timeout, Redis restarted with and without persistence,
Redis absent, a hanging prompt, an unwritable results location, a job submitted
twice), lets inferq recover, and hands the job to `tests.faults.check_job`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import redis

from jobs import keys
from jobs.redis_store import RedisJobStore
from tests.faults import check_job
from tests.processes import RedisServer, Worker

INFERQ = str(Path(sys.executable).parent / "inferq")
FAKE = {"backends": "fake", "fake_models": "demo"}


def inferq(redis_url: str, results: Path, *args: str, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERQ, "--broker-url", redis_url, "--results", str(results), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=os.environ | (env or {}))


def write_rows(path: Path, n: int, marker: Callable[[int], str] = lambda i: "") -> list[str]:
    """``n`` JSONL rows ``r0``..; ``marker(i)`` is appended to row i's prompt (fault markers)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i} {marker(i)}"}) + "\n")
    return [f"r{i}" for i in range(n)]


def submit(redis_url: str, results: Path, path: Path, *args: str,
           env: dict[str, str] | None = None) -> str:
    out = inferq(redis_url, results, "submit", "classify", str(path), "--model", "demo",
                 "--labels", "yes,no", *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def wait_terminal(redis_url: str, job_id: str, timeout: float = 60) -> None:
    store = RedisJobStore.from_url(redis_url)
    wait_for(lambda: store.status(job_id).terminal, timeout, f"job {job_id} to end")


def attempts(redis_url: str, job_id: str) -> dict[int, int]:
    client = redis.Redis.from_url(redis_url)
    found = {int(k): int(v) for k, v in client.hgetall(keys.attempts(job_id)).items()}
    client.close()
    return found


@pytest.fixture
def spawn(tmp_path) -> Iterator[Callable[..., Worker]]:
    """Workers on any Redis (the fault tests bring their own); all stopped afterwards."""
    started: list[Worker] = []

    def start(url: str, name: str, results: Path, *, wait: bool = True,
              **settings: str) -> Worker:
        worker = Worker(url, str(results), name, tmp_path, **settings)
        started.append(worker)
        if wait:
            return worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def own_redis(tmp_path) -> Iterator[Callable[..., RedisServer]]:
    """Private redis-servers that a test may stop and start again on the same port."""
    servers: list[RedisServer] = []

    def start(name: str = "redis", *, appendonly: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / name, appendonly=appendonly)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- 1. warm shutdown ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_worker_told_to_stop_finishes_its_chunk_and_nothing_runs_twice(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 40, lambda i: "@@slow:0.1@@")
    first = start_worker("w-stopping", str(results), **FAKE)
    job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--chunk-size", "10")
    store = RedisJobStore.from_url(redis_url)
    wait_for(lambda: store.status(job_id).chunks_done >= 1, 30, "a first chunk")
    time.sleep(0.3)  # inside the next chunk (10 rows x 0.1 s)
    running = [c for c in attempts(redis_url, job_id) if not store.chunk_done(job_id, c)]
    assert len(running) == 1
    first.kill(signal.SIGTERM)
    assert first.process is not None and first.process.wait(timeout=30) == 0
    assert store.chunk_done(job_id, running[0]), "the running chunk was abandoned"
    assert store.done_chunks(job_id)[running[0]].worker == "w-stopping"

    start_worker("w-next", str(results), **FAKE)
    wait_terminal(redis_url, job_id)
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert status.state == "completed"
    assert set(attempts(redis_url, job_id).values()) == {1}, "a chunk was delivered twice"
    assert {r["worker"] for r in rows} == {"w-stopping", "w-next"}


# -- 2. a chunk that outlives the broker's visibility timeout ------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_chunk_delivered_again_while_its_first_copy_runs_is_written_and_counted_once(
        redis_url, tmp_path, start_worker):
    """The first copy's worker stalls (SIGSTOP: a paused VM, a swap storm) past the
    visibility timeout of a second worker, which restores the unacked message and runs
    it too. Both copies run to the end; the first to publish wins, the other skips."""
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 10, lambda i: "@@slow:0.15@@")
    stalled = start_worker("w-stalled", str(results), chunk_time_limit="30",
                           visibility_timeout="40", **FAKE)
    job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--chunk-size", "10")
    wait_for(lambda: attempts(redis_url, job_id).get(0) == 1, 20, "the first copy to start")
    stalled.kill(signal.SIGSTOP)
    try:
        # A worker whose visibility timeout (4 s) is shorter than the stalled chunk's age
        # restores the message from Redis's unacked set, as kombu does for any worker.
        start_worker("w-fresh", str(results), chunk_time_limit="3", visibility_timeout="4",
                     **FAKE)
        wait_terminal(redis_url, job_id, timeout=30)
    finally:
        stalled.kill(signal.SIGCONT)
    client = redis.Redis.from_url(redis_url)

    def stalled_counters() -> dict:
        raw = client.get(keys.worker("w-stalled"))
        return json.loads(raw)["counters"] if raw else {}

    wait_for(lambda: stalled_counters().get("skipped") == 1, 30,
             "the first copy to finish and lose the race")
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert status.state == "completed" and status.completed == 10
    assert attempts(redis_url, job_id) == {0: 2}
    assert {r["worker"] for r in rows} == {"w-fresh"}
    assert stalled_counters()["chunks"] == 0


# -- 7. the same job twice --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_job_id_submitted_twice_is_refused_and_leaves_one_job(redis_url, tmp_path,
                                                                start_worker):
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 30)
    start_worker("w1", str(results), **FAKE)
    path = tmp_path / "in.jsonl"
    args = ("submit", "classify", str(path), "--model", "demo", "--chunk-size", "10",
            "--job-id", "nightly-1")
    # Two submitters racing with the same id: exactly one gets the job.
    racing = [subprocess.Popen([INFERQ, "--broker-url", redis_url, "--results", str(results),
                                *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=60), p.communicate()[1]) for p in racing)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "job 'nightly-1' exists already" in outcomes[1][1]
    wait_terminal(redis_url, "nightly-1")
    again = inferq(redis_url, results, *args)
    assert again.returncode == 2 and "exists already" in again.stderr, again.stderr
    client = redis.Redis.from_url(redis_url)
    assert client.zrange(keys.JOBS, 0, -1) == [b"nightly-1"]
    status, _ = check_job(redis_url, results, "nightly-1", ids, max_attempts=3)
    assert status.state == "completed" and status.completed == 30
    assert set(attempts(redis_url, "nightly-1").values()) == {1}

    # Redis forgets the job (a restart without persistence); its parts are still on disk
    # and would be taken for the new job's: the id is refused until reconcile brings it back.
    client.flushall()
    forgotten = inferq(redis_url, results, *args)
    assert forgotten.returncode == 2, forgotten.stderr
    assert "exists already" in forgotten.stderr and "inferq reconcile" in forgotten.stderr
    assert client.zrange(keys.JOBS, 0, -1) == []
    out = inferq(redis_url, results, "reconcile", "nightly-1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "completed"
    status, _ = check_job(redis_url, results, "nightly-1", ids, max_attempts=3)
    assert status.state == "completed" and status.completed == 30


# -- 5. a prompt that hangs -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_hanging_prompt_is_ended_by_the_time_limit_and_the_worker_serves_the_next_job(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 12, lambda i: "@@hang@@" if i == 5 else "")
    start_worker("w1", str(results), chunk_time_limit="2", visibility_timeout="30",
                 max_attempts="2", **FAKE)
    job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--chunk-size", "4")
    wait_terminal(redis_url, job_id, timeout=40)
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=2)
    by_id = {r["custom_id"]: r for r in rows}
    assert by_id["r5"]["error_code"] is not None
    assert "time limit" in by_id["r5"]["error_message"]
    assert all(by_id[f"r{i}"]["error_code"] is None for i in (0, 1, 2, 3, 8, 9, 10, 11))
    assert "time limit" in status.error

    ids = write_rows(tmp_path / "next.jsonl", 8)
    next_job = submit(redis_url, results, tmp_path / "next.jsonl", "--chunk-size", "4")
    wait_terminal(redis_url, next_job, timeout=20)
    status, _ = check_job(redis_url, results, next_job, ids, max_attempts=2)
    assert status.state == "completed"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_hang_no_signal_reaches_ends_its_worker_at_the_hard_limit_and_the_chunk_comes_back(
        redis_url, tmp_path, start_worker):
    """On the threads pool no signal reaches the chunk's thread (nor native code that never
    returns to Python): the worker ends itself, and the chunk is delivered again."""
    from worker.timelimit import HARD_LIMIT_EXIT, hard_grace

    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 8, lambda i: "@@hang@@" if i == 2 else "")
    settings = {**FAKE, "chunk_time_limit": "2", "visibility_timeout": "3", "max_attempts": "2"}
    threads = start_worker("w-threads", str(results), pool="threads", **settings)
    job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--chunk-size", "4")
    assert threads.process is not None
    assert threads.process.wait(timeout=2 + hard_grace(2) + 20) == HARD_LIMIT_EXIT
    assert "past its time limit of 2 s: ending this worker" in threads.log.read_text()

    start_worker("w-solo", str(results), **settings)
    wait_terminal(redis_url, job_id, timeout=40)
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=2)
    by_id = {r["custom_id"]: r for r in rows}
    assert "time limit" in by_id["r2"]["error_message"] and "time limit" in status.error
    assert all(by_id[f"r{i}"]["error_code"] is None for i in range(4, 8))


# -- 6. an unwritable results location --------------------------------------------------


@contextmanager
def unwritable_location(kind: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A results location workers cannot write, and the error they will meet."""
    if kind == "parent_is_a_file":  # mkdir fails, even for root (tests run as root)
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a regular file where the results folder should be\n")
        yield blocker / "results", "Not a directory"
        return
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        with suppress(OSError), open(mount / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
        yield mount / "results", "No space left on device"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["parent_is_a_file", "disk_full"])
def test_an_unwritable_results_location_fails_the_job_with_the_reason_and_no_part(
        kind, redis_url, tmp_path, start_worker):
    results = tmp_path / "results"  # the submitter's: spec.json goes here
    ids = write_rows(tmp_path / "in.jsonl", 20)
    inputs = {"INFERQ_INPUTS": str(tmp_path / "inputs")}  # a root the worker can read
    with unwritable_location(kind, tmp_path) as (location, reason):
        start_worker("w1", str(location), max_attempts="2", **FAKE)
        job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--chunk-size", "10",
                        env=inputs)
        wait_terminal(redis_url, job_id, timeout=30)
        status, rows = check_job(redis_url, location, job_id, ids, max_attempts=2,
                                 complete=False)
        assert rows == []
        assert not location.exists() or not list(location.rglob("*.parquet"))
        assert not location.exists() or not list(location.rglob("*.tmp"))
        assert reason in status.error, status.error
        assert "gave up after 2 attempts" in status.error, status.error


# -- 4. Redis down when a worker starts, and when a job is submitted ---------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_worker_started_before_redis_waits_for_it_and_then_serves(tmp_path, own_redis, spawn):
    server = own_redis()
    server.stop()
    results = tmp_path / "results"
    worker = spawn(server.url, "w-early", results, wait=False, **FAKE)
    with open(worker.log, "ab") as log:
        worker.process = subprocess.Popen([INFERQ, "worker"], env=worker.env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: "waiting for it" in worker.log.read_text() or worker.process.poll(), 30,
             "the worker to find Redis down")
    time.sleep(1)
    assert worker.process.poll() is None, worker.log.read_text()[-2000:]
    assert f"cannot reach Redis at {server.url}" in worker.log.read_text()
    server.start()
    client = redis.Redis.from_url(server.url)
    wait_for(lambda: client.exists(keys.worker("w-early")), 30, "the worker to come up")
    ids = write_rows(tmp_path / "in.jsonl", 20)
    job_id = submit(server.url, results, tmp_path / "in.jsonl", "--chunk-size", "10")
    wait_terminal(server.url, job_id)
    status, _ = check_job(server.url, results, job_id, ids, max_attempts=3)
    assert status.state == "completed"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_submitting_while_redis_is_down_says_so_and_leaves_no_job(tmp_path, own_redis, spawn):
    server = own_redis()
    server.stop()
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 20)
    for extra in ((), ("--queue-anyway",)):
        out = inferq(server.url, results, "submit", "classify", str(tmp_path / "in.jsonl"),
                     "--model", "demo", "--chunk-size", "10", *extra)
        assert out.returncode == 1, out.stderr
        assert f"cannot reach Redis at redis://127.0.0.1:{server.port}/0" in out.stderr, \
            out.stderr
        assert "Traceback" not in out.stderr
    assert not (results / "jobs").exists(), "a spec was written for a job that never was"

    server.start()
    spawn(server.url, "w1", results, **FAKE)
    job_id = submit(server.url, results, tmp_path / "in.jsonl", "--chunk-size", "10")
    client = redis.Redis.from_url(server.url)
    assert client.zrange(keys.JOBS, 0, -1) == [job_id.encode()]
    assert [p.name for p in (results / "jobs").iterdir()] == [job_id]
    wait_terminal(server.url, job_id)
    status, _ = check_job(server.url, results, job_id, ids, max_attempts=3)
    assert status.state == "completed"


# -- 3. Redis restarted mid-job -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_job_survives_a_redis_restart_with_an_append_only_file(tmp_path, own_redis, spawn):
    server = own_redis("redis-aof", appendonly=True)
    results = tmp_path / "results"
    settings = {**FAKE, "chunk_time_limit": "10", "visibility_timeout": "12"}
    spawn(server.url, "w1", results, **settings)
    spawn(server.url, "w2", results, **settings)
    ids = write_rows(tmp_path / "in.jsonl", 80, lambda i: "@@slow:0.05@@")
    job_id = submit(server.url, results, tmp_path / "in.jsonl", "--chunk-size", "10")
    store = RedisJobStore.from_url(server.url)
    wait_for(lambda: store.status(job_id).chunks_done >= 2, 30, "two chunks")
    server.stop()  # mid-job: both workers are inside a chunk
    time.sleep(4)  # longer than a chunk: its end, a retry and the reconnects all meet it
    server.start()  # same port, same append-only file
    wait_terminal(server.url, job_id, timeout=60)
    status, _ = check_job(server.url, results, job_id, ids, max_attempts=3)
    assert status.state == "completed"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_reconcile_completes_a_job_that_a_redis_restart_without_persistence_erased(
        tmp_path, own_redis, spawn):
    server = own_redis("redis-volatile")
    results = tmp_path / "results"
    settings = {**FAKE, "chunk_time_limit": "10", "visibility_timeout": "12"}
    spawn(server.url, "w1", results, **settings)
    ids = write_rows(tmp_path / "in.jsonl", 60, lambda i: "@@slow:0.05@@")
    job_id = submit(server.url, results, tmp_path / "in.jsonl", "--chunk-size", "10")
    store = RedisJobStore.from_url(server.url)
    wait_for(lambda: store.status(job_id).chunks_done >= 2, 30, "two chunks")
    server.stop()
    time.sleep(1)
    server.start()  # empty: the job, its counts, inputs and queued chunks are gone
    client = redis.Redis.from_url(server.url)
    assert not client.exists(keys.job(job_id))
    wait_for(lambda: client.exists(keys.worker("w1")), 30, "the worker to reconnect")
    out = inferq(server.url, results, "reconcile", job_id, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["recreated"] and report["recorded"] and report["requeued"], report
    wait_terminal(server.url, job_id, timeout=60)
    status, _ = check_job(server.url, results, job_id, ids, max_attempts=3)
    assert status.state == "completed"


def _run_chunk_as_a_dying_worker(redis_url: str, results: Path, job_id: str, chunk: int) -> None:
    """Do what a worker does up to publishing a chunk's parts, then 'die' (record nothing)."""
    from inference.testing import FakeModel
    from jobs.execute import ChunkContext, run_chunk
    from jobs.sinks import ParquetSink, encode_table

    store = RedisJobStore(redis.Redis.from_url(redis_url), results_root=str(results))
    spec = store.get_spec(job_id)
    ctx = ChunkContext(job_id=job_id, chunk=chunk, backend="fake", worker="w-dead")
    output = run_chunk(FakeModel("fake://demo"), spec, store.get_chunk_input(job_id, chunk), ctx)
    sink = ParquetSink(str(results))
    assert sink.put_part(job_id, chunk, "results", encode_table(output.results))
    assert sink.put_part(job_id, chunk, "metrics", encode_table(output.metrics))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_worker_that_died_after_publishing_a_part_but_before_recording_it_loses_nothing(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 40)
    job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--chunk-size", "10",
                    "--queue-anyway")
    _run_chunk_as_a_dying_worker(redis_url, results, job_id, 1)
    start_worker("w1", str(results), **FAKE)
    wait_terminal(redis_url, job_id)
    status, rows = check_job(redis_url, results, job_id, ids, max_attempts=3)
    assert status.state == "completed"
    assert {r["worker"] for r in rows if r["chunk"] == 1} == {"w-dead"}  # its part stood
    assert 1 not in attempts(redis_url, job_id)  # found published: not run again


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_temporary_file_left_by_a_writer_that_died_before_publishing_is_cleaned_up(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 40)
    job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--chunk-size", "10",
                    "--queue-anyway")
    orphan = results / "results" / f"job={job_id}" / ".part-000002.parquet.dead.tmp"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"PAR1 half a part")  # the writer died here, before its link()
    start_worker("w1", str(results), **FAKE)
    wait_terminal(redis_url, job_id)
    status, _ = check_job(redis_url, results, job_id, ids, max_attempts=3)  # no stray files
    assert status.state == "completed"
    assert not orphan.exists()
