"""The feeder (jobs/feeder.py): chunks reach the queues fairly, by priority, exactly once.

The first tests drive the feeder against a real redis-server with no Celery (what it
claims, in which order); the others run real `inferq worker` processes on the fake
backend and read the order chunks ran from their metrics parts' ``started_at``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis

from jobs import InvalidJobSpec, JobSpec, JobState, ParquetSink, keys
from jobs.feeder import Feeder, waiting
from jobs.lifecycle import ChunkStatus, ChunkSummary, record_chunk
from jobs.redis_store import RedisJobStore
from tests.faults import check_job
from tests.test_queue import inferq

pytestmark = pytest.mark.timeout(120)

QUEUE = "inferq.model.demo"
ROOT = Path(__file__).resolve().parent.parent


def queued_job(store: RedisJobStore, feeder: Feeder, job_id: str, chunks: int,
               priority: int = 0) -> None:
    """A queued job of ``chunks`` chunks added to the feeder (no input rows: nothing
    runs it in these tests)."""
    spec = JobSpec(op="generate", model="demo", job_id=job_id, priority=priority)
    assert store.create_job(spec, total=chunks, chunks=chunks)
    store.set_state(job_id, JobState.QUEUED)
    feeder.add(job_id, QUEUE, priority)


def claims(feeder: Feeder) -> list[str]:
    return [f"{job}:{chunk}" for job, chunk in feeder.claim(QUEUE)]


def test_a_job_added_behind_a_big_one_is_fed_at_the_next_free_slot_then_chunk_for_chunk(
        redis_url):
    client = redis.Redis.from_url(redis_url)
    store, feeder = RedisJobStore(client), Feeder(client, depth=2)
    queued_job(store, feeder, "big", 50)
    assert claims(feeder) == ["big:0", "big:1"]
    queued_job(store, feeder, "small", 3)
    assert claims(feeder) == []  # the queue holds its depth
    assert waiting(client, QUEUE) == 48 + 3
    order = []
    for job, chunk in [("big", 0), ("big", 1), ("small", 0), ("big", 2), ("small", 1)]:
        feeder.settle(job, chunk)
        order += claims(feeder)
    assert order == ["small:0", "big:2", "small:1", "big:3", "small:2"]
    assert waiting(client, QUEUE) == 46


def test_a_workers_top_up_settles_and_claims_in_one_script_once_it_knows_the_jobs_queue(
        redis_url):
    client = redis.Redis.from_url(redis_url)
    store, feeder = RedisJobStore(client), Feeder(client, depth=2)
    queued_job(store, feeder, "big", 5)
    assert claims(feeder) == ["big:0", "big:1"]
    sent: list[str] = []

    def send(queue: str, job: str, chunk: int) -> None:
        sent.append(f"{job}:{chunk}")

    feeder.after_chunk("big", 0, send)  # first of the job here: its queue asked once
    commands: list[str] = []
    execute = client.execute_command

    def counted(*args: object, **options: object) -> object:
        commands.append(str(args[0]))
        return execute(*args, **options)

    client.execute_command = counted  # type: ignore[method-assign]
    feeder.after_chunk("big", 1, send)
    assert sent == ["big:2", "big:3"]
    assert commands == ["EVALSHA", "ZREM"]  # settle and claim; then confirm what was sent
    inflight = client.zrange(keys.feed_inflight(QUEUE), 0, -1)
    assert sorted(m.decode() for m in inflight) == ["big 2", "big 3"]  # 0 and 1 settled
    assert int(client.hget(keys.feed_job("big"), "inflight")) == 2


def test_a_higher_priority_job_takes_every_free_slot_until_it_has_none_left(redis_url):
    client = redis.Redis.from_url(redis_url)
    store, feeder = RedisJobStore(client), Feeder(client, depth=2)
    queued_job(store, feeder, "first", 5)
    queued_job(store, feeder, "second", 5)
    assert claims(feeder) == ["first:0", "second:0"]
    queued_job(store, feeder, "urgent", 3, priority=5)
    order = []
    for job, chunk in [("first", 0), ("second", 0), ("urgent", 0), ("urgent", 1),
                       ("urgent", 2), ("first", 1)]:
        feeder.settle(job, chunk)
        order += claims(feeder)
    assert order == ["urgent:0", "urgent:1", "urgent:2", "first:1", "second:1", "first:2"]


def test_a_cancelled_job_is_never_fed_again_and_its_unfed_chunks_end_it_cancelled(
        redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    store, feeder = RedisJobStore(client), Feeder(client, depth=2)
    sink = ParquetSink(str(tmp_path / "results"))
    queued_job(store, feeder, "doomed", 6)
    queued_job(store, feeder, "other", 6)
    assert claims(feeder) == ["doomed:0", "other:0"]
    store.request_cancel("doomed")
    feeder.settle("other", 0)
    assert claims(feeder) == ["other:1"]  # "doomed" had the turn, and is dropped instead
    # the pass records its unfed chunks
    feeder.tick(lambda q, j, c: None, store, sink)
    assert sorted(store.done_chunks("doomed")) == [1, 2, 3, 4, 5]
    assert store.status("doomed").state == "queued"
    # the worker that takes its fed chunk records it cancelled (jobs/runner.py), settles it
    record_chunk(store, sink, "doomed", 0, ChunkSummary(rows=0, errors=0,
                                                        status=ChunkStatus.CANCELLED))
    feeder.settle("doomed", 0)
    assert store.status("doomed").state == "cancelled"
    for _ in range(6):
        claimed = feeder.claim(QUEUE)
        assert all(job == "other" for job, _ in claimed)
        for job, chunk in claimed:
            feeder.settle(job, chunk)
    assert not client.exists(keys.feed_job("doomed"))


def test_a_claim_its_feeder_never_sent_is_resent_after_the_grace(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    store, sink = RedisJobStore(client), ParquetSink(str(tmp_path / "results"))
    queued_job(store, Feeder(client), "job-1", 4)
    lost = Feeder(client, depth=3).claim(QUEUE)  # its feeder dies before sending
    assert lost == [("job-1", 0), ("job-1", 1), ("job-1", 2)]
    sent: list[tuple[str, int]] = []
    feeder = Feeder(client, depth=3, grace=5)
    assert feeder.tick(lambda q, j, c: sent.append((j, c)), store, sink)["resent"] == 0
    feeder.tick(lambda q, j, c: sent.append((j, c)), store, sink, now=time.time() + 6)
    assert sent == lost
    assert client.zcard(keys.feed_sending(QUEUE)) == 0


def test_a_chunk_recorded_by_a_worker_killed_before_settling_is_settled_by_the_pass(
        redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    store, sink = RedisJobStore(client), ParquetSink(str(tmp_path / "results"))
    feeder = Feeder(client, depth=1, grace=5)
    queued_job(store, feeder, "job-1", 3)
    assert claims(feeder) == ["job-1:0"]
    feeder.confirm(QUEUE, [("job-1", 0)])
    store.complete_chunk("job-1", 0, ChunkSummary(rows=0, errors=0))  # then it died
    assert claims(feeder) == []  # the queue looks full
    sent: list[tuple[str, int]] = []
    feeder.tick(lambda q, j, c: sent.append((j, c)), store, sink)
    assert sent == []  # within the grace its worker may still settle it
    done = feeder.tick(lambda q, j, c: sent.append((j, c)), store, sink, now=time.time() + 6)
    assert done["settled"] == 1 and sent == [("job-1", 1)]


def test_a_job_spec_records_its_priority_and_older_specs_read_as_priority_0():
    spec = JobSpec(op="generate", model="demo", priority=7)
    assert JobSpec.from_dict(spec.to_dict()).priority == 7
    assert "priority" not in JobSpec(op="generate", model="demo").to_dict()  # older workers
    assert JobSpec.from_dict({"op": "generate", "model": "demo"}).priority == 0
    for bad in (101, -101, 1.5, True, "5"):
        with pytest.raises(InvalidJobSpec, match="priority"):
            JobSpec(op="generate", model="demo", priority=bad)  # type: ignore[arg-type]


def test_a_suite_file_gives_its_runs_a_priority_and_names_the_line_of_a_bad_one(tmp_path):
    from jobs.suites import SuiteError, load_suites
    from worker.evals import run_specs

    (tmp_path / "data.jsonl").write_text('{"prompt": "p", "expected": "a"}\n')
    suite = '[suites.nightly]\nmodels = ["demo"]\ndataset = "data.jsonl"\nscorer = "exact"\n'
    (tmp_path / "ok.toml").write_text(suite + "priority = 10\n")
    loaded = load_suites(str(tmp_path / "ok.toml"))["nightly"]
    assert [s.priority for s in run_specs(loaded)] == [10]
    (tmp_path / "bad.toml").write_text(suite + 'priority = "high"\n')
    with pytest.raises(SuiteError, match=r"bad.toml, line 5: .*'high' must be a whole number"):
        load_suites(str(tmp_path / "bad.toml"))


HAMMER = """
import sys, time, redis
from jobs.feeder import Feeder
client = redis.Redis.from_url(sys.argv[1])
feeder = Feeder(client, depth=int(sys.argv[2]))
while not client.exists("test:go"):
    time.sleep(0.001)
