"""The job store contract: one suite, run against MemoryJobStore and RedisJobStore.

The Redis store runs on the private redis-server of the session (flushed per
test); concurrent callers each get their own client, as separate workers do.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from inference import GenerateOptions, Message
from jobs import keys
from jobs.errors import JobNotFound
from jobs.redis_store import STREAM_MAXLEN, RedisJobStore, stream_rows
from jobs.rows import InputRow
from jobs.spec import JobSpec
from jobs.store import ChunkSummary, JobStore, MemoryJobStore

THREADS = 8
CREATED = time.time()

pytestmark = pytest.mark.timeout(60)

#: The key patterns that jobs/keys.py's docstring documents, e.g. inferq:job:<id>:done.
DOCUMENTED = [re.compile("^" + re.sub(r"<[a-z]+>", "[^:]+", line.split()[0]) + "$")
              for line in (keys.__doc__ or "").splitlines()
              if line.strip().startswith(keys.PREFIX + ":")]


def undocumented_keys(client: redis.Redis) -> list[str]:
    """The ``inferq:*`` keys in Redis that no line of jobs/keys.py documents."""
    return sorted(k.decode() for k in client.keys(f"{keys.PREFIX}:*")
                  if not any(p.match(k.decode()) for p in DOCUMENTED))


@dataclass
class Backend:
    """A store under test, and a way to get another handle on the same state."""

    store: JobStore
    handle: Callable[[], JobStore]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryJobStore()
        yield Backend(memory, lambda: memory)
        return
    url = request.getfixturevalue("redis_url")
    clients: list[redis.Redis] = []

    def handle() -> JobStore:
        clients.append(redis.Redis.from_url(url))
        return RedisJobStore(clients[-1])

    yield Backend(handle(), handle)
    for client in clients:
        client.close()


def make_spec(job_id: str = "job-1", created_at: float = CREATED) -> JobSpec:
    return JobSpec(op="classify", model="demo", job_id=job_id, created_at=created_at,
                   options=GenerateOptions(labels=("positive", "negative")))


def summary(rows: int = 10, errors: int = 0, backend: str = "llama_cpp", **kwargs: Any) \
        -> ChunkSummary:
    return ChunkSummary(rows=rows, errors=errors, backend=backend, **{"worker": "w1"} | kwargs)


def in_threads(n: int, target: Callable[[int], Any]) -> list[Any]:
    """``target(i)`` for i in range(n), all released at once; their results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = target(i)
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    if errors:
        raise errors[0]
    return results


