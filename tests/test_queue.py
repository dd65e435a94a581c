"""The queue runtime end to end: real redis-server, real `inferq worker` processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import redis

from jobs.feeder import waiting
from jobs.redis_store import RedisJobStore

INFERQ = str(Path(sys.executable).parent / "inferq")
LABELS = "positive,negative"


def inferq(redis_url: str, results: Path, *args: str, timeout: float = 180) -> \
        subprocess.CompletedProcess[str]:
    env_args = ["--broker-url", redis_url, "--results", str(results)]
    return subprocess.run([INFERQ, *env_args, *args], capture_output=True, text=True,
                          timeout=timeout)


def write_jsonl(path: Path, n: int, *, bad: bool = True) -> list[str]:
    """n OpenAI-batch request lines; with ``bad``, a few rows that must become error rows."""
    ids = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            custom_id = f"req-{i:05d}"
            prompt = f"Review {i}: {'great' if i % 2 else 'awful'} product. Sentiment:"
            if bad and i % 97 == 5:
                prompt = ""
            f.write(json.dumps({"custom_id": custom_id, "method": "POST",
                                "url": "/v1/completions", "body": {"prompt": prompt}}) + "\n")
            ids.append(custom_id)
    return ids


def results_of(results: Path, job_id: str) -> list[tuple]:
    return duckdb.sql(
        f"select custom_id, label, error_code, worker, backend from read_parquet("
        f"'{results}/results/job={job_id}/*.parquet') order by row_index").fetchall()


@pytest.fixture
def model_root(tmp_path, tiny_model):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_model.gguf_path, root / "tiny.gguf")
    shutil.copytree(tiny_model.hf_dir, root / "tiny")
    return root


def assert_job_matches_disk(redis_url: str, results: Path, job_id: str, ids: list[str]):
    """Parquet rows = input rows one to one; Redis counts and metrics agree with the Parquet."""
    rows = results_of(results, job_id)
    assert [r[0] for r in rows] == ids
    status = RedisJobStore.from_url(redis_url).status(job_id)
    errors = sum(r[2] is not None for r in rows)
    assert (status.state, status.total, status.completed, status.failed) == (
        "completed", len(ids), len(ids) - errors, errors)
    metrics = duckdb.sql(
        f"select count(*), sum(rows), sum(prompt_tokens) from read_parquet("
        f"'{results}/metrics/job={job_id}/*.parquet')").fetchall()[0]
    assert metrics[0] == status.chunks and metrics[1] == len(ids)
    backend_totals = next(iter(status.metrics.values()))
    assert backend_totals["prompt_tokens"] == metrics[2] > 0
    manifest = json.loads((results / "jobs" / job_id / "manifest.json").read_text())
    assert manifest["request_counts"] == {"total": len(ids), "completed": len(ids) - errors,
                                          "failed": errors}
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["llama_cpp", "mlx"])
def test_a_classify_job_runs_end_to_end_on_each_engine(backend, redis_url, tmp_path, model_root,
                                                       start_worker):
    if backend == "mlx":
        pytest.importorskip("mlx_lm")
    results = tmp_path / "results"
    start_worker("w-" + backend, str(results), model_roots=str(model_root), backends=backend)
    ids = write_jsonl(tmp_path / "in.jsonl", 300)
    out = inferq(redis_url, results, "submit", "classify", str(tmp_path / "in.jsonl"),
                 "--model", "tiny", "--labels", LABELS, "--chunk-size", "64", "--wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    rows = assert_job_matches_disk(redis_url, results, job_id, ids)
    assert {r[4] for r in rows} == {backend}
    assert {r[1] for r in rows if r[2] is None} <= {"positive", "negative"}
    assert [r[2] for r in rows if r[2]] == ["empty_prompt"] * 4


@pytest.mark.slow
def test_jobs_land_only_where_they_can_run(redis_url, tmp_path, model_root, start_worker):
    results = tmp_path / "results"
    start_worker("w-llama", str(results), model_roots=str(model_root), backends="llama_cpp",
                 fake_models="only-llama")
    start_worker("w-fake", str(results), backends="fake", fake_models="tiny,only-fake")
    ids = write_jsonl(tmp_path / "in.jsonl", 120, bad=False)
    path = str(tmp_path / "in.jsonl")

    def run(*args: str) -> str:
        out = inferq(redis_url, results, "submit", "classify", path, "--labels", LABELS,
                     "--chunk-size", "20", "--wait", *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[0]

    pinned = run("--model", "tiny", "--backend", "llama_cpp")
    assert {r[3] for r in results_of(results, pinned)} == {"w-llama"}
    pinned_fake = run("--model", "tiny", "--backend", "fake")
    assert {r[3] for r in results_of(results, pinned_fake)} == {"w-fake"}
    only_fake = run("--model", "only-fake")
    assert {r[3] for r in results_of(results, only_fake)} == {"w-fake"}
    unpinned = run("--model", "tiny")
    assert [r[0] for r in results_of(results, unpinned)] == ids
    assert {r[3] for r in results_of(results, unpinned)} <= {"w-llama", "w-fake"}

    refused = inferq(redis_url, results, "submit", "classify", path, "--model", "nobody-has-it")
    assert refused.returncode == 2
    assert "no live worker serves 'inferq.model.nobody-has-it'" in refused.stderr
    pinned_wrong = inferq(redis_url, results, "submit", "classify", path, "--model",
                          "only-fake", "--backend", "llama_cpp")
    assert pinned_wrong.returncode == 2
    client = redis.Redis.from_url(redis_url)
    assert client.llen("inferq.model.nobody-has-it") == 0
    queued = inferq(redis_url, results, "submit", "classify", path, "--model", "nobody-has-it",
                    "--queue-anyway", "--chunk-size", "20")
    assert queued.returncode == 0, queued.stderr
    # 120 rows / 20: the feeder's first window on the queue, the rest waiting to be fed
    assert client.llen("inferq.model.nobody-has-it") == 2
    assert waiting(client, "inferq.model.nobody-has-it") == 4


@pytest.mark.slow
def test_a_chunk_delivered_twice_leaves_one_part_and_one_count(redis_url, tmp_path,
                                                               start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    ids = write_jsonl(tmp_path / "in.jsonl", 100, bad=False)
    out = inferq(redis_url, results, "submit", "classify", str(tmp_path / "in.jsonl"),
                 "--model", "demo", "--labels", LABELS, "--chunk-size", "25", "--wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    store = RedisJobStore.from_url(redis_url)
    before = store.status(job_id)

    from worker.app import TASK, create_app
    from worker.config import Settings

    app = create_app(Settings(broker_url=redis_url))
    app.send_task(TASK, args=[job_id, 2], queue="inferq.model.demo")
    app.send_task(TASK, args=[job_id, 2], queue="inferq.model.demo")
    deadline = time.monotonic() + 30
    client = redis.Redis.from_url(redis_url)
    while client.llen("inferq.model.demo") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    after = store.status(job_id)
    assert (after.completed, after.failed, after.chunks_done) == (
        before.completed, before.failed, before.chunks_done)
    parts = sorted(p.name for p in (results / "results" / f"job={job_id}").iterdir())
    assert parts == [f"part-{c:06d}.parquet" for c in range(4)]
    assert [r[0] for r in results_of(results, job_id)] == ids


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_leaves_a_job_that_completes_exactly_once(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    settings = {"backends": "fake", "fake_models": "demo", "chunk_time_limit": "20",
                "visibility_timeout": "25"}
    first = start_worker("w-doomed", str(results), **settings)
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for i in range(40):
            f.write(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i} @@slow:0.1@@"}) + "\n")
    out = inferq(redis_url, results, "submit", "classify", str(path), "--model", "demo",
                 "--chunk-size", "10")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    store = RedisJobStore.from_url(redis_url)
    deadline = time.monotonic() + 30
    while store.status(job_id).chunks_done < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the next chunk
    first.kill()
    start_worker("w-rescue", str(results), **settings)
    deadline = time.monotonic() + 120
    while store.status(job_id).state != "completed" and time.monotonic() < deadline:
        time.sleep(0.5)
    final = store.status(job_id)
    assert final.state == "completed"
    rows = results_of(results, job_id)
    assert sorted(r[0] for r in rows) == sorted(f"r{i}" for i in range(40))
    assert len(rows) == 40 and final.completed == 40
    assert {r[3] for r in rows} == {"w-doomed", "w-rescue"}


@pytest.mark.slow
def test_a_malformed_file_is_rejected_before_anything_is_queued(redis_url, tmp_path,
                                                                start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n{"prompt": "d"}\n'
                    '{"prompt": "e"\n')
    out = inferq(redis_url, results, "submit", "classify", str(path), "--model", "demo")
    assert out.returncode == 2
    assert "line 5" in out.stderr
    assert redis.Redis.from_url(redis_url).llen("inferq.model.demo") == 0


@pytest.mark.slow
def test_every_jobs_results_read_with_one_glob(redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    write_jsonl(tmp_path / "in.jsonl", 50, bad=False)
    jobs = []
    for op in ("classify", "generate"):
        out = inferq(redis_url, results, "submit", op, str(tmp_path / "in.jsonl"), "--model",
                     "demo", "--max-tokens", "4", "--wait")
        assert out.returncode == 0, out.stderr
        jobs.append(out.stdout.split()[0])
    counts = duckdb.sql(
        f"select job_id, op, count(*) from read_parquet('{results}/results/*/*.parquet', "
        "hive_partitioning=true) group by all order by op").fetchall()
    assert counts == [(jobs[0], "classify", 50), (jobs[1], "generate", 50)]


@pytest.mark.slow
def test_inferq_run_writes_the_same_dataset_without_redis(tmp_path, tiny_model):
    write_jsonl(tmp_path / "in.jsonl", 60)
    results = tmp_path / "results"
    out = subprocess.run([INFERQ, "--results", str(results), "run", "classify",
                          str(tmp_path / "in.jsonl"), "--model", "tiny", "--model-path",
                          str(tiny_model.gguf_path), "--labels", LABELS, "--chunk-size", "16",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    rows = results_of(results, status["job_id"])
    assert len(rows) == 60 and status["request_counts"]["total"] == 60
    assert {r[4] for r in rows} == {"llama_cpp"} and {r[3] for r in rows} == {"embedded"}
    assert (results / "jobs" / status["job_id"] / "manifest.json").exists()


@pytest.mark.slow
def test_reconcile_finishes_a_job_whose_redis_state_was_lost(redis_url, tmp_path,
                                                             start_worker):
    results = tmp_path / "results"
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for i in range(60):
            f.write(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i} @@slow:0.05@@"})
                    + "\n")
    # A worker finishes some chunks (0.5 s each), then Redis loses everything.
    out = inferq(redis_url, results, "submit", "classify", str(path), "--model", "demo",
                 "--chunk-size", "10", "--queue-anyway")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    client = redis.Redis.from_url(redis_url)
    parts = results / "results" / f"job={job_id}"
    worker = start_worker("w1", str(results), backends="fake", fake_models="demo")
    deadline = time.monotonic() + 30
    while len(list(parts.glob("*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    done = len(list(parts.glob("*.parquet")))
    assert 2 <= done < 6, done
    client.flushall()  # Redis lost everything: job, counts, inputs, queues

    start_worker("w2", str(results), backends="fake", fake_models="demo")
    out = inferq(redis_url, results, "reconcile", job_id, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["recreated"] and len(report["recorded"]) == done
    assert len(report["requeued"]) == 6 - done
    store = RedisJobStore.from_url(redis_url)
    deadline = time.monotonic() + 60
    while store.status(job_id).state != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    status = store.status(job_id)
    assert (status.state, status.total, status.completed) == ("completed", 60, 60)
    rows = results_of(results, job_id)
    assert [r[0] for r in rows] == [f"r{i}" for i in range(60)]
    again = inferq(redis_url, results, "reconcile", job_id, "--json")
    assert json.loads(again.stdout)["requeued"] == []


SUBMIT_AND_REPORT_RSS = """
import json, resource, sys
from jobs.spec import JobSpec
from worker.client import Client
from worker.config import Settings
client = Client(Settings(broker_url=sys.argv[1], results=sys.argv[2]))
status = client.submit(JobSpec(op="classify", model="demo", chunk_size=1000), sys.argv[3],
                       queue_anyway=True)