idle = 0
while idle < 50:
    claimed = feeder.claim("inferq.model.demo", limit=3)
    idle = 0 if claimed else idle + 1
    for job, chunk in claimed:
        client.rpush("test:fed", f"{job}:{chunk}")
        feeder.settle(job, chunk)
    if not claimed:
        time.sleep(0.002)
"""


def test_two_feeders_hammering_one_queue_feed_every_chunk_exactly_once(redis_url):
    client = redis.Redis.from_url(redis_url)
    store, feeder = RedisJobStore(client), Feeder(client)
    sizes = {f"job-{i}": 40 + 7 * i for i in range(6)}
    for i, (job_id, size) in enumerate(sizes.items()):
        queued_job(store, feeder, job_id, size, priority=i % 3)
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, redis_url, str(depth)], cwd=ROOT)
             for depth in (3, 5)]
    client.set("test:go", 1)
    for proc in procs:
        assert proc.wait(timeout=90) == 0
    fed = [raw.decode() for raw in client.lrange("test:fed", 0, -1)]
    expected = sorted(f"{job}:{c}" for job, size in sizes.items() for c in range(size))
    assert sorted(fed) == expected  # none twice, none skipped
    assert waiting(client, QUEUE) == 0
    assert client.zcard(keys.feed_inflight(QUEUE)) == 0
    assert not client.keys(keys.feed_job("*"))


# -- real workers --------------------------------------------------------------------

def write_rows(path: Path, n: int, prefix: str, seconds: float) -> list[str]:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"{prefix}{i}",
                                "prompt": f"row {i} @@slow:{seconds}@@"}) + "\n")
    return [f"{prefix}{i}" for i in range(n)]


def submit(redis_url: str, results: Path, path: Path, *args: str) -> str:
    out = inferq(redis_url, results, "submit", "generate", str(path), "--model", "demo",
                 "--max-tokens", "2", "--chunk-size", "2", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def wait_ended(store: RedisJobStore, *job_ids: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not all(store.status(j).terminal for j in job_ids):
        assert time.monotonic() < deadline, [store.status(j).state for j in job_ids]
        time.sleep(0.2)


def run_order(results: Path, *job_ids: str) -> list[tuple[float, float, str, int]]:
    """(started, finished, job, chunk) of every chunk that ran, by start."""
    ran = []
    for job_id in job_ids:
        for part in (results / "metrics" / f"job={job_id}").glob("*.parquet"):
            row = pq.read_table(part).to_pylist()[0]
            ran.append((row["started_at"].timestamp(), row["finished_at"].timestamp(),
                        job_id, int(part.stem.split("-")[1])))
    return sorted(ran)


@pytest.mark.slow
def test_a_small_job_submitted_behind_a_big_one_runs_before_the_big_ones_remaining_chunks(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    big_ids = write_rows(tmp_path / "big.jsonl", 200, "b", 0.05)  # 100 chunks of ~0.1 s
    small_ids = write_rows(tmp_path / "small.jsonl", 6, "s", 0.05)  # 3 chunks
    store = RedisJobStore.from_url(redis_url)
    big = submit(redis_url, results, tmp_path / "big.jsonl")
    while store.status(big).chunks_done < 3:
        time.sleep(0.05)
    small = submit(redis_url, results, tmp_path / "small.jsonl")
    submitted = store.status(small).timestamps["queued_at"]
    wait_ended(store, big, small)
    check_job(redis_url, results, big, big_ids, max_attempts=1)
    check_job(redis_url, results, small, small_ids, max_attempts=1)
    order = run_order(results, big, small)
    small_end = max(end for _, end, job, _ in order if job == small)
    big_between = [c for start, end, job, c in order
                   if job == big and end > submitted and start < small_end]
    # One worker, depth 2: the chunk running and the one queued when the small job came,
    # then one big chunk per small chunk but the last (round-robin). First in, first
    # out would have run every remaining big chunk first.
    assert len(big_between) <= 2 + 2, big_between
    remaining = [c for start, _, job, c in order if job == big and start >= small_end]
    assert len(remaining) >= 20, f"the big job had {len(remaining)} chunks left"
    assert min(remaining) > max(big_between)


@pytest.mark.slow
def test_a_high_priority_job_submitted_after_two_normal_ones_is_fed_first(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("one", "two", "urgent")}
    ids = {name: write_rows(path, 6 if name == "urgent" else 12, name[0], 0.02)
           for name, path in paths.items()}
    jobs = {name: submit(redis_url, results, path, "--queue-anyway",
                         *(["--priority", "5"] if name == "urgent" else []))
            for name, path in paths.items()}  # no worker yet: depth 2 fed from "one"
    assert json.loads(RedisJobStore.from_url(redis_url).redis.hget(
        keys.job(jobs["urgent"]), "spec"))["priority"] == 5
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    store = RedisJobStore.from_url(redis_url)
    wait_ended(store, *jobs.values())
    for name, job_id in jobs.items():
        check_job(redis_url, results, job_id, ids[name], max_attempts=1)
    order = [job for _, _, job, _ in run_order(results, *jobs.values())]
    assert order[:2] == [jobs["one"]] * 2  # fed at submit, before "urgent" existed
    assert order[2:5] == [jobs["urgent"]] * 3
    assert order[5:9] == [jobs["one"], jobs["two"]] * 2  # then round-robin


DOOMED_FEEDER = """
import sys, time, redis
from jobs import keys
from jobs.feeder import Feeder
from jobs.lease import Lease
client = redis.Redis.from_url(sys.argv[1])
assert Lease(client, keys.FEED_LEASE, "doomed-feeder", 3).hold()
claimed = Feeder(client, depth=6).claim("inferq.model.demo")
print(len(claimed), flush=True)
time.sleep(3600)  # killed here: claimed, never sent
"""


@pytest.mark.slow
def test_a_feeder_killed_holding_the_lease_mid_step_leaves_every_chunk_run_exactly_once(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    ids = write_rows(tmp_path / "in.jsonl", 20, "r", 0.01)
    job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--queue-anyway")
    client = redis.Redis.from_url(redis_url)
    assert client.llen(QUEUE) == 2  # the first window, fed by submit
    doomed = subprocess.Popen([sys.executable, "-c", DOOMED_FEEDER, redis_url], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert doomed.stdout is not None and doomed.stdout.readline().strip() == "4"
    assert client.get(keys.FEED_LEASE) == b"doomed-feeder"
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    doomed.stdout.close()
    assert client.zcard(keys.feed_sending(QUEUE)) == 4 and client.llen(QUEUE) == 2

    start_worker("w-rescue", str(results), backends="fake", fake_models="demo",
                 feed_lease_seconds="2")
    store = RedisJobStore.from_url(redis_url)
    wait_ended(store, job_id)
    check_job(redis_url, results, job_id, ids, max_attempts=1)
    assert store.status(job_id).state == "completed"
    attempts = {int(k): int(v) for k, v in client.hgetall(keys.attempts(job_id)).items()}
    assert attempts == dict.fromkeys(range(10), 1)  # every chunk ran once
    assert client.get(keys.FEED_LEASE) == b"w-rescue"
    assert client.zcard(keys.feed_sending(QUEUE)) == 0
    assert client.zcard(keys.feed_inflight(QUEUE)) == 0
    assert "never sent: resent" in (tmp_path / "w-rescue.log").read_text()