class TestJobStoreContract:
    """What every JobStore promises; each test runs once per implementation."""

    def test_creating_a_job_id_twice_keeps_the_first_job_and_returns_false(self, backend):
        store = backend.store
        assert store.create_job(make_spec(), total=30, chunks=3) is True
        assert store.create_job(make_spec(), total=99, chunks=9) is False
        status = store.status("job-1")
        assert (status.state, status.total, status.chunks) == ("validating", 30, 3)
        assert (status.completed, status.failed, status.chunks_done) == (0, 0, 0)
        assert set(status.timestamps) == {"validating_at"}
        assert status.timestamps["validating_at"] == pytest.approx(time.time(), abs=5)
        assert store.get_spec("job-1") == make_spec()

    def test_set_counts_replaces_total_and_chunks(self, backend):
        backend.store.create_job(make_spec(), total=0, chunks=0)
        backend.store.set_counts("job-1", total=1000, chunks=4)
        status = backend.store.status("job-1")
        assert (status.total, status.chunks) == (1000, 4)

    def test_chunk_inputs_round_trip_prompts_messages_error_rows_and_unicode(self, backend):
        rows = [
            InputRow(index=0, custom_id="a", prompt="plain prompt"),
            InputRow(index=1, custom_id="b",
                     messages=(Message("system", "be brief"), Message("user", "hi"))),
            InputRow(index=2, custom_id="c", error_code="empty_prompt",
                     error_message="prompt is empty"),
            InputRow(index=3, custom_id="ünï-☃", prompt="日本語 😀 \u0000 \"quoted\"\n"),
        ]
        backend.store.create_job(make_spec(), total=5, chunks=2)
        backend.store.put_chunk_input("job-1", 0, rows)
        backend.store.put_chunk_input("job-1", 1, [InputRow(index=4, custom_id="e", prompt="")])
        assert backend.store.get_chunk_input("job-1", 0) == rows
        assert backend.store.get_chunk_input("job-1", 1) == [
            InputRow(index=4, custom_id="e", prompt="")]

    def test_set_state_stamps_the_state_time_and_keeps_the_error(self, backend):
        store = backend.store
        store.create_job(make_spec(), total=1, chunks=1)
        before = time.time()
        assert store.set_state("job-1", "queued") is True
        assert store.set_state("job-1", "failed", error="the model would not load") is True
        status = store.status("job-1")
        assert status.state == "failed" and status.terminal
        assert status.error == "the model would not load"
        assert set(status.timestamps) == {"validating_at", "queued_at", "failed_at"}
        assert before - 1 <= status.timestamps["queued_at"] <= status.timestamps["failed_at"] \
            <= time.time() + 1

    def test_set_state_with_only_from_moves_only_from_those_states(self, backend):
        store = backend.store
        store.create_job(make_spec(), total=1, chunks=1)
        store.set_state("job-1", "queued")
        assert store.set_state("job-1", "in_progress", only_from=("queued",)) is True
        assert store.set_state("job-1", "in_progress", only_from=("queued",)) is False
        assert store.set_state("job-1", "cancelling",
                               only_from=("validating", "queued")) is False
        status = store.status("job-1")
        assert status.state == "in_progress"
        assert "cancelling_at" not in status.timestamps

    def test_start_attempt_counts_deliveries_of_each_chunk(self, backend):
        backend.store.create_job(make_spec(), total=20, chunks=2)
        assert [backend.store.start_attempt("job-1", 0) for _ in range(3)] == [1, 2, 3]
        assert backend.store.start_attempt("job-1", 1) == 1

    def test_completing_a_chunk_twice_counts_it_once(self, backend):
        store = backend.store
        store.create_job(make_spec(), total=20, chunks=2)
        first = summary(rows=10, errors=2, prompt_tokens=100)
        assert store.complete_chunk("job-1", 0, first) == 1
        once = store.status("job-1")
        assert store.complete_chunk("job-1", 0, summary(rows=10, errors=5,
                                                        prompt_tokens=999)) is None
        again = store.status("job-1")
        assert (again.completed, again.failed, again.chunks_done) == (8, 2, 1)
        assert again.metrics == once.metrics
        assert again.metrics["llama_cpp"]["prompt_tokens"] == 100
        assert store.done_chunks("job-1") == {0: first}
        assert store.complete_chunk("job-1", 1, summary(rows=10)) == 2

    def test_begin_chunk_counts_the_delivery_and_moves_a_queued_job_to_in_progress(
            self, backend):
        store = backend.store
        store.create_job(make_spec(), total=20, chunks=2)
        store.set_state("job-1", "queued")
        first = store.begin_chunk("job-1", 0)
        assert (first.state, first.recorded, first.attempt, first.cancel_requested) == (
            "in_progress", False, 1, False)
        assert first.spec == make_spec()
        assert "in_progress_at" in store.status("job-1").timestamps
        assert store.begin_chunk("job-1", 0).attempt == 2
        assert store.begin_chunk("job-1", 1).attempt == 1
        store.complete_chunk("job-1", 0, summary(rows=10))
        again = store.begin_chunk("job-1", 0)  # a redelivery of a recorded chunk
        assert (again.recorded, again.attempt, again.spec) == (True, 0, None)
        assert store.start_attempt("job-1", 0) == 3  # the redelivery counted nothing

    def test_begin_chunk_of_a_cancelled_job_leaves_its_state_and_counts_nothing_once_ended(
            self, backend):
        store = backend.store
        store.create_job(make_spec(), total=20, chunks=2)
        store.set_state("job-1", "queued")
        store.request_cancel("job-1")
        start = store.begin_chunk("job-1", 0)
        assert (start.state, start.cancel_requested, start.attempt) == ("queued", True, 1)
        store.set_state("job-1", "cancelled")
        ended = store.begin_chunk("job-1", 1)
        assert (ended.terminal, ended.attempt, ended.spec) == (True, 0, None)
        assert store.started_chunks("job-1") == {0}
        with pytest.raises(JobNotFound):
            store.begin_chunk("nope", 0)

    def test_complete_chunk_counts_answers_done_and_the_jobs_chunks(self, backend):
        store = backend.store
        store.create_job(make_spec(), total=20, chunks=2)
        assert store.complete_chunk_counts("job-1", 1, summary(rows=10)) == (1, 2)
        assert store.complete_chunk_counts("job-1", 1, summary(rows=10)) is None
        assert store.complete_chunk_counts("job-1", 0, summary(rows=10)) == (2, 2)

    def test_concurrent_completions_of_one_chunk_record_it_exactly_once(self, backend):
        backend.store.create_job(make_spec(), total=20, chunks=2)
        handles = [backend.handle() for _ in range(THREADS)]
        results = in_threads(THREADS, lambda i: handles[i].complete_chunk(
            "job-1", 0, summary(rows=10, errors=1, worker=f"w{i}", prompt_tokens=7)))
        assert sorted(results, key=str) == [1] + [None] * (THREADS - 1)
        status = backend.store.status("job-1")
        assert (status.completed, status.failed, status.chunks_done) == (9, 1, 1)
        assert status.metrics["llama_cpp"]["prompt_tokens"] == 7
        assert status.metrics["llama_cpp"]["rows"] == 10
        winner = results.index(1)
        assert backend.store.done_chunks("job-1")[0].worker == f"w{winner}"

    def test_metric_totals_add_up_per_backend(self, backend):
        store = backend.store
        store.create_job(make_spec(), total=40, chunks=4)
        store.complete_chunk("job-1", 0, summary(rows=10, errors=1, prompt_tokens=100,
                                                 generated_tokens=10, prefill_seconds=0.5,
                                                 decode_seconds=1.25, total_seconds=2.0))
        store.complete_chunk("job-1", 1, summary(rows=10, prompt_tokens=50,
                                                 generated_tokens=5, prefill_seconds=0.25,
                                                 decode_seconds=0.5, total_seconds=1.0))
        store.complete_chunk("job-1", 2, summary(rows=10, errors=10, backend="mlx",
                                                 prompt_tokens=7, total_seconds=0.125))
        store.complete_chunk("job-1", 3, ChunkSummary(rows=0, errors=0, status="cancelled"))
        status = store.status("job-1")
        assert status.metrics == {
            "llama_cpp": {"rows": 20, "errors": 1, "prompt_tokens": 150,
                          "generated_tokens": 15, "prefill_seconds": 0.75,
                          "decode_seconds": 1.75, "total_seconds": 3.0},
            "mlx": {"rows": 10, "errors": 10, "prompt_tokens": 7, "generated_tokens": 0,
                    "prefill_seconds": 0.0, "decode_seconds": 0.0, "total_seconds": 0.125},
        }  # the cancelled chunk ran nothing and adds no backend row
        assert (status.completed, status.failed, status.chunks_done) == (19, 11, 4)
        assert status.done_rows == 30

    def test_done_chunks_returns_each_first_summary(self, backend):
        store = backend.store
        store.create_job(make_spec(), total=20, chunks=3)
        recorded = {0: summary(rows=10, reason=""),
                    2: ChunkSummary(rows=10, errors=10, status="failed", worker="w2",
                                    reason="chunk failed 3 times; giving up")}
        for chunk, s in recorded.items():
            store.complete_chunk("job-1", chunk, s)
        assert store.done_chunks("job-1") == recorded

    def test_exactly_one_caller_claims_finalize(self, backend):
        backend.store.create_job(make_spec(), total=1, chunks=1)
        backend.store.create_job(make_spec("job-2"), total=1, chunks=1)
        assert backend.store.claim_finalize("job-1") is True
        assert backend.store.claim_finalize("job-1") is False
        handles = [backend.handle() for _ in range(THREADS)]
        claims = in_threads(THREADS, lambda i: handles[i].claim_finalize("job-2"))
        assert sorted(claims) == [False] * (THREADS - 1) + [True]

    def test_cancel_is_off_until_requested_and_only_for_that_job(self, backend):
        backend.store.create_job(make_spec(), total=1, chunks=1)
        backend.store.create_job(make_spec("job-2"), total=1, chunks=1)
        assert backend.store.cancel_requested("job-1") is False
        backend.store.request_cancel("job-1")
        backend.store.request_cancel("job-1")
        assert backend.store.cancel_requested("job-1") is True
        assert backend.handle().cancel_requested("job-1") is True
        assert backend.store.cancel_requested("job-2") is False

    def test_drop_inputs_removes_every_chunk_input_and_keeps_the_job(self, backend):
        store = backend.store
        store.create_job(make_spec(), total=3, chunks=3)
        for chunk in range(3):
            store.put_chunk_input("job-1", chunk, [InputRow(index=chunk, custom_id=str(chunk),
                                                            prompt="p")])
        store.complete_chunk("job-1", 0, summary(rows=1))
        store.drop_inputs("job-1")
        for chunk in range(3):
            with pytest.raises(JobNotFound):
                store.get_chunk_input("job-1", chunk)
        assert store.status("job-1").chunks_done == 1
        assert store.get_spec("job-1") == make_spec()

    def test_list_jobs_is_newest_first_and_honours_the_limit(self, backend):
        now = time.time()
        for n, age in enumerate([30, 10, 20, 40]):
            backend.store.create_job(make_spec(f"job-{n}", created_at=now - age),
                                     total=n, chunks=1)
        assert [s.job_id for s in backend.store.list_jobs()] == [
            "job-1", "job-2", "job-0", "job-3"]
        assert [s.job_id for s in backend.store.list_jobs(2)] == ["job-1", "job-2"]
        assert backend.store.list_jobs(0) == []
        assert backend.store.list_jobs()[0].total == 1

    @pytest.mark.parametrize("call", [
        lambda s: s.status("nope"),
        lambda s: s.get_spec("nope"),
        lambda s: s.set_state("nope", "queued"),
        lambda s: s.set_counts("nope", total=1, chunks=1),
        lambda s: s.get_chunk_input("nope", 0),
        lambda s: s.get_chunk_input("job-1", 7),
        lambda s: s.complete_chunk("nope", 0, summary()),
    ], ids=["status", "get_spec", "set_state", "set_counts", "get_chunk_input",
            "get_chunk_input_of_unknown_chunk", "complete_chunk"])
    def test_unknown_job_ids_raise_job_not_found_and_create_nothing(self, backend, call):
        backend.store.create_job(make_spec(), total=1, chunks=1)
        with pytest.raises(JobNotFound):
            call(backend.store)
        with pytest.raises(JobNotFound):
            backend.store.status("nope")
        assert [s.job_id for s in backend.store.list_jobs()] == ["job-1"]