print(json.dumps({"rows": status.total, "peak_kb": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.slow
def test_submitting_100k_rows_keeps_memory_flat(redis_url, tmp_path):
    peaks = {}
    for rows in (10_000, 100_000):
        path = tmp_path / f"in-{rows}.jsonl"
        with open(path, "w") as f:
            for i in range(rows):
                f.write(f'{{"custom_id": "id-{i:07d}", "prompt": "row {i} of the input"}}\n')
        out = subprocess.run([sys.executable, "-c", SUBMIT_AND_REPORT_RSS, redis_url,
                              str(tmp_path / "results"), str(path)],
                             capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["rows"] == rows
        peaks[rows] = report["peak_kb"] / 1024
    # Ten times the rows may not cost more than a few MB: rows stream, one chunk at a time.
    assert peaks[100_000] - peaks[10_000] < 16, peaks
    print(f"submit peak RSS: {peaks}")


@pytest.mark.slow
def test_a_row_that_crashes_the_engine_is_isolated_and_the_rest_completes(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    settings = {"backends": "fake", "fake_models": "demo", "max_attempts": "1",
                "chunk_time_limit": "2", "visibility_timeout": "3"}
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for i in range(12):
            poison = " @@crash@@" if i == 7 else ""
            f.write(json.dumps({"custom_id": f"r{i}", "prompt": f"row {i}{poison}"}) + "\n")
    out = inferq(redis_url, results, "submit", "classify", str(path), "--model", "demo",
                 "--chunk-size", "12", "--queue-anyway")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    store = RedisJobStore.from_url(redis_url)
    deaths = 0
    deadline = time.monotonic() + 150
    while store.status(job_id).state != "completed" and time.monotonic() < deadline:
        worker = start_worker(f"w{deaths}", str(results), **settings)
        while worker.process.poll() is None and store.status(job_id).state != "completed" \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        deaths += worker.process.poll() is not None
    rows = results_of(results, job_id)
    assert [r[0] for r in rows] == [f"r{i}" for i in range(12)]
    assert [r[2] for r in rows] == [None] * 7 + ["engine_crash"] + [None] * 4
    status = store.status(job_id)
    assert (status.state, status.completed, status.failed) == ("completed", 11, 1)
    # 1 normal attempt, then halvings 12 -> 6 -> 3 -> 2 -> 1 each cost one death.
    assert 2 <= deaths <= 6
