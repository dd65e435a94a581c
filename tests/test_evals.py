"""Evaluation suites: the suite file, runs scored at finalize, beat on a schedule."""

from __future__ import annotations

import json
import os
import re
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
    assert out.returncode == 1, out.stderr     # the run breached min_score
    assert "ALERT: score" in out.stdout
    job_id = out.stdout.split()[0]
    rows = duckdb.sql(f"select custom_id, label, expected, error_code from read_parquet("
                      f"'{results}/results/job={job_id}/*.parquet')").fetchall()
    correct = sum(label == expected for _, label, expected, _ in rows)
    evaluations = f"read_parquet('{results}/evaluations/*/*.parquet')"
    runs = duckdb.sql(f"select kind, score, accuracy, n, correct, breached, score_low, "
                      f"score_high, log_loss, auc, op from {evaluations} where kind != 'example' "
                      "order by kind, label").fetchall()
    assert runs[-1][0] == "run"
    assert runs[-1][2:5] == (correct / 40, 40, correct)
    assert runs[-1][6] <= runs[-1][1] <= runs[-1][7]            # the interval holds the score
    assert runs[-1][8] > 0 and 0 <= runs[-1][9] <= 1 and runs[-1][10] == "classify"
    assert [r[0] for r in runs[:-1]] == ["label", "label"]
    examples = duckdb.sql(f"select custom_id, expected, predicted from {evaluations} "
                          "where kind = 'example' order by custom_id").fetchall()
    assert sorted(examples) == sorted((i, e, p) for i, p, e, _ in rows if p != e)
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


def test_history_of_an_unknown_suite_or_target_is_an_error(redis_url, tmp_path):
    store = RedisJobStore.from_url(redis_url)
    store.evaluations.record({"suite": "sentiment", "target": "demo", "job_id": "j1",
                              "finished_at": time.time(), "score": 0.5})
    out = run_cli(redis_url, tmp_path, "eval", "history", "sentimnet")
    assert out.returncode == 2 and "no runs of suite 'sentimnet'" in out.stderr
    out = run_cli(redis_url, tmp_path, "eval", "history", "sentiment", "--model", "dmeo")
    assert out.returncode == 2 and "no runs on target 'dmeo'; its targets: demo" in out.stderr


def test_eval_list_shows_the_latest_score_with_its_interval(redis_url, tmp_path):
    path = suites_file(tmp_path, SUITE.format(extra=""))
    RedisJobStore.from_url(redis_url).evaluations.record({
        "suite": "sentiment", "target": "demo", "job_id": "j1", "finished_at": time.time(),
        "score": 0.8125, "score_low": 0.7, "score_high": 0.9, "breached": False})
    out = run_cli(redis_url, tmp_path, "eval", "list", "--suites", str(path))
    assert out.returncode == 0, out.stderr
    assert "95% CI" in out.stdout.splitlines()[0]
    assert re.search(r"sentiment\s+demo\s+label\s+by hand\s+0\.812\s+0\.700-0\.900",
                     out.stdout), out.stdout


def fake_labels(prompts: list[str]) -> list[str]:
    """The labels the fake backend gives these prompts (a hash of the prompt)."""
    from inference import GenerateOptions
    from inference.testing.fake import FakeModel

    options = GenerateOptions(labels=tuple(LABELS))
    return [str(r.label) for r in FakeModel("fake://demo").classify(prompts, options)]


def graded_dataset(path: Path, right: int, n: int = 30) -> None:
    """``n`` rows whose fake answers are right for the first ``right`` and wrong after;
    the same ids and expected answers whatever ``right`` is; a slice column."""
    with open(path, "w") as f:
        for i in range(n):
            expected = LABELS[i % 2]
            variant = 0
            while (fake_labels([f"review {i}.{variant}"])[0] == expected) != (i < right):
                variant += 1
            f.write(json.dumps({"custom_id": f"q{i}", "prompt": f"review {i}.{variant}",
                                "expected": expected, "slice": "short" if i % 3 else "long"})
                    + "\n")