def test_redis_store_leaves_exactly_the_keys_that_jobs_keys_documents(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = RedisJobStore(client)
    store.create_job(make_spec(), total=4, chunks=2)
    for chunk in range(2):
        store.put_chunk_input("job-1", chunk, [InputRow(index=2 * chunk + i, custom_id=str(i),
                                                        prompt="p") for i in range(2)])
    assert {k.decode() for k in client.keys("*")} == {
        keys.JOBS, keys.job("job-1"), keys.chunk_input("job-1", 0),
        keys.chunk_input("job-1", 1)}
    for chunk in range(2):
        store.start_attempt("job-1", chunk)
        store.publish_rows("job-1", [{"custom_id": str(chunk), "label": "positive"}])
        store.complete_chunk("job-1", chunk, summary(rows=2))
    store.request_cancel("job-1")
    assert store.claim_finalize("job-1")
    store.drop_inputs("job-1")
    assert {k.decode() for k in client.keys("*")} == {
        keys.JOBS, keys.job("job-1"), keys.done("job-1"), keys.attempts("job-1"),
        keys.metrics("job-1"), keys.stream("job-1"), keys.cancel("job-1"),
        keys.finalize("job-1"), keys.TOTALS}
    types = {k: client.type(k).decode() for k in (
        keys.JOBS, keys.job("job-1"), keys.done("job-1"), keys.attempts("job-1"),
        keys.metrics("job-1"), keys.stream("job-1"), keys.cancel("job-1"),
        keys.finalize("job-1"), keys.TOTALS)}
    assert types == {keys.JOBS: "zset", keys.job("job-1"): "hash",
                     keys.done("job-1"): "hash", keys.attempts("job-1"): "hash",
                     keys.metrics("job-1"): "hash", keys.stream("job-1"): "stream",
                     keys.cancel("job-1"): "string", keys.finalize("job-1"): "string",
                     keys.TOTALS: "hash"}  # the deployment's counters, not the job's
    assert undocumented_keys(client) == []
    assert client.ttl(keys.finalize("job-1")) > 0
    assert all(client.ttl(k) == -1 for k in types if k != keys.finalize("job-1"))
    assert set(client.hkeys(keys.done("job-1"))) == {b"0", b"1"}
    assert client.xlen(keys.stream("job-1")) == 2
    client.close()


def test_a_chunks_rows_reach_the_live_stream_as_one_entry_of_json_lines(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = RedisJobStore(client)
    store.create_job(make_spec(), total=300, chunks=3)
    rows = [{"custom_id": f"r{i}", "label": "positive", "text": "two\nlines"}
            for i in range(100)]
    store.publish_rows("job-1", rows)
    store.publish_rows("job-1", [])  # a cancelled chunk's nothing adds no entry
    client.xadd(keys.stream("job-1"), {"row": json.dumps({"custom_id": "old"})})  # earlier
    entries = client.xrange(keys.stream("job-1"))
    assert len(entries) == 2
    assert [json.loads(r) for r in stream_rows(entries[0][1])] == rows
    assert [json.loads(r) for r in stream_rows(entries[1][1])] == [{"custom_id": "old"}]
    client.close()


def test_the_live_stream_keeps_about_stream_maxlen_rows_whatever_the_chunk_size(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = RedisJobStore(client)
    store.create_job(make_spec(), total=10**6, chunks=10**4)
    chunk = [{"custom_id": "x"}] * 1000
    for _ in range(40):  # 40,000 rows: four times the cap
        store.publish_rows("job-1", chunk)
    kept = sum(len(stream_rows(f)) for _, f in client.xrange(keys.stream("job-1")))
    assert STREAM_MAXLEN <= kept < 2 * STREAM_MAXLEN  # trimmed by whole nodes (approximate)
    client.close()
