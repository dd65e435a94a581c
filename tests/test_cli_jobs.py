"""The job-facing commands do what they say: `inferq` run as a user runs it, against a
real redis-server and real `inferq worker` processes on the fake backend."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from jobs import keys
from jobs.redis_store import RedisJobStore

INFERQ = str(Path(sys.executable).parent / "inferq")
#: The tests' own settings only: nothing from the developer's environment.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
LABELS = "positive,negative"
BAD_ROWS = (3, 11, 19)  # empty prompts: error rows


def inferq(redis_url: str, results: Path, *args: str, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERQ, "--broker-url", redis_url, "--results", str(results), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=CLEAN_ENV | (env or {}))


def write_rows(path: Path, prompts: list[str], prefix: str = "c") -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(len(prompts))]
    with open(path, "w", encoding="utf-8") as f:
        for custom_id, prompt in zip(ids, prompts, strict=True):
            f.write(json.dumps({"custom_id": custom_id, "method": "POST",
                                "url": "/v1/completions", "body": {"prompt": prompt}}) + "\n")
    return ids


def parquet_rows(results: Path, job_id: str) -> pa.Table:
    parts = sorted((results / "results" / f"job={job_id}").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("row_index")


def part_chunks(results: Path, kind: str, job_id: str) -> list[int]:
    return sorted(int(p.name[5:11])
                  for p in (results / kind / f"job={job_id}").glob("part-*.parquet"))


def submitted(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- commands over two finished jobs, on a Redis and a worker of this module's own ---------


@dataclass(frozen=True)
class Finished:
    redis_url: str
    results: Path
    tmp: Path
    classify: str           #: 30 rows, BAD_ROWS empty, chunk size 8, labels
    generate: str           #: the same rows, generated, submitted after it
    ids: list[str]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from tests.processes import RedisServer, Worker

    base = tmp_path_factory.mktemp("finished")
    server = RedisServer(base / "redis")
    results = base / "results"
    worker = Worker(server.url, str(results), "w-fin", base, backends="fake", fake_models="demo")
    try:
        worker.start()
        prompts = [f"Review {i}: {'great' if i % 2 else 'awful'}." for i in range(30)]
        for i in BAD_ROWS:
            prompts[i] = ""
        ids = write_rows(base / "in.jsonl", prompts)
        jobs = [submitted(inferq(server.url, results, "submit", op, str(base / "in.jsonl"),
                                 "--model", "demo", "--chunk-size", "8", "--max-tokens", "4",
                                 *extra, "--wait"))
                for op, extra in (("classify", ("--labels", LABELS)), ("generate", ()))]
        yield Finished(server.url, results, base, jobs[0], jobs[1], ids)
    finally:
        worker.stop()
        server.stop()


@pytest.mark.slow
def test_status_json_reports_state_request_counts_speed_and_backend_metrics(finished):
    out = inferq(finished.redis_url, finished.results, "status", finished.classify, "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["job_id"] == finished.classify and status["state"] == "completed"
    assert status["request_counts"] == {"total": 30, "completed": 27, "failed": 3}
    assert (status["chunks"], status["chunks_done"]) == (4, 4)
    assert status["rows_per_sec"] > 0
    assert {"validating_at", "queued_at", "in_progress_at", "completed_at"} <= set(
        status["timestamps"])
    fake = status["metrics"]["fake"]
    assert set(status["metrics"]) == {"fake"}
    assert (fake["rows"], fake["errors"]) == (30, 3) and fake["prompt_tokens"] > 0


@pytest.mark.slow
def test_status_table_shows_state_counts_speed_and_a_row_per_backend(finished):
    out = inferq(finished.redis_url, finished.results, "status", finished.classify)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["job", finished.classify]
    assert lines[1].split() == ["state", "completed"]
    assert lines[2].split() == ["rows", "30/30", "done:", "27", "completed,", "3", "failed"]
    assert lines[3].split() == ["chunks", "4/4"]
    assert lines[4].startswith("tokens") and lines[4].endswith("tokens/s)")
    prompt_tokens = json.loads(inferq(finished.redis_url, finished.results, "status",
                                      finished.classify, "--json").stdout)["tokens"]["prompt"]
    assert lines[4].split()[1:4] == [f"{prompt_tokens:,}", "prompt,", "0"] and prompt_tokens
    assert lines[5].startswith("speed") and lines[5].endswith("rows/s")
    assert lines[6].split() == ["eta", "—", "(ended)"]
    header = lines.index("BACKEND  ROWS  ERRORS  PROMPT TOK  GEN TOK  PREFILL TOK/S  "
                         "DECODE TOK/S")
    assert [line.split()[:3] for line in lines[header + 1:]] == [["fake", "30", "3"]]


@pytest.mark.slow
def test_status_of_a_job_not_started_says_its_speed_and_eta_are_unknown(finished):
    job_id = submitted(inferq(finished.redis_url, finished.results, "submit", "classify",
                              str(finished.tmp / "in.jsonl"), "--model", "nobody-serves-it",
                              "--labels", LABELS, "--queue-anyway"))
    out = inferq(finished.redis_url, finished.results, "status", job_id)
    lines = out.stdout.splitlines()
    assert lines[1].split() == ["state", "queued"]
    assert lines[4].split() == ["tokens", "0", "prompt,", "0", "generated"]
    assert lines[5].split() == ["speed", "—"] and lines[6].split() == ["eta", "—"]
    status = json.loads(inferq(finished.redis_url, finished.results, "status", job_id,
                               "--json").stdout)
    assert status["eta_seconds"] is None and status["tokens_per_sec"] is None


def test_status_of_an_unknown_job_exits_2_naming_it(redis_url, tmp_path):
    out = inferq(redis_url, tmp_path, "status", "job-nobody")
    assert out.returncode == 2
    assert "'job-nobody'" in out.stderr and out.stdout == ""


@pytest.mark.slow
def test_jobs_lists_recent_jobs_newest_first(finished):
    out = inferq(finished.redis_url, finished.results, "jobs", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    ids = [j["job_id"] for j in listed]
    assert ids.index(finished.generate) < ids.index(finished.classify)
    created = [j["timestamps"]["validating_at"] for j in listed]
    assert created == sorted(created, reverse=True)
    assert listed[ids.index(finished.classify)]["request_counts"]["failed"] == 3

    table = inferq(finished.redis_url, finished.results, "jobs").stdout.splitlines()
    assert table[0].split() == ["JOB", "STATE", "ROWS", "DONE", "FAILED", "CREATED"]
    assert [line.split()[0] for line in table[1:]] == ids
    assert table[1 + ids.index(finished.classify)].split()[1:5] == ["completed", "30", "30",
                                                                    "3"]
    newest = inferq(finished.redis_url, finished.results, "jobs", "--limit", "1", "--json")
    assert [j["job_id"] for j in json.loads(newest.stdout)] == ids[:1]


@pytest.mark.slow
def test_results_head_prints_that_many_rows_in_row_order(finished):
    out = inferq(finished.redis_url, finished.results, "results", finished.classify,
                 "--head", "5")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ROW", "CUSTOM_ID", "LABEL/TEXT", "ERROR"]
    assert [line.split()[:2] for line in lines[1:-1]] == [
        [str(i), finished.ids[i]] for i in range(5)]
    assert lines[4].split()[2] == "empty_prompt"  # row 3 has no label, only its error
    assert lines[-1] == "(30 rows; --to FILE writes them all)"


@pytest.mark.slow
def test_results_to_jsonl_writes_every_row_of_the_parquet_in_row_order(finished):
    dest = finished.tmp / "all.jsonl"
    out = inferq(finished.redis_url, finished.results, "results", finished.classify,
                 "--to", str(dest))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"30 rows written to {dest}"
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    parquet = parquet_rows(finished.results, finished.classify)
    assert len(rows) == parquet.num_rows == 30
    assert [r["custom_id"] for r in rows] == parquet.column("custom_id").to_pylist() \
        == finished.ids
    assert [r["row_index"] for r in rows if r["error_code"]] == list(BAD_ROWS)
    assert all(r["label"] in ("positive", "negative") for r in rows if not r["error_code"])


@pytest.mark.slow
def test_results_to_csv_writes_every_row_with_label_probs_as_json_text(finished):
    dest = finished.tmp / "all.csv"
    out = inferq(finished.redis_url, finished.results, "results", finished.classify,
                 "--to", str(dest))
    assert out.returncode == 0, out.stderr
    with open(dest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["custom_id"] for r in rows] == finished.ids
    for row in rows:
        if row["error_code"]:
            assert row["label_probs"] == "" and row["label"] == ""
        else:
            probs = json.loads(row["label_probs"])
            assert set(probs) == {"positive", "negative"}
            assert abs(sum(probs.values()) - 1) < 1e-6
            assert max(probs, key=probs.get) == row["label"]


@pytest.mark.slow
def test_results_openai_writes_batch_output_lines_for_successful_rows_only(finished):
    dest = finished.tmp / "output.jsonl"
    out = inferq(finished.redis_url, finished.results, "results", finished.classify,
                 "--to", str(dest), "--openai")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"27 rows written to {dest}"
    lines = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [
        c for i, c in enumerate(finished.ids) if i not in BAD_ROWS]
    for line in lines:
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["model"] == "demo"
        assert body["choices"][0]["text"] in ("positive", "negative")
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 0

    generated = finished.tmp / "generated.jsonl"
    out = inferq(finished.redis_url, finished.results, "results", finished.generate,
                 "--to", str(generated), "--openai")
    assert out.returncode == 0, out.stderr
    choice = json.loads(generated.read_text().splitlines()[0])["response"]["body"]["choices"][0]
    assert len(choice["text"]) == 4 and choice["finish_reason"] == "length"


@pytest.mark.slow
def test_results_openai_errors_writes_the_error_file_lines_for_error_rows_only(finished):
    dest = finished.tmp / "errors.jsonl"
    out = inferq(finished.redis_url, finished.results, "results", finished.classify,
                 "--to", str(dest), "--openai", "--errors")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"3 rows written to {dest}"
    lines = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [finished.ids[i] for i in BAD_ROWS]
    for line in lines:
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["response"] is None
        assert line["error"] == {"code": "empty_prompt", "message": "prompt is empty"}


def test_results_openai_without_a_jsonl_file_is_refused(tmp_path):
    for args in ((), ("--to", str(tmp_path / "out.csv"))):
        out = inferq("redis://127.0.0.1:1/0", tmp_path, "results", "job-x", "--openai", *args)
        assert out.returncode == 2 and "--to FILE.jsonl" in out.stderr
    assert not (tmp_path / "out.csv").exists()


def test_results_of_an_unknown_job_exits_2_and_writes_nothing(redis_url, tmp_path):
    out = inferq(redis_url, tmp_path, "results", "job-nobody", "--to", str(tmp_path / "o.jsonl"))
    assert out.returncode == 2 and "'job-nobody'" in out.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_submit_wait_json_exits_0_with_one_json_document_when_the_job_completes(finished):
    path = finished.tmp / "small.jsonl"
    write_rows(path, [f"row {i}" for i in range(10)])
    out = inferq(finished.redis_url, finished.results, "submit", "classify", str(path),
                 "--model", "demo", "--chunk-size", "4", "--wait", "--json")
    assert out.returncode == 0, out.stderr
    final = json.loads(out.stdout)
    assert final["state"] == "completed"
    assert final["request_counts"] == {"total": 10, "completed": 10, "failed": 0}


@pytest.mark.slow
def test_tail_prints_the_result_rows_as_json_lines_and_exits_when_the_job_ends(finished):
    path = finished.tmp / "tail.jsonl"
    ids = write_rows(path, [f"row {i} @@slow:0.1@@" for i in range(16)], prefix="t")
    job_id = submitted(inferq(finished.redis_url, finished.results, "submit", "generate",
                              str(path), "--model", "demo", "--chunk-size", "4",
                              "--max-tokens", "3"))
    store = RedisJobStore.from_url(finished.redis_url)
    assert not store.status(job_id).terminal  # tail starts while the job runs
    started = time.monotonic()
    out = inferq(finished.redis_url, finished.results, "tail", job_id, "--timeout", "30")
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert elapsed < 20  # it ended with the job, not at --timeout
    assert store.status(job_id).state == "completed"
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["custom_id"] for r in rows] == ids
    assert {r["job_id"] for r in rows} == {job_id}
    assert all(len(r["text"]) == 3 and r["error_code"] is None for r in rows)

    again = inferq(finished.redis_url, finished.results, "tail", job_id, "--timeout", "30")
    assert again.returncode == 0 and again.stdout == out.stdout  # an ended job: replay, exit


def test_tail_of_an_unknown_job_exits_2_naming_it(redis_url, tmp_path):
    out = inferq(redis_url, tmp_path, "tail", "job-nobody", "--timeout", "5")
    assert out.returncode == 2 and "'job-nobody'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_cancel_of_an_ended_job_changes_nothing(finished):
    out = inferq(finished.redis_url, finished.results, "cancel", finished.classify)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [finished.classify, "completed"]
    client = redis.Redis.from_url(finished.redis_url)
    assert not client.exists(keys.cancel(finished.classify))
    assert RedisJobStore(client).status(finished.classify).state == "completed"


def test_cancel_of_an_unknown_job_exits_2_and_leaves_no_key(redis_url, tmp_path):
    out = inferq(redis_url, tmp_path, "cancel", "job-nobody")
    assert out.returncode == 2 and "'job-nobody'" in out.stderr
    assert redis.Redis.from_url(redis_url).keys("*") == []


# -- lifecycle: cancel, failure ------------------------------------------------------------


@pytest.mark.slow
def test_cancel_mid_job_ends_cancelled_with_counts_equal_to_the_parts_on_disk(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = tmp_path / "slow.jsonl"
    ids = write_rows(path, [f"row {i} @@slow:0.2@@" for i in range(60)], prefix="s")
    job_id = submitted(inferq(redis_url, results, "submit", "classify", str(path), "--model",
                              "demo", "--chunk-size", "3"))
    store = RedisJobStore.from_url(redis_url)
    wait_for(lambda: store.status(job_id).chunks_done >= 2, what="two chunks")
    out = inferq(redis_url, results, "cancel", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [job_id, "cancelling"]
    wait_for(lambda: store.status(job_id).terminal, what="the job to end")

    status = store.status(job_id)
    assert status.state == "cancelled" and "cancelling_at" in status.timestamps
    assert status.chunks_done == status.chunks == 20  # every chunk recorded, once
    done = store.done_chunks(job_id)
    ran = sorted(c for c, s in done.items() if s.status == "ok")
    cancelled = sorted(c for c, s in done.items() if s.status == "cancelled")
    assert len(ran) >= 2 and cancelled and sorted(ran + cancelled) == list(range(20))
    assert part_chunks(results, "results", job_id) == ran  # no part for a cancelled chunk
    assert part_chunks(results, "metrics", job_id) == ran
    on_disk = parquet_rows(results, job_id)
    assert (status.completed, status.failed) == (on_disk.num_rows, 0)
    assert on_disk.column("custom_id").to_pylist() == [ids[3 * c + k] for c in ran
                                                       for k in range(3)]
    manifest = json.loads((results / "jobs" / job_id / "manifest.json").read_text())
    assert manifest["state"] == "cancelled"
    assert (manifest["chunks"]["parts"], manifest["chunks"]["cancelled"]) == (ran, cancelled)
    assert manifest["request_counts"]["completed"] == on_disk.num_rows

    dest = tmp_path / "partial.jsonl"
    out = inferq(redis_url, results, "results", job_id, "--to", str(dest))
    assert out.returncode == 0, out.stderr
    exported = [json.loads(line)["custom_id"] for line in dest.read_text().splitlines()]
    assert exported == on_disk.column("custom_id").to_pylist()
    assert redis.Redis.from_url(redis_url).llen("inferq.model.demo") == 0


@pytest.mark.slow
def test_cancel_stops_a_running_chunk_at_its_next_batch_and_leaves_no_part(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = tmp_path / "one-chunk.jsonl"
    write_rows(path, [f"row {i} @@slow:0.02@@" for i in range(200)])  # 4 batches, 5 s
    job_id = submitted(inferq(redis_url, results, "submit", "classify", str(path), "--model",
                              "demo", "--chunk-size", "200"))
    store = RedisJobStore.from_url(redis_url)
    wait_for(lambda: store.status(job_id).state == "in_progress", what="the chunk to start")
    assert submitted(inferq(redis_url, results, "cancel", job_id)) == job_id
    wait_for(lambda: store.status(job_id).terminal, what="the job to end")
    status = store.status(job_id)
    assert (status.state, status.completed, status.failed) == ("cancelled", 0, 0)
    assert store.done_chunks(job_id)[0].status == "cancelled"
    assert part_chunks(results, "results", job_id) == []
    assert part_chunks(results, "metrics", job_id) == []
    out = inferq(redis_url, results, "results", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "(0 rows; --to FILE writes them all)"


@pytest.mark.slow
def test_a_model_that_fails_to_load_fails_the_job_and_the_worker_serves_on(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    worker = start_worker("w1", str(results), backends="fake", fake_models="fail-load,demo")
    path = tmp_path / "in.jsonl"
    ids = write_rows(path, [f"row {i}" for i in range(20)])
    out = inferq(redis_url, results, "submit", "classify", str(path), "--model", "fail-load",
                 "--chunk-size", "5", "--wait")
    assert out.returncode == 1, out.stderr
    job_id = out.stdout.split()[0]
    status = json.loads(inferq(redis_url, results, "status", job_id, "--json").stdout)
    assert status["state"] == "failed"
    assert status["request_counts"] == {"total": 20, "completed": 0, "failed": 20}
    assert "this fake model refuses to load" in status["error"]
    rows = parquet_rows(results, job_id).to_pylist()
    assert [r["custom_id"] for r in rows] == ids
    assert {r["error_code"] for r in rows} == {"chunk_failed"}
    assert all("this fake model refuses to load" in r["error_message"] for r in rows)

    assert worker.process is not None and worker.process.poll() is None
    again = inferq(redis_url, results, "submit", "classify", str(path), "--model", "demo",
                   "--wait")
    assert again.returncode == 0, again.stderr
    assert RedisJobStore.from_url(redis_url).status(again.stdout.split()[0]).completed == 20


# -- workers ------------------------------------------------------------------------------


@pytest.mark.slow
def test_workers_shows_live_workers_and_drops_them_once_they_stop(redis_url, tmp_path,
                                                                   start_worker):
    results = tmp_path / "results"
    polite = start_worker("w-polite", str(results), backends="fake", fake_models="demo,other")
    killed = start_worker("w-killed", str(results), backends="fake", fake_models="demo")
    out = inferq(redis_url, results, "workers", "--json")
    assert out.returncode == 0, out.stderr
    found = {w["name"]: w for w in json.loads(out.stdout)}
    assert set(found) == {"w-polite", "w-killed"}
    assert found["w-polite"]["backends"] == ["fake"]
    assert found["w-polite"]["models"] == {"demo": ["fake"], "other": ["fake"]}
    assert found["w-polite"]["queues"] == ["inferq.model.demo", "inferq.fake.demo",
                                           "inferq.model.other", "inferq.fake.other"]
    table = inferq(redis_url, results, "workers").stdout.splitlines()
    assert table[0].split() == ["WORKER", "BACKENDS", "MODELS", "CURRENT", "CHUNKS", "ROWS",
                                "SEEN"]
    assert sorted(line.split()[:3] for line in table[1:]) == [
        ["w-killed", "fake", "demo"], ["w-polite", "fake", "demo,other"]]

    polite.stop()  # a graceful stop withdraws the advertisement at once
    killed.kill()  # a killed worker's advertisement expires with its heartbeat
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: not client.exists(keys.worker("w-killed")), timeout=10,
             what="the killed worker's advertisement to expire")
    assert json.loads(inferq(redis_url, results, "workers", "--json").stdout) == []
    assert len(inferq(redis_url, results, "workers").stdout.splitlines()) == 1


# -- submission, configuration, dry run (no worker) -----------------------------------------


@pytest.mark.parametrize(("args", "named"), [
    (("generate", "--chunk-size", "0"), "chunk_size"),
    (("generate", "--temperature", "-1"), "temperature"),
    (("generate", "--top-p", "2"), "top_p"),
    (("generate", "--labels", LABELS), "labels"),
    (("classify", "--deadline", "0"), "--deadline"),
    (("classify", "--job-id", "../escape"), "job_id"),
])
def test_submit_with_an_invalid_spec_exits_2_naming_the_field_and_queues_nothing(
        args, named, redis_url, tmp_path):
    path = tmp_path / "in.jsonl"
    write_rows(path, ["a", "b"])
    op, *options = args
    out = inferq(redis_url, tmp_path / "results", "submit", op, str(path), "--model", "demo",
                 "--queue-anyway", *options)
    assert out.returncode == 2
    assert named in out.stderr
    assert redis.Redis.from_url(redis_url).keys("*") == []  # no job, no queue
    assert not (tmp_path / "results").exists()


def test_a_config_file_sets_the_broker_and_the_results_location(redis_url, tmp_path):
    config = tmp_path / "inferq.toml"
    config.write_text(f'broker_url = "{redis_url}"\nresults = "{tmp_path / "from-config"}"\n')
    path = tmp_path / "in.jsonl"
    write_rows(path, ["a", "b", "c"])
    out = subprocess.run([INFERQ, "--config", str(config), "submit", "classify", str(path),
                          "--model", "demo", "--queue-anyway"], capture_output=True, text=True,
                         timeout=60, env=CLEAN_ENV)
    job_id = submitted(out)
    assert RedisJobStore.from_url(redis_url).status(job_id).total == 3
    assert (tmp_path / "from-config" / "jobs" / job_id / "spec.json").exists()
    listed = subprocess.run([INFERQ, "jobs", "--json"], capture_output=True, text=True,
                            timeout=60, env=CLEAN_ENV | {"INFERQ_CONFIG": str(config)})
    assert [j["job_id"] for j in json.loads(listed.stdout)] == [job_id]


def test_a_config_file_with_an_unknown_setting_exits_2_naming_it(tmp_path):
    config = tmp_path / "inferq.toml"
    config.write_text('broker_url = "redis://127.0.0.1:1/0"\nbroker = "typo"\n')
    out = subprocess.run([INFERQ, "--config", str(config), "jobs"], capture_output=True,
                         text=True, timeout=60, env=CLEAN_ENV)
    assert out.returncode == 2
    assert "unknown setting 'broker'" in out.stderr and str(config) in out.stderr


def test_worker_dry_run_prints_its_name_backends_models_and_queues(tmp_path):
    out = subprocess.run([INFERQ, "worker", "--dry-run"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path,
                         env=CLEAN_ENV | {"INFERQ_BACKENDS": "fake", "INFERQ_WORKER_NAME": "dry",
                                          "INFERQ_FAKE_MODELS": "demo,other",
                                          "INFERQ_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "name": "dry", "backends": ["fake"],
        "models": {"demo": ["fake"], "other": ["fake"]},
        "queues": ["inferq.model.demo", "inferq.fake.demo", "inferq.model.other",
                   "inferq.fake.other"]}


def test_worker_dry_run_without_servable_models_exits_2_saying_how_to_add_them(tmp_path):
    out = subprocess.run([INFERQ, "worker", "--dry-run"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path,
                         env=CLEAN_ENV | {"INFERQ_BACKENDS": "fake",
                                          "INFERQ_MODEL_ROOTS": str(tmp_path)})
    assert out.returncode == 2 and out.stdout == ""
    assert "no servable models" in out.stderr
    assert "INFERQ_MODEL_ROOTS" in out.stderr and "INFERQ_CATALOG" in out.stderr
