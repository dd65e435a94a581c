"""Alerts of evaluation runs scored at finalize, in this process: a `MemoryJobStore`,
a `ParquetSink` and result parts written by hand (the queued path is in test_evals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference import GenerateOptions
from jobs.evaluate import read_evaluations, record_evaluation
from jobs.schema import ResultRow, results_table
from jobs.sinks import ParquetSink, encode_table
from jobs.spec import JobSpec
from jobs.store import MemoryJobStore

LABELS = ("positive", "negative")


class Suite:
    """Runs of one suite on one model; each run's rows are written as one result part."""

    def __init__(self, tmp_path: Path, alerts: dict[str, float]) -> None:
        self.store = MemoryJobStore()
        self.sink = ParquetSink(str(tmp_path / "results"))
        self.alerts = alerts

    def run(self, right: int, n: int = 40, **evaluation: object) -> str:
        """A run whose first ``right`` rows are right; its job id."""
        spec = JobSpec(op="classify", model="demo", options=GenerateOptions(labels=LABELS),
                       evaluation={"suite": "sentiment", "scorer": "label",
                                   "alerts": self.alerts, "slot": None} | evaluation)
        self.store.create_job(spec, total=n, chunks=1)
        rows = []
        for i in range(n):
            expected = LABELS[i % 2]
            label = expected if i < right else LABELS[(i + 1) % 2]
            rows.append(ResultRow(job_id=spec.job_id, row_index=i, custom_id=f"q{i}", chunk=0,
                                  op="classify", model="demo", backend="fake", worker="w",
                                  label=label, expected=expected,
                                  label_probs=[{"label": lab, "prob": 0.9 if lab == label
                                                else 0.1} for lab in LABELS]))
        self.sink.put_part(spec.job_id, 0, "results", encode_table(results_table(rows)))
        record_evaluation(self.store, self.sink, spec)
        return spec.job_id

    def summary(self, job_id: str) -> dict[str, object]:
        return next(r for r in self.store.evaluations.history("sentiment", limit=200)
                    if r["job_id"] == job_id)


def test_a_significant_drop_alerts_and_names_the_test(tmp_path):
    suite = Suite(tmp_path, {})
    before = suite.run(right=40)
    after = suite.run(right=28)
    summary = suite.summary(after)
    assert summary["breached"] and summary["compared_job_id"] == before
    assert summary["test"] == "paired_bootstrap" and summary["p_value"] < 0.05
    assert "significant" in str(summary["breach"])
    assert [a["job_id"] for a in suite.store.evaluations.alerts()] == [after]
    assert suite.store.status(after).alert == summary["breach"]


def test_a_drop_within_chance_does_not_alert(tmp_path):
    suite = Suite(tmp_path, {})
    suite.run(right=40)
    after = suite.run(right=39)        # one row of 40: well within chance
    summary = suite.summary(after)
    assert not summary["breached"] and summary["p_value"] > 0.05
    assert suite.store.evaluations.alerts() == []


def test_significance_zero_turns_the_significant_drop_alert_off(tmp_path):
    suite = Suite(tmp_path, {"significance": 0})
    suite.run(right=40)
    after = suite.run(right=20)
    assert not suite.summary(after)["breached"]


def test_with_confirm_a_breach_asks_for_a_rerun_instead_of_alerting(tmp_path):
    suite = Suite(tmp_path, {"confirm": 1.0})
    before = suite.run(right=40)
    dropped = suite.run(right=20)
    summary = suite.summary(dropped)
    assert summary["awaiting_confirmation"] and not summary["breached"]
    assert suite.store.evaluations.alerts() == []
    [request] = suite.store.evaluations.requests("confirm")
    assert request["job_id"] == dropped and request["baseline"]["job_id"] == before
    assert suite.store.evaluations.take("confirm", dropped)
    assert not suite.store.evaluations.take("confirm", dropped)     # taken once


@pytest.mark.parametrize(("rerun_right", "alerted"), [(20, True), (40, False)])
def test_the_rerun_is_judged_against_the_breached_runs_baseline(tmp_path, rerun_right,
                                                                alerted):
    suite = Suite(tmp_path, {"confirm": 1.0})
    before = suite.run(right=40)
    dropped = suite.run(right=20)
    [request] = suite.store.evaluations.requests("confirm")
    rerun = suite.run(right=rerun_right, confirms=dropped, baseline=request["baseline"])
    summary = suite.summary(rerun)
    assert summary["confirms"] == dropped and not summary["awaiting_confirmation"]
    assert summary["compared_job_id"] == before      # not the breached run
    assert summary["breached"] is alerted
    assert [a["job_id"] for a in suite.store.evaluations.alerts()] == ([rerun] if alerted else [])
    assert len(suite.store.evaluations.requests("confirm")) == 1     # a re-run asks for none


