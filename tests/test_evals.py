"""Evaluation suites: the suite file, runs scored at finalize, beat on a schedule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import redis

from jobs.redis_store import RedisJobStore
from jobs.suites import SuiteError
from worker.evals import latest_slot, load

INFERQ = str(Path(sys.executable).parent / "inferq")
LABELS = ["positive", "negative"]


def dataset(path: Path, n: int = 40) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"q{i}", "prompt": f"review {i}",
                                "expected": LABELS[i % 2]}) + "\n")
    return path


def suites_file(tmp_path: Path, body: str) -> Path:
    dataset(tmp_path / "sentiment.jsonl")
    path = tmp_path / "evals.toml"
    path.write_text(body)
    return path


SUITE = """\
[suites.sentiment]
models = ["demo"]
dataset = "sentiment.jsonl"
op = "classify"
labels = ["positive", "negative"]
scorer = "label"
chunk_size = 10
{extra}
"""


def test_a_valid_suite_file_loads(tmp_path):
    path = suites_file(tmp_path, SUITE.format(extra='every = "6h"\nalerts = { min_score = 0.5 }'))
    suite = load(str(path))["sentiment"]
    assert suite.every == 6 * 3600 and suite.alerts == {"min_score": 0.5}
    assert suite.options.labels == ("positive", "negative")
    assert suite.dataset == str(tmp_path / "sentiment.jsonl")


@pytest.mark.parametrize(("extra", "line", "message"), [
    ('scorer = "f1"', 6, "unknown scorer 'f1'"),
    ('colour = "red"', 8, "unknown key 'colour'"),
    ('schedule = "61 * * * *"', 8, "61"),
    ('schedule = "0 2 * *"', 8, "5 fields"),
    ('every = "soon"', 8, "duration"),
])
def test_a_bad_suite_is_rejected_with_its_line(tmp_path, extra, line, message):
    body = SUITE.format(extra=extra if "scorer" not in extra else "")
    if "scorer" in extra:
        body = body.replace('scorer = "label"', extra)
    path = suites_file(tmp_path, body)
    with pytest.raises(SuiteError, match=message) as info:
        load(str(path))
    assert info.value.line == line
    assert f"{path}, line {line}" in str(info.value)


def test_a_dataset_without_expected_answers_is_rejected(tmp_path):
    path = suites_file(tmp_path, SUITE.format(extra=""))
    (tmp_path / "sentiment.jsonl").write_text('{"prompt": "no answer"}\n')
    with pytest.raises(SuiteError, match="no expected answers") as info:
        load(str(path))
    assert info.value.line == 3


def test_latest_slot_of_interval_and_cron_schedules(tmp_path):
    path = suites_file(tmp_path, SUITE.format(extra='schedule = "30 2 * * *"'))
    suite = load(str(path))["sentiment"]
    now = datetime(2026, 11, 22, 7, 0, tzinfo=UTC).timestamp()
    assert latest_slot(suite, now) == datetime(2026, 11, 22, 2, 30, tzinfo=UTC).timestamp()
    early = datetime(2026, 11, 22, 1, 0, tzinfo=UTC).timestamp()
    assert latest_slot(suite, early) == datetime(2026, 11, 21, 2, 30, tzinfo=UTC).timestamp()


def run_cli(redis_url: str, results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERQ, "--broker-url", redis_url, "--results", str(results), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_an_evaluation_run_is_scored_into_parquet_and_redis(redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = suites_file(tmp_path, SUITE.format(extra="alerts = { min_score = 0.99 }"))
    out = run_cli(redis_url, results, "eval", "run", "sentiment", "--suites", str(path), "--wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    rows = duckdb.sql(f"select label, expected, error_code from read_parquet("
                      f"'{results}/results/job={job_id}/*.parquet')").fetchall()
    correct = sum(label == expected for label, expected, _ in rows)
    runs = duckdb.sql(f"select kind, score, accuracy, n, correct, breached from read_parquet("
                      f"'{results}/evaluations/*/*.parquet') order by kind, label").fetchall()
    assert runs[-1][0] == "run"
    assert runs[-1][2:5] == (correct / 40, 40, correct)
    assert [r[0] for r in runs[:-1]] == ["label", "label"]
    latest = RedisJobStore.from_url(redis_url).evaluations.latest("sentiment")["demo"]
    assert latest["job_id"] == job_id and latest["accuracy"] == correct / 40
    assert latest["breached"] and "below the minimum 0.990" in latest["breach"]
    status = run_cli(redis_url, results, "status", job_id)
    assert "alert" in status.stdout and "below the minimum" in status.stdout
    alerts = RedisJobStore.from_url(redis_url).evaluations.alerts()
    assert alerts[0]["job_id"] == job_id
    history = run_cli(redis_url, results, "eval", "history", "sentiment", "--json")
    assert [r["job_id"] for r in json.loads(history.stdout)] == [job_id]


def start_beat(redis_url: str, results: Path, suites: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([INFERQ, "--broker-url", redis_url, "--results", str(results),
                                 "beat", "--suites", str(suites), "--max-interval", "1"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def slots_run(redis_url: str) -> list[int]:
    client = redis.Redis.from_url(redis_url)
    return sorted(int(k.decode().rsplit(":", 1)[1])
                  for k in client.keys("inferq:eval:slot:sentiment:*"))


@pytest.mark.slow
def test_two_beats_run_each_slot_once_and_scores_land(redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = suites_file(tmp_path, SUITE.format(extra='every = "3s"'))
    beats = [start_beat(redis_url, results, path, tmp_path / f"beat{i}.log") for i in (1, 2)]
    try:
        time.sleep(8)
    finally:
        for b in beats:
            stop(b)
    store = RedisJobStore.from_url(redis_url)
    jobs = store.list_jobs(100)
    slots = slots_run(redis_url)
    assert len(slots) >= 2
    assert len(jobs) == len(slots), (len(jobs), slots, (tmp_path / "beat1.log").read_text())
    deadline = time.monotonic() + 30
    while any(not store.status(j.job_id).terminal for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.2)
    history = store.evaluations.history("sentiment", "demo", limit=50)
    assert sorted(int(r["slot"]) for r in history) == slots
    written = duckdb.sql(f"select count(*) from read_parquet('{results}/evaluations/*/*.parquet')"
                         " where kind = 'run'").fetchall()[0][0]
    assert written == len(slots)


@pytest.mark.slow
def test_a_slot_missed_while_beat_was_down_runs_once_on_restart(redis_url, tmp_path,
                                                              start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    every = 6
    path = suites_file(tmp_path, SUITE.format(extra=f'every = "{every}s"'))
    beat = start_beat(redis_url, results, path, tmp_path / "beat.log")
    time.sleep(3)
    stop(beat)
    before = slots_run(redis_url)
    # Stay down for two more slots, then restart just after a third falls due, so that
    # beat's first tick comes before the next one.
    restart_at = (before[-1] // every + 3) * every + 0.3
    time.sleep(max(0.0, restart_at - time.time()))
    beat = start_beat(redis_url, results, path, tmp_path / "beat.log")
    time.sleep(every - 2)
    stop(beat)
    after = slots_run(redis_url)
    missed = list(range(before[-1] + every, int(restart_at) + 1, every))
    assert len(missed) == 3
    assert [slot for slot in after if slot not in before] == [missed[-1]], (missed, after)
