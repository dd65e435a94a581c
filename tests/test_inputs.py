"""Chunk inputs, wherever they live (jobs/inputs.py): one contract run over Redis, a
local results root and S3 (a real moto server on loopback); the store reading each job's
inputs from the place its spec recorded; the setting that chooses the place."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis

from inference import Message
from jobs import keys, layout
from jobs.errors import InputLocationError, InvalidJobSpec, JobNotFound
from jobs.inputs import ChunkInputs, ParquetInputs, RedisInputs, rows_from_table, rows_to_table
from jobs.redis_store import RedisJobStore
from jobs.rows import InputRow
from jobs.spec import JobSpec
from worker.config import Settings

pytestmark = pytest.mark.timeout(60)

#: Every InputRow field set to a value other than its default in some row.
ROWS = [
    InputRow(index=0, custom_id="a", prompt="plain prompt", expected="positive"),
    InputRow(index=1, custom_id="b",
             messages=(Message("system", "be brief"), Message("user", "hi ☃")),
             options={"max_tokens": 7, "temperature": 0.5, "labels": ["yes", "no"],
                      "stop": ["\n"]}, model="demo"),
    InputRow(index=2, custom_id="c", error_code="empty_prompt",
             error_message="prompt is empty"),
    InputRow(index=3, custom_id="ünï-☃", prompt="日本語 😀 \u0000 \"quoted\"\n", model="other",
             expected="3"),
    InputRow(index=4, custom_id="e", prompt=""),
]


def test_the_round_trip_rows_set_every_input_row_field():
    """The round trips below cover every field: a field added to InputRow fails here
    until a row sets it (and so the Parquet columns carry it)."""
    for f in dataclasses.fields(InputRow):
        default = f.default if f.default is not dataclasses.MISSING else None
        assert any(getattr(r, f.name) != default for r in ROWS), f.name


@pytest.fixture(params=["redis", "local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkInputs]:
    if request.param == "redis":
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        yield RedisInputs(client)
        client.close()
    elif request.param == "local":
        yield ParquetInputs(str(tmp_path / "results"))
    else:
        yield ParquetInputs(request.getfixturevalue("s3_server").bucket("deploy/inferq"))


class TestChunkInputsContract:
    """What every place for chunk inputs promises."""

    def test_every_field_of_every_row_round_trips(self, place):
        place.put("job-1", 0, ROWS)
        place.put("job-1", 1, ROWS[:1])
        assert place.get("job-1", 0) == ROWS
        assert place.get("job-1", 1) == ROWS[:1]

    def test_storing_a_chunk_again_replaces_it_whole(self, place):
        place.put("job-1", 0, ROWS)
        place.put("job-1", 0, ROWS[2:3])
        assert place.get("job-1", 0) == ROWS[2:3]

    def test_a_chunk_never_stored_raises_job_not_found_naming_it(self, place):
        place.put("job-1", 0, ROWS)
        with pytest.raises(JobNotFound, match="job 'job-1' has no input for chunk 3 in"):
            place.get("job-1", 3)

    def test_drop_removes_every_chunk_of_the_job_and_no_other_job(self, place):
        for chunk in range(3):
            place.put("job-1", chunk, ROWS)
        place.put("job-2", 0, ROWS[:2])
        place.drop("job-1", 3)
        place.drop("job-1", 3)  # twice: nothing left is fine
        for chunk in range(3):
            with pytest.raises(JobNotFound):
                place.get("job-1", chunk)
        assert place.get("job-2", 0) == ROWS[:2]


def test_parquet_inputs_sit_under_the_layout_path_and_leave_no_temporary(tmp_path):
    ParquetInputs(str(tmp_path)).put("job-1", 2, ROWS)
    directory = tmp_path / layout.input_dir("job-1")
    assert sorted(p.name for p in directory.iterdir()) == ["part-000002.parquet"]
    table = pq.read_table(directory / "part-000002.parquet")
    assert table.column("custom_id").to_pylist() == [r.custom_id for r in ROWS]


def test_a_file_version_this_worker_does_not_know_gives_one_error_row_per_row():
    table = rows_to_table(ROWS)
    table = table.replace_schema_metadata({b"inferq.inputs.version": b"99"})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    rows = rows_from_table(pq.read_table(buffer))
    assert [(r.index, r.custom_id, r.error_code) for r in rows] == [
        (r.index, r.custom_id, "unsupported_payload") for r in ROWS]
    assert "version '99'" in (rows[0].error_message or "")


def spec(inputs: str, job_id: str = "job-1") -> JobSpec:
    return JobSpec(op="generate", model="demo", job_id=job_id, inputs=inputs)


def test_the_store_keeps_a_results_job_inputs_on_disk_and_none_in_redis(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    store = RedisJobStore(client, results_root=str(tmp_path))
    store.create_job(spec("results"), total=10, chunks=2)
    store.put_chunk_input("job-1", 0, ROWS)
    store.put_chunk_input("job-1", 1, ROWS[:1])
    assert client.keys(keys.chunk_input("job-1", "*")) == []
    assert (tmp_path / layout.chunk_input("job-1", 1)).is_file()
    # another process, with its results root mounted elsewhere, reads the same files
    other = RedisJobStore(redis.Redis.from_url(redis_url), results_root=str(tmp_path))
    assert other.get_chunk_input("job-1", 0) == ROWS
    assert other.get_spec("job-1").inputs == "results"
    store.drop_inputs("job-1")
    assert not (tmp_path / layout.input_dir("job-1")).exists()
    with pytest.raises(JobNotFound):
        other.get_chunk_input("job-1", 1)
    client.close()


def test_a_job_whose_spec_names_a_location_is_read_there_whatever_the_reader_settings(
        redis_url, tmp_path):
    elsewhere = str(tmp_path / "inputs-root")
    submitter = RedisJobStore(redis.Redis.from_url(redis_url), results_root=str(tmp_path / "a"))
    submitter.create_job(spec(elsewhere), total=5, chunks=1)
    submitter.put_chunk_input("job-1", 0, ROWS)
    worker = RedisJobStore(redis.Redis.from_url(redis_url))  # results through Redis
    assert worker.get_chunk_input("job-1", 0) == ROWS
    assert (Path(elsewhere) / layout.chunk_input("job-1", 0)).is_file()
    assert not (tmp_path / "a").exists()


def test_a_redis_job_keeps_todays_keys(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    store = RedisJobStore(client, results_root=str(tmp_path))
    store.create_job(spec(""), total=5, chunks=1)
    store.put_chunk_input("job-1", 0, ROWS)
    assert client.exists(keys.chunk_input("job-1", 0))
    assert "inputs" not in store.get_spec("job-1").to_dict()  # readable by older workers
    assert not (tmp_path / "inputs").exists()
    client.close()


def test_a_reader_without_a_results_root_says_which_setting_to_change(redis_url, tmp_path):
    RedisJobStore(redis.Redis.from_url(redis_url), results_root=str(tmp_path)).create_job(
        spec("results"), total=5, chunks=1)
    worker = RedisJobStore(redis.Redis.from_url(redis_url))
    with pytest.raises(InputLocationError, match="INFERQ_RESULTS=redis"):
        worker.get_chunk_input("job-1", 0)


@pytest.mark.parametrize(("settings", "location"), [
    ({}, "results"),
    ({"results": "shared"}, "results"),
    ({"results": "s3://r/p?region=x"}, "results"),
    ({"results": "redis"}, ""),
    ({"inputs": "redis"}, ""),
    ({"inputs": "results"}, "results"),
    ({"results": "redis", "inputs": "s3://b/p?endpoint_override=h:1&scheme=http"},
     "s3://b/p?endpoint_override=h:1&scheme=http"),
])
def test_the_inputs_setting_chooses_what_a_submitted_job_records(settings, location,
                                                                 tmp_path, monkeypatch):
    """By default "results": each process's own results root, where the job's parts go
    too, so a host path and a container's /results mount of one volume agree."""
    monkeypatch.chdir(tmp_path)
    assert Settings(**settings).inputs_location() == location.format(cwd=tmp_path)