@pytest.mark.slow
def test_a_significant_drop_alerts_only_once_a_rerun_confirms_it(redis_url, tmp_path,
                                                                 start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo")
    path = tmp_path / "evals.toml"
    path.write_text(SUITE.replace("sentiment.jsonl", "graded.jsonl").format(
        extra="alerts = { confirm = true }"))
    graded_dataset(tmp_path / "graded.jsonl", right=30)
    first = run_cli(redis_url, results, "eval", "run", "sentiment", "--suites", str(path),
                    "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    graded_dataset(tmp_path / "graded.jsonl", right=18)     # 12 of 30 rows now wrong
    second = run_cli(redis_url, results, "eval", "run", "sentiment", "--suites", str(path),
                     "--wait")
    assert second.returncode == 1, second.stdout + second.stderr
    dropped, rerun = second.stdout.split()[0], second.stdout.split("re-running ")[1].split()[0]
    store = RedisJobStore.from_url(redis_url)
    history = {r["job_id"]: r for r in store.evaluations.history("sentiment")}
    assert history[dropped]["awaiting_confirmation"] and not history[dropped]["breached"]
    confirmed = history[rerun]
    assert confirmed["confirms"] == dropped and confirmed["breached"]
    # macro-F1 1.0 -> about 0.6 on the same 30 rows: a paired bootstrap, p near 0
    assert confirmed["test"] == "paired_bootstrap" and confirmed["p_value"] < 0.01
    assert confirmed["compared_job_id"] == first.stdout.split()[0]
    assert "significant" in confirmed["breach"]
    assert [a["job_id"] for a in store.evaluations.alerts()] == [rerun]
    assert store.evaluations.requests("confirm") == []
    slices = duckdb.sql(f"select slice, n, accuracy from read_parquet('{results}/evaluations/"
                        f"*/{rerun}.parquet') where kind = 'slice' order by slice").fetchall()
    # long: rows 0, 3, ..., 27 (10, of which 0-15 right: 6); short: 20, of which 12 right
    assert slices == [("long", 10, 0.6), ("short", 20, 0.6)]


@pytest.mark.slow
def test_a_judge_job_routes_to_the_judge_model_and_unparsed_replies_are_counted(
        redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo,judge")
    dataset(tmp_path / "answers.jsonl", n=12)
    path = tmp_path / "evals.toml"
    path.write_text("""\
[suites.answers]
models = ["demo"]
dataset = "answers.jsonl"
op = "generate"
options = { max_tokens = 4 }
scorer = { name = "judge", model = "judge", rubric = "Answer: {answer}\\nGrade 1-5:" }
""")
    out = run_cli(redis_url, results, "eval", "run", "answers", "--suites", str(path), "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = out.stdout.split()[0]
    # the fake judge answers letters: no reply is a grade, each is a counted error row
    assert "demo: judge 0.000" in out.stdout and "12 judge replies did not parse" in out.stdout
    store = RedisJobStore.from_url(redis_url)
    [summary] = store.evaluations.history("answers")
    judge_job = summary["job_id"]
    assert summary["judged_job_id"] == run_id and summary["target"] == "demo"
    assert (summary["n"], summary["errors"], summary["unparsed"]) == (12, 12, 12)
    spec = store.get_spec(judge_job)
    assert (spec.model, spec.op, store.status(judge_job).state) == ("judge", "generate",
                                                                    "completed")
    # each judge prompt is the rubric around a 4-letter answer: the fake counts its bytes + 1
    prompts = duckdb.sql(f"select prompt_tokens from read_parquet('{results}/results/"
                         f"job={judge_job}/*.parquet')").fetchall()
    assert prompts == [(len("Answer: abcd\nGrade 1-5:") + 1,)] * 12
    assert store.evaluations.requests("judge") == []


@pytest.mark.slow
def test_beat_submits_the_judge_jobs_of_scheduled_runs(redis_url, tmp_path, start_worker):
    results = tmp_path / "results"
    start_worker("w1", str(results), backends="fake", fake_models="demo,judge")
    dataset(tmp_path / "answers.jsonl", n=6)
    path = tmp_path / "evals.toml"
    path.write_text("""\
[suites.answers]
models = ["demo"]
dataset = "answers.jsonl"
op = "generate"
options = { max_tokens = 4 }
every = "4s"
scorer = { name = "judge", model = "judge", rubric = "Grade {answer}:" }
""")
    beat = start_beat(redis_url, results, path, tmp_path / "beat.log")
    store = RedisJobStore.from_url(redis_url)
    deadline = time.monotonic() + 30
    try:
        while not store.evaluations.history("answers") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop(beat)
    history = store.evaluations.history("answers")
    assert history, (tmp_path / "beat.log").read_text()
    judged = store.get_spec(history[0]["judged_job_id"])
    assert judged.model == "demo" and judged.evaluation["slot"] == history[0]["slot"]
    assert store.get_spec(history[0]["job_id"]).model == "judge"
