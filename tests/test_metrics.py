"""Operator metrics: `inferq exporter` and ``/metrics`` on `inferq serve`, scraped over
HTTP on loopback and parsed with prometheus_client's own parser, against a real Redis
and a real worker process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from jobs import keys
from tests.test_queue import LABELS, inferq
from worker.app import TASK, create_app
from worker.broker_queues import queue_lists
from worker.config import Settings
from worker.local import Server, free_port

INFERQ = str(Path(sys.executable).parent / "inferq")
QUEUE = "inferq.model.tiny"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def exporter(redis_url: str, log: Path) -> Iterator[str]:
    """`inferq exporter` on a free loopback port; yields its /metrics URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with open(log, "ab") as out:
        process = subprocess.Popen([INFERQ, "--broker-url", redis_url, "exporter", "--port",
                                    str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"exporter did not come up:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def write_rows(path: Path, n: int, slow_every: int, seconds: float) -> None:
    """n prompts; every ``slow_every``-th makes the fake engine sleep ``seconds``."""
    with open(path, "w") as f:
        for i in range(n):
            slow = f"@@slow:{seconds}@@ " if i % slow_every == 0 else ""
            f.write(json.dumps({"custom_id": f"r{i}", "prompt": f"{slow}Review {i}"}) + "\n")


def submit(redis_url: str, results: Path, path: Path, *args: str) -> str:
    out = inferq(redis_url, results, "submit", "classify", str(path), "--model", "tiny",
                 "--labels", LABELS, "--chunk-size", "5", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def messages_on(client: redis.Redis, queue: str) -> int:
    return sum(int(client.llen(k)) for k in queue_lists(queue))


@pytest.mark.slow
def test_the_exporter_counts_queued_reserved_and_in_flight_chunks_and_the_work_done(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    write_rows(tmp_path / "in.jsonl", 20, slow_every=5, seconds=2)
    client = redis.Redis.from_url(redis_url)
    with exporter(redis_url, tmp_path / "exporter.log") as url:
        job_id = submit(redis_url, results, tmp_path / "in.jsonl", "--queue-anyway")
        before = scrape(url)
        # Four chunks, none running: each is a message on the queue, or held back by the
        # feeder; nothing is reserved or in flight.
        queued = value(before, "inferq_queue_queued", queue=QUEUE)
        assert queued == messages_on(client, QUEUE) > 0
        assert queued + value(before, "inferq_queue_waiting", queue=QUEUE) == 4
        assert value(before, "inferq_queue_backlog", queue=QUEUE) == 4
        assert value(before, "inferq_queue_reserved", queue=QUEUE) == 0
        assert value(before, "inferq_queue_in_flight", queue=QUEUE) == 0
        assert value(before, "inferq_jobs", state="queued") == 1
        assert value(before, "inferq_workers") == 0
        assert value(before, "inferq_redis_up") == 1

        start_worker("w-metrics", str(results), backends="fake", fake_models="tiny")
        deadline = time.monotonic() + 60
        while b'"current": ""' in (client.get(keys.worker("w-metrics")) or b'"current": ""'):
            assert time.monotonic() < deadline, "the worker never started a chunk"
            time.sleep(0.05)
        running = scrape(url)  # the chunk sleeps 2 s: the worker holds it unacked
        assert value(running, "inferq_queue_reserved", queue=QUEUE) == 1
        assert value(running, "inferq_queue_in_flight", queue=QUEUE) == 1
        assert value(running, "inferq_worker_busy", worker="w-metrics",
                     host=json.loads(client.get(keys.worker("w-metrics")))["host"]) == 1
        assert value(running, "inferq_jobs", state="in_progress") == 1

        # Once a chunk is recorded and others are left, status has a rate and an ETA.
        out = inferq(redis_url, results, "status", job_id, "--json")
        while json.loads(out.stdout)["chunks_done"] < 1:
            assert time.monotonic() < deadline + 60, out.stdout
            out = inferq(redis_url, results, "status", job_id, "--json")
        status = json.loads(out.stdout)
        assert status["state"] == "in_progress" and status["rows_per_sec"] > 0, status
        assert status["eta_seconds"] == pytest.approx(
            (20 - status["request_counts"]["completed"] - status["request_counts"]["failed"])
            / status["rows_per_sec"], rel=0.2)
        table = inferq(redis_url, results, "status", job_id).stdout
        assert "eta       0:00:" in table, table
        deadline = time.monotonic() + 120
        while json.loads(out.stdout)["state"] != "completed":
            assert time.monotonic() < deadline, out.stdout
            time.sleep(0.2)
            out = inferq(redis_url, results, "status", job_id, "--json")
        deadline = time.monotonic() + 30  # the heartbeat after the last chunk may lag it
        while json.loads(client.get(keys.worker("w-metrics")) or "{}").get(
                "counters", {}).get("chunks") != 4:
            assert time.monotonic() < deadline, client.get(keys.worker("w-metrics"))
            time.sleep(0.2)
        after = scrape(url)
    prompt_tokens, rows = duckdb.sql(
        f"select sum(prompt_tokens), sum(rows) from read_parquet("
        f"'{results}/metrics/job={job_id}/*.parquet')").fetchall()[0]
    assert value(after, "inferq_rows_total", backend="fake", model="tiny") == rows == 20
    assert value(after, "inferq_prompt_tokens_total", backend="fake",
                 model="tiny") == prompt_tokens > 0
    assert value(after, "inferq_row_errors_total", backend="fake", model="tiny") == 0
    assert value(after, "inferq_model_seconds_total", backend="fake", model="tiny") >= 8
    for gauge in ("queued", "reserved", "in_flight", "waiting", "backlog"):
        assert value(after, f"inferq_queue_{gauge}", queue=QUEUE) == 0, gauge
    assert value(after, "inferq_jobs", state="completed") == 1
    host = json.loads(client.get(keys.worker("w-metrics")))["host"]
    assert value(after, "inferq_worker_chunks_total", worker="w-metrics", host=host) == 4


def test_a_message_of_any_priority_counts_as_queued(redis_url, tmp_path):
    app = create_app(Settings(broker_url=redis_url))
    for priority in (0, 5, 9):  # kombu keeps one list per priority step
        app.send_task(TASK, args=["job-none", priority], queue="inferq.model.p", priority=priority)
    client = redis.Redis.from_url(redis_url)
    assert len([k for k in client.keys("inferq.model.p*")]) == 3
    with exporter(redis_url, tmp_path / "exporter.log") as url:
        # Nothing else names the queue: a live worker serving it does.
        client.zadd(keys.WORKERS, {"w": time.time()})
        client.set(keys.worker("w"), json.dumps({"name": "w", "queues": ["inferq.model.p"]}))
        assert value(scrape(url), "inferq_queue_queued", queue="inferq.model.p") == 3


def test_serve_exposes_the_same_metrics_without_an_api_key(redis_url, tmp_path):
    results = tmp_path / "results"
    write_rows(tmp_path / "in.jsonl", 10, slow_every=100, seconds=0)
    submit(redis_url, results, tmp_path / "in.jsonl", "--queue-anyway")
    server = Server(redis_url, str(results), tmp_path / "serve.log", api_keys="sk-test").start()
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:  # the API still wants its key
            urllib.request.urlopen(f"{server.url}/v1/models", timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        served = scrape(f"{server.url}/metrics")
        with exporter(redis_url, tmp_path / "exporter.log") as url:
            exported = scrape(url)
    finally:
        server.stop()
    assert served == exported
    assert value(served, "inferq_queue_backlog", queue=QUEUE) == 2
    assert value(served, "inferq_jobs", state="queued") == 1


def test_the_exporter_reports_redis_down_instead_of_failing_the_scrape(redis_server, tmp_path):
    port = free_port()  # nothing listens here: no Redis
    with exporter(f"redis://127.0.0.1:{port}/0", tmp_path / "exporter.log") as url:
        samples = scrape(url)
    assert samples == {("inferq_redis_up", ()): 0.0}