def test_a_relative_inputs_path_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings(inputs="shared/in").inputs_location() == str(tmp_path / "shared" / "in")


def test_inputs_under_results_that_go_through_redis_are_refused():
    with pytest.raises(ValueError, match="inputs=results needs a results root"):
        Settings(results="redis", inputs="results")


@pytest.mark.parametrize("bad", ["s3://b/p?secret_key=hunter2", "s3://b/p?access_key=AK&x=1"])
def test_credentials_in_the_inputs_uri_are_refused_before_any_spec_records_them(bad):
    with pytest.raises(InputLocationError, match="environment"):
        Settings(inputs=bad).inputs_location()
    with pytest.raises(InvalidJobSpec, match="inputs"):
        spec(bad)


def test_a_spec_refuses_a_relative_inputs_path():
    with pytest.raises(InvalidJobSpec, match=r"inputs: .*absolute path"):
        spec("relative/dir")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_that_cannot_see_a_jobs_inputs_root_fails_the_job_saying_why(
        redis_url, start_worker, tmp_path):
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as f:
        for i in range(5):
            f.write(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i}"}) + "\n")
    elsewhere = tmp_path / "mounted-on-the-submitter-only"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")} | {
        "INFERQ_INPUTS": str(elsewhere)}
    out = subprocess.run([str(Path(sys.executable).parent / "inferq"), "--broker-url",
                          redis_url, "--results", str(tmp_path / "results"), "submit",
                          "generate", "in.jsonl", "--model", "demo", "--queue-anyway"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    elsewhere.rename(tmp_path / "unmounted")  # the worker's machine has no such mount
    start_worker("w1", str(tmp_path / "results"), backends="fake", fake_models="demo")
    store = RedisJobStore(redis.Redis.from_url(redis_url))
    deadline = time.monotonic() + 60
    while not store.status(job_id).terminal and time.monotonic() < deadline:
        time.sleep(0.2)
    status = store.status(job_id)
    assert status.state == "failed"
    assert "worker w1" in status.error and f"{elsewhere}, which does not exist" in status.error
    assert (tmp_path / "unmounted" / layout.input_dir(job_id)).is_dir()  # rows kept


def test_reconcile_after_redis_lost_a_job_reuses_its_inputs_off_redis_without_the_file(
        redis_url, tmp_path):
    from jobs.reconcile import reconcile_job
    from jobs.sinks import ParquetSink
    from jobs.submit import submit_job

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i}"}) + "\n"
                            for i in range(25)))
    client = redis.Redis.from_url(redis_url)
    store = RedisJobStore(client, results_root=str(tmp_path / "results"))
    sink = ParquetSink(str(tmp_path / "results"))
    job = JobSpec(op="generate", model="demo", chunk_size=10, inputs="results")
    submit_job(job, str(path), store, sink, lambda job_id, chunk: None, keep_path=False)
    client.flushall()  # Redis lost the job; spec.json names no input file (standard input)
    enqueued: list[int] = []
    report = reconcile_job(job.job_id, RedisJobStore(client, results_root=str(
        tmp_path / "results")), sink, lambda job_id, chunk: enqueued.append(chunk))
    assert report.recreated and report.requeued == [0, 1, 2]
    assert [r.custom_id for r in store.get_chunk_input(job.job_id, 2)] == [
        f"r{i}" for i in range(20, 25)]
    client.close()
