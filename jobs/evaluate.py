"""Scoring an evaluation run when its job finalizes, and the evaluations dataset.

An evaluation run is an ordinary job whose spec carries ``evaluation``; its rows
hold the dataset's expected answers. At finalize the rows are scored, with a 95%
bootstrap interval, probability scores for classify runs, per-slice scores and the
paired test against the previous run of the suite and target (`jobs.outcomes`);
these and the job's throughput become rows of the evaluations dataset
(``evaluations/suite=<name>/<job id>.parquet`` through the sink: one ``run`` row, one
``label`` row per label for the label scorer, one ``slice`` row per slice, one
``example`` row per wrong row up to `MAX_EXAMPLES`), and the store records the latest
score and a bounded history per suite and model. Alerts (a minimum score, a maximum
drop, a significant drop) mark a breached run; with ``confirm`` a breached run first
asks for one re-run (a "confirm" request in `jobs.eval_store.EvalStore`) and only the
re-run, still breaching against the same baseline, alerts. A judge-scored suite's run
asks for its judge job instead (a "judge" request; `jobs.judge`), and is scored when
that job finalizes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.outcomes import (
    Comparison,
    Outcomes,
    ProbabilityScores,
    compare,
    outcomes,
    probability_scores,
)
from jobs.schema import EVALUATIONS_SCHEMA
from jobs.scorers import LabelScorer, Score, make_scorer
from jobs.sinks import EvaluationSink, encode_table
from jobs.slices import read_slices
from jobs.spec import JobSpec

if TYPE_CHECKING:
    from jobs.lifecycle import JobStatus
    from jobs.store import JobStore

MAX_EXAMPLES = 50       #: wrong rows kept per run for the report
EXAMPLE_CHARS = 500     #: a longer prediction is cut to this many characters
SIGNIFICANCE = 0.05     #: default ``alerts.significance``; 0 = no significant-drop alert


@dataclass(frozen=True, slots=True, kw_only=True)
class Example:
    """A row the run got wrong."""

    custom_id: str
    expected: str
    predicted: str | None    #: None for an error row


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceScore:
    """The headline score of the rows of one value of the dataset's ``slice`` column."""

    slice: str
    score: Score
    interval: tuple[float, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalRun:
    """One scored run of one suite on one model."""

    suite: str
    job_id: str
    target: str
    model: str
    backend: str
    score: Score
    rows_per_sec: float                 #: rows per second of model time
    prefill_tokens_per_sec: float
    decode_tokens_per_sec: float
    seconds_per_row: float
    finished_at: float
    slot: float | None = None
    breaches: list[str] = field(default_factory=list)
    op: str = "classify"
    interval: tuple[float, float] | None = None     #: the score's 95% bootstrap interval
    probabilities: ProbabilityScores | None = None  #: classify runs with label probabilities
    comparison: Comparison | None = None            #: against the previous run
    slices: list[SliceScore] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    confirms: str | None = None          #: a confirmation re-run: the job it re-ran
    judged_job_id: str | None = None     #: judge scorer: the run the judge job graded
    awaiting_confirmation: bool = False  #: breached; no alert until a re-run confirms

    @property
    def breached(self) -> bool:
        """Breached and alerted: a breach awaiting confirmation is not (yet) one."""
        return bool(self.breaches) and not self.awaiting_confirmation

    def summary(self) -> dict[str, Any]:
        """What Redis keeps per run (latest score and history)."""
        c = self.comparison
        low, high = self.interval or (None, None)
        return {"suite": self.suite, "job_id": self.job_id, "target": self.target,
                "model": self.model, "backend": self.backend, "scorer": self.score.scorer,
                "op": self.op, "score": self.score.value, "score_low": low,
                "score_high": high, "accuracy": self.score.accuracy,
                "macro_f1": self.score.macro_f1, "n": self.score.n,
                "errors": self.score.errors, "rows_per_sec": self.rows_per_sec,
                "prefill_tokens_per_sec": self.prefill_tokens_per_sec,
                "decode_tokens_per_sec": self.decode_tokens_per_sec,
                "seconds_per_row": self.seconds_per_row, "finished_at": self.finished_at,
                "slot": self.slot, "breached": self.breached,
                "breach": "; ".join(self.breaches),
                "awaiting_confirmation": self.awaiting_confirmation, "confirms": self.confirms,
                "judged_job_id": self.judged_job_id, "unparsed": self.score.unparsed,
                "compared_job_id": c.previous_job_id if c else None,
                "test": c.test if c else None, "p_value": c.p_value if c else None,
                "delta": c.delta if c else None}


def record_evaluation(store: JobStore, sink: EvaluationSink, spec: JobSpec) -> None:
    """Score an evaluation run; write its rows, its Redis record and any alert (or, with
    ``confirm``, the request for a confirmation re-run). A run of a judge-scored suite is
    not scored here: it asks for its judge job, whose finalize scores it."""
    evaluation = spec.evaluation or {}
    judged = evaluation.get("judged_job_id")
    if evaluation["scorer"] == "judge" and not judged:
        store.evaluations.request("judge", {
            "job_id": spec.job_id, "suite": evaluation["suite"], "target": target_of(spec),
            "model": spec.model, "backend": spec.backend, "op": spec.op,
            "slot": evaluation.get("slot"), "confirms": evaluation.get("confirms"),
            "baseline": evaluation.get("baseline")})
        return
    run, rows = score_run(spec, store.status(judged or spec.job_id), sink)
    confirms = evaluation.get("confirms")
    # A confirmation re-run is judged against the breached run's own baseline.
    baseline = evaluation.get("baseline") if confirms else store.evaluations.latest(
        run.suite).get(run.target)
    comparison = previous_comparison(sink, spec, rows, baseline) if baseline else None
    alerts = evaluation.get("alerts") or {}
    found = breaches(run, alerts, baseline["score"] if baseline else None, comparison)
    awaiting = bool(found and alerts.get("confirm") and not confirms)
    run = replace(run, breaches=found, comparison=comparison, confirms=confirms,
                  awaiting_confirmation=awaiting)
    write_evaluation(sink, run.suite, spec.job_id, evaluation_table(run))
    store.evaluations.record(run.summary())
    if awaiting:
        store.evaluations.request("confirm", {
            "job_id": spec.job_id, "suite": run.suite, "target": run.target,
            "model": run.model, "backend": evaluation.get("judged_backend", spec.backend),
            "breach": "; ".join(found), "baseline": baseline})
    elif found:
        store.set_alert(spec.job_id, "; ".join(found))
        store.evaluations.alert(run.summary())


def target_of(spec: JobSpec) -> str:
    return f"{spec.model}@{spec.backend}" if spec.backend else spec.model


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rows:
    """A run's rows as its scorer sees them."""

    ids: list[str]
    row_index: list[int]
    pairs: list[tuple[str | None, str]]     #: (prediction or judge reply, expected)
    shown: list[str | None]                 #: what the model answered, for examples
    label_probs: list[Any] | None = None


def _rows(spec: JobSpec, sink: EvaluationSink, job_id: str, judged: str | None) -> _Rows:
    """The rows of run ``job_id``; of a judge job, the rows of the run it ``judged``, each
    paired with the judge's reply (None where either model failed on the row)."""
    table = sink.read_results(judged or job_id)
    ids = table.column("custom_id").to_pylist()
    errors = table.column("error_code").to_pylist()
    expected = [e or "" for e in table.column("expected").to_pylist()]
    index = table.column("row_index").to_pylist()
    if judged:
        replies = sink.read_results(job_id)
        reply = {i: None if err else text for i, text, err in zip(
            replies.column("custom_id").to_pylist(), replies.column("text").to_pylist(),
            replies.column("error_code").to_pylist(), strict=True)}
        answers = table.column("text").to_pylist()
        return _Rows(ids=ids, row_index=index, pairs=[
            (None if err else reply.get(i), e) for i, err, e in zip(ids, errors, expected,
                                                                     strict=True)],
            shown=[None if err else a for a, err in zip(answers, errors, strict=True)])
    column = "label" if spec.op == "classify" and spec.options.labels else "text"
    shown = [None if err else p for p, err in zip(table.column(column).to_pylist(), errors,
                                                   strict=True)]
    return _Rows(ids=ids, row_index=index, pairs=list(zip(shown, expected, strict=True)),
                 shown=shown, label_probs=table.column("label_probs").to_pylist())


def score_job(spec: JobSpec, status: JobStatus, sink: EvaluationSink) -> EvalRun:
    """Score a finished evaluation job from its result parts."""
    return score_run(spec, status, sink)[0]


def score_run(spec: JobSpec, status: JobStatus,
              sink: EvaluationSink) -> tuple[EvalRun, Outcomes]:
    """Score a finished evaluation job (or judge job) from its result parts; its per-row
    outcomes. ``status`` is the answering run's: its throughput is the one reported."""
    evaluation = spec.evaluation or {}
    scorer = make_scorer(evaluation["scorer"], evaluation.get("scorer_options") or {})
    judged = evaluation.get("judged_job_id")
    found = _rows(spec, sink, spec.job_id, judged)
    pairs = found.pairs
    score = scorer.score(pairs)
    rows = outcomes(scorer, found.ids, pairs)
    probabilities = None
    if isinstance(scorer, LabelScorer) and spec.op == "classify" and found.label_probs:
        probabilities = probability_scores(scorer, found.label_probs, [e for _, e in pairs])
    slices = read_slices(spec.input_name, found.row_index)
    totals: dict[str, float] = {}
    for backend_totals in status.metrics.values():
        for key, value in backend_totals.items():
            totals[key] = totals.get(key, 0.0) + value
    model_seconds = totals.get("total_seconds", 0.0)
    ended = max(status.timestamps.values(), default=0.0)
    run = EvalRun(
        suite=evaluation["suite"], job_id=spec.job_id,
        target=evaluation.get("target") or target_of(spec),
        model=evaluation.get("judged_model") or spec.model,
        backend=",".join(sorted(b for b in status.metrics if b != "-")), score=score,
        rows_per_sec=status.done_rows / model_seconds if model_seconds > 0 else 0.0,
        prefill_tokens_per_sec=_rate(totals, "prompt_tokens", "prefill_seconds"),
        decode_tokens_per_sec=_rate(totals, "generated_tokens", "decode_seconds"),
        seconds_per_row=model_seconds / status.done_rows if status.done_rows else 0.0,
        finished_at=ended or time.time(), slot=evaluation.get("slot"),
        op=evaluation.get("judged_op") or spec.op, judged_job_id=judged,
        interval=rows.interval() if rows.n else None, probabilities=probabilities,
        slices=_slice_scores(scorer, pairs, rows, slices),
        examples=[Example(custom_id=i, expected=e, predicted=None if p is None
                          else p[:EXAMPLE_CHARS])
                  for i, p, (_, e), right in zip(found.ids, found.shown, pairs, rows.correct,
                                                 strict=True)
                  if not right][:MAX_EXAMPLES])
    return run, rows


def _slice_scores(scorer: Any, pairs: list[tuple[str | None, str]], rows: Outcomes,
                  slices: list[str | None] | None) -> list[SliceScore]:
    if slices is None:
        return []
    positions: dict[str, list[int]] = {}
    for i, value in enumerate(slices):
        if value is not None:
            positions.setdefault(value, []).append(i)
    return [SliceScore(slice=name, score=scorer.score([pairs[i] for i in where]),
                       interval=rows.take(where).interval())
            for name, where in sorted(positions.items())]


def previous_comparison(sink: EvaluationSink, spec: JobSpec, rows: Outcomes,
                        previous: dict[str, Any]) -> Comparison | None:
    """The paired test of this run against the ``previous`` run's summary (its rows
    rescored with this run's scorer); None when its results are gone or the runs share
    no row."""
    evaluation = spec.evaluation or {}
    scorer = make_scorer(evaluation["scorer"], evaluation.get("scorer_options") or {})
    before = _rows(spec, sink, previous["job_id"], previous.get("judged_job_id"))
    if not before.ids:
        return None
    return compare(outcomes(scorer, before.ids, before.pairs), rows, previous["job_id"])


def breaches(run: EvalRun, alerts: dict[str, Any], previous: float | None,
             comparison: Comparison | None = None) -> list[str]:
    """Which alerts the run sets off: a minimum score, a maximum drop from the previous
    run, a significant drop on the rows both scored (``significance``, default 0.05)."""
    found = []
    minimum = alerts.get("min_score")
    if minimum is not None and run.score.value < minimum:
        found.append(f"score {run.score.value:.3f} is below the minimum {minimum:.3f}")
    max_drop = alerts.get("max_drop")
    if max_drop is not None and previous is not None and previous - run.score.value > max_drop:
        found.append(f"score fell {previous - run.score.value:.3f} from {previous:.3f} "
                     f"(more than {max_drop:.3f})")
    alpha = alerts.get("significance", SIGNIFICANCE)
    if comparison is not None and alpha and comparison.significant_drop(alpha):
        c = comparison
        found.append(f"score fell {-c.delta:.3f} ({c.before:.3f} to {c.after:.3f}) on the "
                     f"{c.paired_rows} rows shared with run {c.previous_job_id}: significant, "
                     f"{c.test} p={c.p_value:.2g} < {alpha:g}")
    return found


def evaluation_table(run: EvalRun) -> pa.Table:
    """The run's rows of the evaluations dataset."""
    s, p, c = run.score, run.probabilities, run.comparison
    base = {"suite": run.suite, "job_id": run.job_id, "model": run.model,
            "backend": run.backend, "target": run.target, "scorer": s.scorer, "op": run.op,
            "finished_at": datetime.fromtimestamp(run.finished_at, UTC),
            "slot": datetime.fromtimestamp(run.slot, UTC) if run.slot else None,
            "breached": run.breached, "breach": "; ".join(run.breaches) or None,
            "awaiting_confirmation": run.awaiting_confirmation, "confirms": run.confirms,
            "judged_job_id": run.judged_job_id}
    low, high = run.interval or (None, None)
    rows = [base | {"kind": "run", "score": s.value, "score_low": low, "score_high": high,
                    "accuracy": s.accuracy, "macro_f1": s.macro_f1, "n": s.n,
                    "correct": s.correct, "errors": s.errors, "unparsed": s.unparsed,
                    "rows_per_sec": run.rows_per_sec,
                    "prefill_tokens_per_sec": run.prefill_tokens_per_sec,
                    "decode_tokens_per_sec": run.decode_tokens_per_sec,
                    "seconds_per_row": run.seconds_per_row,
                    "confusion": json.dumps(s.confusion) if s.confusion is not None else None,
                    "log_loss": p.log_loss if p else None, "brier": p.brier if p else None,
                    "ece": p.ece if p else None, "auc": p.auc if p else None,
                    "reliability": json.dumps([asdict(b) for b in p.reliability]) if p else None,
                    "compared_job_id": c.previous_job_id if c else None,
                    "test": c.test if c else None, "paired_rows": c.paired_rows if c else None,
                    "delta": c.delta if c else None, "p_value": c.p_value if c else None}]
    for label, stats in sorted((s.per_label or {}).items()):
        rows.append(base | {"kind": "label", "label": label, "score": stats.f1,
                            "precision": stats.precision, "recall": stats.recall,
                            "support": stats.support})
    for sl in run.slices:
        rows.append(base | {"kind": "slice", "slice": sl.slice, "score": sl.score.value,
                            "score_low": sl.interval[0], "score_high": sl.interval[1],
                            "accuracy": sl.score.accuracy, "macro_f1": sl.score.macro_f1,
                            "n": sl.score.n, "correct": sl.score.correct,
                            "errors": sl.score.errors})
    for ex in run.examples:
        rows.append(base | {"kind": "example", "custom_id": ex.custom_id,
                            "expected": ex.expected, "predicted": ex.predicted})
    return pa.Table.from_pylist(rows, schema=EVALUATIONS_SCHEMA)


def _rate(totals: dict[str, float], tokens: str, seconds: str) -> float:
    return totals.get(tokens, 0.0) / totals[seconds] if totals.get(seconds) else 0.0


def write_evaluation(sink: EvaluationSink, suite: str, job_id: str, table: pa.Table) -> None:
    """Publish a run's rows at ``evaluations/suite=<suite>/<job id>.parquet``."""
    sink.put_evaluation(suite, job_id, encode_table(table))


def read_evaluations(sink: EvaluationSink, suite: str | None = None) -> pa.Table:
    """Every evaluation row of a suite (or of all suites), oldest first."""
    return sink.read_evaluations(suite).sort_by("finished_at")
