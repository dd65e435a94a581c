"""Scoring an evaluation run when its job finalizes, and the evaluations dataset.

An evaluation run is an ordinary job whose spec carries ``evaluation``; its rows
hold the dataset's expected answers. At finalize the rows are scored, the score
and the job's throughput become rows of the evaluations dataset
(``evaluations/suite=<name>/<job id>.parquet`` through the sink: one ``run`` row, plus one
``label`` row per label for the label scorer), and the store records the latest
score and a bounded history per suite and model. Thresholds (a minimum score, a
maximum drop from the previous run) mark a breached run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.schema import EVALUATIONS_SCHEMA
from jobs.scorers import Score, make_scorer
from jobs.sinks import EvaluationSink, encode_table
from jobs.spec import JobSpec

if TYPE_CHECKING:
    from jobs.lifecycle import JobStatus
    from jobs.store import JobStore

@dataclass(frozen=True, slots=True, kw_only=True)
class EvalRun:
    """One scored run of one suite on one model."""

    suite: str
    job_id: str
    target: str
    model: str
    backend: str
    score: Score
    rows_per_sec: float
    prefill_tokens_per_sec: float
    decode_tokens_per_sec: float
    seconds_per_row: float
    finished_at: float
    slot: float | None = None
    breaches: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What Redis keeps per run (latest score and history)."""
        return {"suite": self.suite, "job_id": self.job_id, "target": self.target,
                "model": self.model, "backend": self.backend, "scorer": self.score.scorer,
                "score": self.score.value, "accuracy": self.score.accuracy,
                "macro_f1": self.score.macro_f1, "n": self.score.n,
                "errors": self.score.errors, "rows_per_sec": self.rows_per_sec,
                "prefill_tokens_per_sec": self.prefill_tokens_per_sec,
                "decode_tokens_per_sec": self.decode_tokens_per_sec,
                "seconds_per_row": self.seconds_per_row, "finished_at": self.finished_at,
                "slot": self.slot, "breached": bool(self.breaches),
                "breach": "; ".join(self.breaches)}


def record_evaluation(store: JobStore, sink: EvaluationSink, spec: JobSpec) -> None:
    """Score an evaluation run; write its rows, its Redis record and any alert."""
    run = score_job(spec, store.status(spec.job_id), sink)
    previous = store.evaluations.latest(run.suite).get(run.target)
    found = breaches(run, (spec.evaluation or {}).get("alerts") or {},
                     previous["score"] if previous else None)
    run = replace(run, breaches=found)
    write_evaluation(sink, run.suite, spec.job_id, evaluation_table(run))
    store.evaluations.record(run.summary())
    if found:
        store.set_alert(spec.job_id, "; ".join(found))
        store.evaluations.alert(run.summary())


def target_of(spec: JobSpec) -> str:
    return f"{spec.model}@{spec.backend}" if spec.backend else spec.model


def score_job(spec: JobSpec, status: JobStatus, sink: EvaluationSink) -> EvalRun:
    """Score a finished evaluation job from its result parts."""
    evaluation = spec.evaluation or {}
    scorer = make_scorer(evaluation["scorer"], evaluation.get("scorer_options") or {})
    table = sink.read_results(spec.job_id)
    column = "label" if spec.op == "classify" and spec.options.labels else "text"
    predictions = table.column(column).to_pylist()
    errors = table.column("error_code").to_pylist()
    expected = table.column("expected").to_pylist()
    pairs = [(None if err else pred, exp or "")
             for pred, err, exp in zip(predictions, errors, expected, strict=True)]
    score = scorer.score(pairs)
    totals: dict[str, float] = {}
    for backend_totals in status.metrics.values():
        for key, value in backend_totals.items():
            totals[key] = totals.get(key, 0.0) + value
    model_seconds = totals.get("total_seconds", 0.0)
    started = status.timestamps.get("in_progress_at") or status.timestamps.get("queued_at", 0)
    ended = max(status.timestamps.values(), default=0.0)
    wall = ended - started if started else 0.0
    return EvalRun(
        suite=evaluation["suite"], job_id=spec.job_id, target=target_of(spec), model=spec.model,
        backend=",".join(sorted(b for b in status.metrics if b != "-")), score=score,
        rows_per_sec=status.done_rows / wall if wall > 0 else 0.0,
        prefill_tokens_per_sec=_rate(totals, "prompt_tokens", "prefill_seconds"),
        decode_tokens_per_sec=_rate(totals, "generated_tokens", "decode_seconds"),
        seconds_per_row=model_seconds / status.done_rows if status.done_rows else 0.0,
        finished_at=ended or time.time(), slot=evaluation.get("slot"))


def breaches(run: EvalRun, alerts: dict[str, Any], previous: float | None) -> list[str]:
    """Which thresholds the run breaks: a minimum score, a maximum drop from the last run."""
    found = []
    minimum = alerts.get("min_score")
    if minimum is not None and run.score.value < minimum:
        found.append(f"score {run.score.value:.3f} is below the minimum {minimum:.3f}")
    max_drop = alerts.get("max_drop")
    if max_drop is not None and previous is not None and previous - run.score.value > max_drop:
        found.append(f"score fell {previous - run.score.value:.3f} from {previous:.3f} "
                     f"(more than {max_drop:.3f})")
    return found


def evaluation_table(run: EvalRun) -> pa.Table:
    """The run's rows of the evaluations dataset."""
    import json

    s = run.score
    base = {"suite": run.suite, "job_id": run.job_id, "model": run.model,
            "backend": run.backend, "target": run.target, "scorer": s.scorer,
            "finished_at": datetime.fromtimestamp(run.finished_at, UTC),
            "slot": datetime.fromtimestamp(run.slot, UTC) if run.slot else None,
            "breached": bool(run.breaches), "breach": "; ".join(run.breaches) or None}
    rows = [base | {"kind": "run", "score": s.value, "accuracy": s.accuracy,
                    "macro_f1": s.macro_f1, "n": s.n, "correct": s.correct, "errors": s.errors,
                    "rows_per_sec": run.rows_per_sec,
                    "prefill_tokens_per_sec": run.prefill_tokens_per_sec,
                    "decode_tokens_per_sec": run.decode_tokens_per_sec,
                    "seconds_per_row": run.seconds_per_row,
                    "confusion": json.dumps(s.confusion) if s.confusion is not None else None}]
    for label, stats in sorted((s.per_label or {}).items()):
        rows.append(base | {"kind": "label", "label": label, "score": stats.f1,
                            "precision": stats.precision, "recall": stats.recall,
                            "support": stats.support})
    return pa.Table.from_pylist(rows, schema=EVALUATIONS_SCHEMA)


def _rate(totals: dict[str, float], tokens: str, seconds: str) -> float:
    return totals.get(tokens, 0.0) / totals[seconds] if totals.get(seconds) else 0.0


def write_evaluation(sink: EvaluationSink, suite: str, job_id: str, table: pa.Table) -> None:
    """Publish a run's rows at ``evaluations/suite=<suite>/<job id>.parquet``."""
    sink.put_evaluation(suite, job_id, encode_table(table))


def read_evaluations(sink: EvaluationSink, suite: str | None = None) -> pa.Table:
    """Every evaluation row of a suite (or of all suites), oldest first."""
    return sink.read_evaluations(suite).sort_by("finished_at")