def test_the_run_row_keeps_the_interval_the_test_and_the_probability_scores(tmp_path):
    suite = Suite(tmp_path, {})
    suite.run(right=40)
    after = suite.run(right=30)
    [row] = [r for r in read_evaluations(suite.sink, "sentiment").to_pylist()
             if r["job_id"] == after and r["kind"] == "run"]
    assert row["score_low"] <= row["score"] <= row["score_high"]
    assert row["paired_rows"] == 40 and row["test"] == "paired_bootstrap"
    assert row["delta"] == pytest.approx(row["score"] - 1.0)
    # every row's top probability is 0.9; 30 of 40 right
    assert row["ece"] == pytest.approx(abs(0.9 - 0.75))
    assert row["op"] == "classify" and row["auc"] is not None
    examples = [r["custom_id"] for r in read_evaluations(suite.sink, "sentiment").to_pylist()
                if r["job_id"] == after and r["kind"] == "example"]
    assert examples == [f"q{i}" for i in range(30, 40)]


def generate_run(store: MemoryJobStore, sink: ParquetSink, evaluation: dict[str, object],
                 texts: list[str | None], *, model: str = "demo") -> JobSpec:
    """A finished generate job whose row i answered ``texts[i]`` (None: an error row)."""
    spec = JobSpec(op="generate", model=model, evaluation=evaluation)
    store.create_job(spec, total=len(texts), chunks=1)
    rows = [ResultRow(job_id=spec.job_id, row_index=i, custom_id=f"q{i}", chunk=0,
                      op="generate", model=model, backend="fake", worker="w", text=text,
                      expected=f"answer {i}", error_code=None if text is not None else "boom")
            for i, text in enumerate(texts)]
    sink.put_part(spec.job_id, 0, "results", encode_table(results_table(rows)))
    return spec


JUDGED = {"suite": "answers", "scorer": "judge", "alerts": {}, "slot": None,
          "scorer_options": {"model": "judge", "rubric": "Grade {answer}:", "scale": 3}}


def judge(store: MemoryJobStore, sink: ParquetSink, run: JobSpec, replies: list[str | None]
          ) -> str:
    """The judge job of ``run``, replying ``replies``; its job id once scored."""
    [request] = [r for r in store.evaluations.requests("judge") if r["job_id"] == run.job_id]
    assert store.evaluations.take("judge", run.job_id)
    judge_job = generate_run(store, sink, JUDGED | {
        "judged_job_id": run.job_id, "target": request["target"],
        "judged_model": request["model"], "judged_backend": request["backend"],
        "judged_op": request["op"]}, replies, model="judge")
    record_evaluation(store, sink, judge_job)
    return judge_job.job_id


def test_a_judged_run_asks_for_its_judge_job_and_is_scored_when_the_judge_finishes(tmp_path):
    store, sink = MemoryJobStore(), ParquetSink(str(tmp_path / "results"))
    run = generate_run(store, sink, JUDGED, ["a", "b", "c", None, "e"])
    record_evaluation(store, sink, run)
    assert store.evaluations.history("answers") == []      # not scored yet
    assert [r["target"] for r in store.evaluations.requests("judge")] == ["demo"]
    # grades 3, 2, "3/3" (does not parse), -, 1 on a scale of 3: 1.0, 0.5, 0, 0, 0
    judge_id = judge(store, sink, run, ["3", "2", "3/3", None, "1"])
    [summary] = store.evaluations.history("answers")
    assert summary["job_id"] == judge_id and summary["judged_job_id"] == run.job_id
    assert summary["target"] == "demo" and summary["model"] == "demo"
    assert summary["score"] == pytest.approx(1.5 / 5)
    assert (summary["errors"], summary["unparsed"]) == (2, 1)
    examples = {r["custom_id"]: r["predicted"] for r in read_evaluations(
        sink, "answers").to_pylist() if r["kind"] == "example"}
    assert examples == {"q1": "b", "q2": "c", "q3": None, "q4": "e"}    # the answers


def test_judged_runs_are_compared_by_paired_bootstrap_on_their_grades(tmp_path):
    store, sink = MemoryJobStore(), ParquetSink(str(tmp_path / "results"))
    first = generate_run(store, sink, JUDGED, ["x"] * 30)
    record_evaluation(store, sink, first)
    first_judge = judge(store, sink, first, ["3"] * 30)
    second = generate_run(store, sink, JUDGED, ["x"] * 30)
    record_evaluation(store, sink, second)
    judge(store, sink, second, ["3"] * 10 + ["1"] * 20)
    latest = store.evaluations.latest("answers")["demo"]
    assert latest["compared_job_id"] == first_judge and latest["test"] == "paired_bootstrap"
    assert latest["delta"] == pytest.approx(-20 / 30) and latest["breached"]
