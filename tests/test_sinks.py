"""The part sink contract: one suite, run against ParquetSink (a path and a file://
URI) and RedisPartSink (real Redis); then what each sink adds on its own."""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from jobs import keys
from jobs.execute import ChunkContext, error_rows
from jobs.rows import InputRow
from jobs.schema import RESULTS_SCHEMA
from jobs.sinks import ParquetSink, PartSink, RedisPartSink, encode_table
from jobs.spec import JobSpec

WRITERS = 8
COMPLETED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

pytestmark = pytest.mark.timeout(60)


def make_sink(kind: str, location: str) -> PartSink:
    """A sink from plain strings, so a spawned process can build its own."""
    if kind == "redis":
        return RedisPartSink(redis.Redis.from_url(location))
    return ParquetSink(location)


@dataclass
class Sink:
    """A sink under test, and how another thread or process reaches the same parts."""

    sink: PartSink
    kind: str
    location: str
    handles: list[PartSink] = field(default_factory=list)

    def handle(self) -> PartSink:
        self.handles.append(make_sink(self.kind, self.location))
        return self.handles[-1]

    def close(self) -> None:
        for s in (self.sink, *self.handles):
            if isinstance(s, RedisPartSink):
                s.redis.close()


@pytest.fixture(params=["path", "file-uri", "redis"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    if request.param == "redis":
        kind, location = "redis", request.getfixturevalue("redis_url")
    elif request.param == "file-uri":
        kind, location = "parquet", (tmp_path / "results").as_uri()
    else:
        kind, location = "parquet", str(tmp_path / "results")
    under_test = Sink(make_sink(kind, location), kind, location)
    yield under_test
    under_test.close()


def part(job_id: str = "job-1", chunk: int = 0, rows: int = 3, *, worker: str = "w1",
         first: int = 0, noise: int = 0) -> bytes:
    """A results part of ``rows`` error rows, row indexes from ``first``; with ``noise``,
    that many random bytes (as hex) in each custom id, so the part does not compress."""
    spec = JobSpec(op="classify", model="demo", job_id=job_id)
    inputs = [InputRow(index=first + i, custom_id=f"id-{first + i}{secrets.token_hex(noise)}",
                       prompt="p") for i in range(rows)]
    ctx = ChunkContext(job_id=job_id, chunk=chunk, backend="fake", worker=worker)
    table = error_rows(spec, inputs, ctx, "chunk_failed", "x" * 40)
    at = table.schema.get_field_index("completed_at")  # fixed, so equal arguments = equal bytes
    table = table.set_column(at, table.schema.field(at),
                             pa.array([COMPLETED_AT] * rows, table.schema.field(at).type))
    return encode_table(table)


def table_of(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def put_in_process(kind: str, location: str, worker: str, rows: int, start: Any,
                   won: Any) -> None:
    """One writer process: build its own sink and a large part, wait, publish it."""
    data = part(rows=rows, worker=worker, noise=32)
    start.wait(30)
    won.put((worker, make_sink(kind, location).put_part("job-1", 0, "results", data)))


class TestPartSinkContract:
    """What every sink promises; each test runs once per sink."""

    def test_put_part_publishes_once_and_keeps_the_first_bytes(self, sink):
        first, second = part(worker="w1"), part(worker="w2")
        assert sink.sink.put_part("job-1", 0, "results", first) is True
        assert sink.sink.put_part("job-1", 0, "results", second) is False
        assert sink.sink.read_part("job-1", 0) == first
        assert sink.handle().read_part("job-1", 0, "results") == first

    def test_parts_are_addressed_by_job_chunk_and_kind(self, sink):
        results, metrics = part(rows=2), b"metrics bytes are opaque to the sink"
        assert sink.sink.put_part("job-1", 3, "results", results)
        assert sink.sink.put_part("job-1", 3, "metrics", metrics)
        assert sink.sink.has_part("job-1", 3) and sink.sink.has_part("job-1", 3, "metrics")
        assert not sink.sink.has_part("job-1", 2)
        assert not sink.sink.has_part("job-2", 3)
        assert sink.sink.read_part("job-1", 3) == results
        assert sink.sink.read_part("job-1", 3, "metrics") == metrics
        assert sink.sink.put_part("job-2", 3, "results", part("job-2"))
        assert sink.sink.read_part("job-1", 3) == results

    def test_reading_a_part_that_was_never_published_raises_file_not_found(self, sink):
        sink.sink.put_part("job-1", 0, "results", part())
        with pytest.raises(FileNotFoundError):
            sink.sink.read_part("job-1", 1)
        with pytest.raises(FileNotFoundError):
            sink.sink.read_part("job-1", 0, "metrics")

    def test_an_unknown_part_kind_is_refused(self, sink):
        with pytest.raises(ValueError, match="kind='logs'"):
            sink.sink.put_part("job-1", 0, "logs", b"x")
        with pytest.raises(ValueError, match="kind='logs'"):
            sink.sink.has_part("job-1", 0, "logs")

    def test_documents_round_trip_and_a_missing_one_raises_file_not_found(self, sink):
        assert not sink.sink.has_document("job-1", "manifest.json")
        sink.sink.put_document("job-1", "manifest.json", {"state": "queued"})
        sink.sink.put_document("job-1", "manifest.json", {"state": "completed"})
        assert sink.sink.has_document("job-1", "manifest.json")
        assert sink.handle().read_document("job-1", "manifest.json") == {"state": "completed"}
        assert not sink.sink.has_document("job-2", "manifest.json")
        with pytest.raises(FileNotFoundError):
            sink.sink.read_document("job-1", "spec.json")

    def test_remove_temporaries_leaves_published_parts(self, sink):
        sink.sink.put_part("job-1", 0, "results", part())
        sink.sink.remove_temporaries("job-1")
        assert sink.sink.has_part("job-1", 0)

    def test_writers_racing_in_threads_publish_exactly_one_part(self, sink):
        payloads = [part(rows=50, worker=f"w{i}") for i in range(WRITERS)]
        handles = [sink.handle() for _ in range(WRITERS)]
        barrier = threading.Barrier(WRITERS)
        won: list[bool] = [False] * WRITERS

        def write(i: int) -> None:
            barrier.wait(10)
            won[i] = handles[i].put_part("job-1", 0, "results", payloads[i])

        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert won.count(True) == 1
        assert sink.sink.read_part("job-1", 0) == payloads[won.index(True)]
        assert_no_temporary_files(sink)

    def test_writers_racing_in_processes_publish_one_part_never_visible_half_written(
            self, sink):
        rows = 20_000  # about 1 MB, incompressible: a reader could catch a half-written one
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        start, won = ctx.Event(), ctx.SimpleQueue()
        writers = [ctx.Process(target=put_in_process, args=(
            sink.kind, sink.location, f"w{i}", rows, start, won)) for i in range(WRITERS)]
        for w in writers:
            w.start()
        start.set()
        reads = 0
        while any(w.is_alive() for w in writers):
            if sink.sink.has_part("job-1", 0):
                assert table_of(sink.sink.read_part("job-1", 0)).num_rows == rows
                reads += 1
        for w in writers:
            w.join(30)
            assert w.exitcode == 0
        outcomes = dict(won.get() for _ in writers)
        assert sum(outcomes.values()) == 1
        winner = next(name for name, published in outcomes.items() if published)
        table = table_of(sink.sink.read_part("job-1", 0))
        assert table.num_rows == rows and table.schema == RESULTS_SCHEMA
        assert set(table.column("worker").to_pylist()) == {winner}
        assert_no_temporary_files(sink)


def assert_no_temporary_files(sink: Sink) -> None:
    if isinstance(sink.sink, ParquetSink):
        root = Path(sink.sink.root)
        assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [
            "part-000000.parquet"]


# -- ParquetSink -----------------------------------------------------------------------


@pytest.fixture
def parquet(tmp_path: Path) -> ParquetSink:
    return ParquetSink(str(tmp_path / "results"))


def test_parquet_sink_lays_parts_out_hive_partitioned_by_job(parquet, tmp_path):
    parquet.put_part("job-1", 12, "results", part())
    parquet.put_part("job-1", 12, "metrics", b"m")
    assert (tmp_path / "results/results/job=job-1/part-000012.parquet").read_bytes() == part()
    assert (tmp_path / "results/metrics/job=job-1/part-000012.parquet").read_bytes() == b"m"
    assert parquet.dataset_glob() == f"{tmp_path}/results/results/job=*/*.parquet"


def test_part_chunks_lists_published_parts_in_order_and_ignores_temporary_files(parquet):
    for chunk in (10, 2, 0):
        parquet.put_part("job-1", chunk, "results", part(chunk=chunk))
    parquet.put_part("job-1", 5, "metrics", b"m")
    parquet.put_part("job-2", 1, "results", part("job-2"))
    directory = Path(parquet.path("job-1", 0)).parent
    (directory / ".part-000007.parquet.0123abcd.tmp").write_bytes(b"half a part")
    assert parquet.part_chunks("job-1") == [0, 2, 10]
    assert parquet.part_chunks("job-1", "metrics") == [5]
    assert parquet.part_chunks("job-3") == []


def test_a_writer_whose_temporary_a_finalizer_removed_after_publishing_reports_its_win(
        parquet, monkeypatch):
    # the interleaving CI caught: a sweeper links its part, another records that chunk
    # from the part, finalizes the job and removes temporaries before the first unlinks
    import jobs.sinks

    link = os.link

    def link_then_finalizer_sweeps(src, dst):
        link(src, dst)
        assert parquet.remove_temporaries("job-1") == 1

    monkeypatch.setattr(jobs.sinks.os, "link", link_then_finalizer_sweeps)
    assert parquet.put_part("job-1", 0, "results", part()) is True
    assert parquet.read_part("job-1", 0) == part()


def test_a_losing_writer_whose_temporary_a_finalizer_removed_reports_its_loss(
        parquet, monkeypatch):
    import jobs.sinks

    parquet.put_part("job-1", 0, "results", part(worker="first"))
    link = os.link

    def finalizer_sweeps_then_link(src, dst):
        parquet.remove_temporaries("job-1")
        link(src, dst)

    monkeypatch.setattr(jobs.sinks.os, "link", finalizer_sweeps_then_link)
    assert parquet.put_part("job-1", 0, "results", part(worker="late")) is False
    assert parquet.read_part("job-1", 0) == part(worker="first")


def test_a_temporary_removed_while_the_finalizer_sweeps_is_not_an_error(parquet, monkeypatch):
    directory = Path(parquet.path("job-1", 0)).parent
    directory.mkdir(parents=True)
    temporary = directory / ".part-000003.parquet.0123abcd.tmp"
    temporary.write_bytes(b"a writer's")
    fs = parquet.fs

    class WriterUnlinksFirst:  # the filesystem, with the writer's unlink just before ours
        def __getattr__(self, name):
            return getattr(fs, name)

        def delete_file(self, path):
            temporary.unlink()  # its writer, still alive, finished with it a moment earlier
            fs.delete_file(path)

    monkeypatch.setattr(parquet, "fs", WriterUnlinksFirst())
    assert parquet.remove_temporaries("job-1") == 0


def test_documents_round_trip_and_a_second_put_replaces_the_first(parquet, tmp_path):
    parquet.put_document("job-1", "spec.json", {"rows": 3, "model": "démo"})
    assert parquet.read_document("job-1", "spec.json") == {"rows": 3, "model": "démo"}
    parquet.put_document("job-1", "spec.json", {"rows": 4})
    assert parquet.read_document("job-1", "spec.json") == {"rows": 4}
    assert [p.name for p in (tmp_path / "results/jobs/job-1").iterdir()] == ["spec.json"]
    assert json.loads((tmp_path / "results/jobs/job-1/spec.json").read_text()) == {"rows": 4}


def test_read_results_holds_every_part_in_row_order(parquet):
    parquet.put_part("job-1", 2, "results", part(chunk=2, rows=4, first=8))
    parquet.put_part("job-1", 0, "results", part(chunk=0, rows=4, first=0))
    parquet.put_part("job-1", 1, "results", part(chunk=1, rows=4, first=4))
    parquet.put_part("job-2", 0, "results", part("job-2", rows=9))
    table = parquet.read_results("job-1")
    assert table.schema == RESULTS_SCHEMA
    assert table.column("row_index").to_pylist() == list(range(12))
    assert table.column("custom_id").to_pylist() == [f"id-{i}" for i in range(12)]
    assert set(table.column("job_id").to_pylist()) == {"job-1"}


def test_read_results_of_a_job_without_parts_is_an_empty_table_of_the_schema(parquet):
    table = parquet.read_results("job-1")
    assert table.num_rows == 0 and table.schema == RESULTS_SCHEMA


def test_a_file_uri_root_and_a_path_root_see_the_same_parts(tmp_path):
    by_uri = ParquetSink((tmp_path / "results").as_uri())
    by_path = ParquetSink(str(tmp_path / "results"))
    assert by_uri.put_part("job-1", 0, "results", part(rows=2))
    by_uri.put_document("job-1", "manifest.json", {"state": "completed"})
    assert by_path.read_part("job-1", 0) == part(rows=2)
    assert by_path.read_document("job-1", "manifest.json") == {"state": "completed"}
    assert by_path.put_part("job-1", 0, "results", b"late") is False
    assert by_uri.part_chunks("job-1") == [0]
    assert by_uri.read_results("job-1").column("row_index").to_pylist() == [0, 1]


# -- RedisPartSink ---------------------------------------------------------------------


@pytest.fixture
def redis_sink(redis_url: str) -> Iterator[RedisPartSink]:
    client = redis.Redis.from_url(redis_url)
    yield RedisPartSink(client)
    client.close()


def test_collect_moves_every_part_to_parquet_and_deletes_it_from_redis(redis_sink, parquet):
    for chunk in (0, 2):
        redis_sink.put_part("job-1", chunk, "results", part(chunk=chunk, first=3 * chunk))
        redis_sink.put_part("job-1", chunk, "metrics", f"m{chunk}".encode())
    redis_sink.put_part("job-2", 0, "results", part("job-2"))
    assert redis_sink.collect("job-1", 3, parquet) == 2
    assert parquet.part_chunks("job-1") == [0, 2]
    assert parquet.read_part("job-1", 2) == part(chunk=2, first=6)
    assert parquet.read_part("job-1", 0, "metrics") == b"m0"
    assert {k.decode() for k in redis_sink.redis.keys("*")} == {keys.part("job-2", "results", 0)}
    assert not redis_sink.has_part("job-1", 0)
    assert redis_sink.collect("job-1", 3, parquet) == 0
    assert parquet.part_chunks("job-1") == [0, 2]


def test_collect_keeps_the_part_already_on_disk_and_still_empties_redis(redis_sink, parquet):
    parquet.put_part("job-1", 0, "results", part(worker="first"))
    redis_sink.put_part("job-1", 0, "results", part(worker="second"))
    redis_sink.collect("job-1", 1, parquet)
    assert parquet.read_part("job-1", 0) == part(worker="first")
    assert redis_sink.redis.keys("*") == []


def test_collect_moves_the_documents_a_worker_wrote_and_deletes_them(redis_sink, parquet):
    redis_sink.put_document("job-1", "manifest.json", {"state": "completed"})
    redis_sink.collect("job-1", 0, parquet)
    assert parquet.read_document("job-1", "manifest.json") == {"state": "completed"}
    assert redis_sink.redis.keys("*") == []


def test_parts_collected_from_redis_read_back_as_one_dataset(redis_sink, parquet):
    for chunk in reversed(range(4)):
        redis_sink.put_part("job-1", chunk, "results",
                            part(chunk=chunk, rows=5 if chunk < 3 else 2, first=5 * chunk))
    redis_sink.collect("job-1", 4, parquet)
    assert parquet.read_results("job-1").column("row_index").to_pylist() == list(range(17))
