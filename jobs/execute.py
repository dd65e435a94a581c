"""Run one chunk of rows against any `TextModel`: result rows and the chunk's metrics.

Rows are sent to the model in batches; between batches ``should_stop`` is asked
whether to give up (cancellation). Rows that cannot run become error rows; a
chunk always yields exactly one result row per input row.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pyarrow as pa

from inference import (
    BatchResult,
    ClassifyResult,
    GenerateMetrics,
    GenerateOptions,
    InferenceError,
    Message,
    TextModel,
)
from inference.model import ChatNative, ChatRenderer
from jobs import calibrate
from jobs.lifecycle import ChunkSummary
from jobs.provenance import Provenance
from jobs.rows import InputRow
from jobs.schema import MetricRow, ResultRow, metrics_table, results_table
from jobs.spec import JobSpec

DEFAULT_BATCH = 64


class ChunkStopped(Exception):
    """``should_stop`` said yes between batches."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkContext:
    """Where a chunk runs: for the provenance columns."""

    job_id: str
    chunk: int
    backend: str
    worker: str
    device: str = "cpu"
    provenance: Provenance = field(default_factory=Provenance)  #: jobs.provenance


@dataclass(frozen=True, slots=True)
class ChunkOutput:
    results: pa.Table
    metrics: pa.Table
    summary: ChunkSummary


def execute_chunk(model: TextModel, spec: JobSpec, rows: Sequence[InputRow],
                  ctx: ChunkContext, *, batch_size: int = DEFAULT_BATCH,
                  should_stop: Callable[[], bool] = lambda: False) -> ChunkOutput:
    """Run ``rows`` through ``model`` as ``spec`` says."""
    started = datetime.now(UTC)
    clock = time.perf_counter()
    ctx = replace(ctx, provenance=replace(ctx.provenance, batch_size=batch_size))
    out: list[ResultRow] = []
    totals = _Totals()
    for first in range(0, len(rows), batch_size):
        if first and should_stop():
            raise ChunkStopped()
        batch = rows[first:first + batch_size]
        out.extend(_run_batch(model, spec, batch, ctx, totals))
    return chunk_output(spec, ctx, out, totals.metrics(time.perf_counter() - clock), started)


def chunk_output(spec: JobSpec, ctx: ChunkContext, out: list[ResultRow],
                 m: GenerateMetrics, started: datetime) -> ChunkOutput:
    """The chunk's result and metrics tables and its summary, from its result rows."""
    now = datetime.now(UTC)
    for row in out:
        row.completed_at = now
    errors = sum(r.error_code is not None for r in out)
    metrics = MetricRow(
        job_id=ctx.job_id, chunk=ctx.chunk, model=spec.model, backend=ctx.backend,
        worker=ctx.worker, host=socket.gethostname(), device=ctx.device,
        rows=len(out), errors=errors, prompt_tokens=m.prompt_tokens,
        generated_tokens=m.generated_tokens, prefill_seconds=m.prefill_seconds,
        decode_seconds=m.decode_seconds, total_seconds=m.total_seconds,
        prefill_tokens_per_sec=m.prefill_tokens_per_sec,
        decode_tokens_per_sec=m.decode_tokens_per_sec,
        peak_memory_bytes=m.peak_memory_bytes, active_memory_bytes=m.active_memory_bytes,
        started_at=started, finished_at=now, **ctx.provenance.columns())
    summary = ChunkSummary(rows=len(out), errors=errors, worker=ctx.worker, backend=ctx.backend,
                           prompt_tokens=m.prompt_tokens, generated_tokens=m.generated_tokens,
                           prefill_seconds=m.prefill_seconds, decode_seconds=m.decode_seconds,
                           total_seconds=m.total_seconds, provenance=ctx.provenance.to_dict())
    return ChunkOutput(results=results_table(out), metrics=metrics_table([metrics]),
                       summary=summary)


def error_result_rows(spec: JobSpec, rows: Sequence[InputRow], ctx: ChunkContext, code: str,
                      message: str) -> list[ResultRow]:
    """Every row of a chunk that could not run at all (failed, expired), as error rows."""
    out = []
    for row in rows:
        result = _base(spec, row, ctx)
        result.error_code, result.error_message = code, message
        result.finish_reason = "error" if spec.op == "generate" else None
        out.append(result)
    return out


def error_rows(spec: JobSpec, rows: Sequence[InputRow], ctx: ChunkContext, code: str,
               message: str) -> pa.Table:
    """`error_result_rows` as a results table, completed now."""
    now = datetime.now(UTC)
    out = error_result_rows(spec, rows, ctx, code, message)
    for row in out:
        row.completed_at = now
    return results_table(out)


def _base(spec: JobSpec, row: InputRow, ctx: ChunkContext) -> ResultRow:
    return ResultRow(job_id=ctx.job_id, row_index=row.index, custom_id=row.custom_id,
                     chunk=ctx.chunk, op=spec.op, chat=row.messages is not None,
                     model=spec.model, backend=ctx.backend, worker=ctx.worker,
                     expected=row.expected)


#: What a row sends to the model: its prompt text, or its conversation for a model that
#: takes conversations as they are (`ChatNative`: a server applies its own template).
Item = str | tuple[Message, ...]


def prompt_item(model: TextModel, row: InputRow) -> Item | None:
    """``row`` as ``model`` takes it; None when the model can take no chat."""
    if row.prompt is not None:
        return row.prompt
    if row.messages and isinstance(model, ChatNative):
        return row.messages
    if row.messages and isinstance(model, ChatRenderer):
        return model.render_chat(row.messages)
    return None


def classify_items(model: TextModel, items: Sequence[Item], options: GenerateOptions
                   ) -> list[ClassifyResult]:
    if all(isinstance(item, str) for item in items):
        return model.classify([str(item) for item in items], options)
    assert isinstance(model, ChatNative)  # only it is given conversations (prompt_item)
    return model.classify_chat(items, options)


def generate_items(model: TextModel, items: Sequence[Item], options: GenerateOptions
                   ) -> list[BatchResult]:
    if all(isinstance(item, str) for item in items):
        return model.batch_generate([str(item) for item in items], options)
    assert isinstance(model, ChatNative)
    return model.batch_chat(items, options)


#: Rows to run, by the options they run with (a row's own over the job's) and the labels
#: as the user wrote them: the rows' positions in the batch and what each sends.
_Groups = dict[tuple[GenerateOptions, tuple[str, ...]], list[tuple[int, Item]]]


def _run_batch(model: TextModel, spec: JobSpec, batch: Sequence[InputRow], ctx: ChunkContext,
               totals: _Totals) -> list[ResultRow]:
    out = [_base(spec, row, ctx) for row in batch]
    for (options, labels), members in _group(model, spec, batch, out).items():
        prompts = [text for _, text in members]
        if spec.op == "classify":
            references: dict[int, dict[str, float]] = {}
            if spec.calibrate == "contextual" and options.labels:
                members, references = _content_free(model, spec, batch, members, options, out)
                prompts = [text for _, text in members]
            for (k, _), c in zip(members, classify_items(model, prompts, options),
                                 strict=True):
                _set_classified(out[k], c, spec, dict(zip(options.labels, labels, strict=True)),
                                references.get(k))
        else:
            for (k, _), g in zip(members, generate_items(model, prompts, options),
                                 strict=True):
                _set_generated(out[k], g, options)
        totals.add(model.metrics())
    for result_row in out:
        if spec.op == "generate" and result_row.error_code and not result_row.finish_reason:
            result_row.finish_reason = "error"
    return out


def _group(model: TextModel, spec: JobSpec, batch: Sequence[InputRow], out: list[ResultRow]
           ) -> _Groups:
    """The batch's runnable rows grouped by their options; the others made error rows."""
    groups: _Groups = {}
    for k, row in enumerate(batch):
        problem = _row_problem(spec, row)
        if problem is not None:
            out[k].error_code, out[k].error_message = problem
            continue
        try:
            text = prompt_item(model, row)
        except InferenceError as exc:
            out[k].error_code, out[k].error_message = "template_error", str(exc)
            continue
        if text is None:
            out[k].error_code = "unsupported"
            out[k].error_message = "this backend cannot render chat messages"
            continue
        own = {key: v for key, v in (row.options or {}).items() if key != "calibrate"}
        options = replace(spec.options, **own) if own else spec.options
        labels = options.labels
        if spec.op == "classify" and labels:
            # Labels continue the prompt as a new word: scored with a leading space
            # after a prompt that does not end in whitespace (jobs/calibrate.py).
            space = isinstance(text, str) and calibrate.needs_space(text)
            scored = tuple(calibrate.scored_label(label, space) for label in labels)
            if len(set(scored)) < len(scored):
                out[k].error_code = "ambiguous_labels"
                out[k].error_message = (
                    f"labels {', '.join(map(repr, labels))} are scored as "
                    f"{', '.join(map(repr, scored))} after this prompt (a label continues "
                    "it as a new word): two are the same; make them differ")
                continue
            options = replace(options, labels=scored)
        groups.setdefault((options, labels), []).append((k, text))
    return groups


def _content_free(model: TextModel, spec: JobSpec, batch: Sequence[InputRow],
                  members: list[tuple[int, Item]], options: GenerateOptions,
                  out: list[ResultRow]
                  ) -> tuple[list[tuple[int, Item]], dict[int, dict[str, float]]]:
    """Contextual calibration (jobs/calibrate.py): each row's content-free input, scored
    once per distinct text. The members that can run, and each one's content-free
    probabilities; a row with no usable content-free input becomes an error row."""
    texts: dict[int, Item] = {}
    for k, _ in members:
        text = calibrate.content_free_item(model, spec, batch[k])
        if text is None:
            out[k].error_code = "calibration_unavailable"
            out[k].error_message = calibrate.NO_CONTENT_FREE
        else:
            texts[k] = text
    distinct = list(dict.fromkeys(texts.values()))
    scored = dict(zip(distinct, classify_items(model, distinct, options), strict=True))
    references: dict[int, dict[str, float]] = {}
    for k, text in texts.items():
        reference = scored[text]
        if reference.error is not None or not reference.label_probs:
            out[k].error_code = "calibration_unavailable"
            out[k].error_message = f"the content-free input cannot run: {reference.error}"
            continue
        references[k] = reference.label_probs
    return [(k, text) for k, text in members if k in references], references


def _row_problem(spec: JobSpec, row: InputRow) -> tuple[str, str] | None:
    """Why ``row`` cannot run in this job, as (code, message); None when it can."""
    if not row.ok:
        return str(row.error_code), str(row.error_message)
    if row.model is not None and row.model != spec.model:
        return ("mismatched_model", f"the request names model {row.model!r}; this job runs "
                f"{spec.model!r}: submit the row with that model, or drop body.model")
    if spec.op == "generate" and row.options and row.options.get("labels"):
        return ("invalid_parameter", "body.labels applies to classification; this job "
                "generates text")
    calibration = row.options.get("calibrate") if row.options else None
    if calibration is not None and calibration != spec.calibrate:
        return ("invalid_parameter", f"body.calibrate={calibration!r} differs from the "
                f"job's calibration, {spec.calibrate!r}: a job calibrates all its rows "
                "one way (inferq submit --calibrate, or every line of a batch alike)")
    if spec.op == "classify" and row.options and row.options.get("logprobs"):
        return ("invalid_parameter", "body.logprobs applies to generation; a "
                "classification's output carries every label's probability")
    return None


def _set_classified(row: ResultRow, result: ClassifyResult, spec: JobSpec,
                    names: dict[str, str], content_free: dict[str, float] | None = None
                    ) -> None:
    if result.error is not None:
        row.error_code, row.error_message = result.error.code, str(result.error)
        row.prompt_tokens = result.prompt_tokens
        return
    row.token_id = result.token.id if result.token else None
    row.text = result.token.text if result.token else None
    row.prompt_tokens, row.generated_tokens = result.prompt_tokens, 0
    if not result.label_probs:
        return
    # "batch" is applied when the job finalizes; until then a row holds the raw ones.
    now = spec.calibrate if spec.calibrate in calibrate.ROW_METHODS else "none"
    probs = calibrate.with_priors(
        calibrate.calibrated_probs(result, now, names, content_free) or {}, spec.label_priors)
    row.label = calibrate.winner(probs)
    row.label_prob = probs[row.label]
    row.label_probs = [{"label": k, "prob": v} for k, v in probs.items()]
    row.calibration = now
    if now != "none" or spec.label_priors:
        raw = calibrate.calibrated_probs(result, "none", names) or {}
        row.raw_label_probs = [{"label": k, "prob": v} for k, v in raw.items()]


def _set_generated(row: ResultRow, result: BatchResult, options: GenerateOptions) -> None:
    if result.error is not None:
        row.error_code, row.error_message = result.error.code, str(result.error)
        row.finish_reason = "error"
        return
    if options.logprobs and any(t.logprob is None for t in result.tokens):
        row.error_code, row.finish_reason = "unsupported_parameter", "error"
        row.error_message = (f"the {row.backend} backend does not report log-probabilities; "
                             "drop logprobs, or run the job on llama_cpp or mlx")
        return
    row.text, row.generated_tokens = result.text, len(result.tokens)
    row.prompt_tokens, row.finish_reason = result.prompt_tokens, result.finish_reason
    if options.logprobs:
        row.logprobs = [{"token": t.text, "logprob": t.logprob,
                         "top_logprobs": [{"token": text, "logprob": lp}
                                          for text, lp in t.top_logprobs]}
                        for t in result.tokens]


class _Totals:
    """Sums `GenerateMetrics` over a chunk's batches."""

    def __init__(self) -> None:
        self.prompt = self.generated = self.peak = self.active = 0
        self.prefill = self.decode = 0.0

    def add(self, m: GenerateMetrics) -> None:
        self.prompt += m.prompt_tokens
        self.generated += m.generated_tokens
        self.prefill += m.prefill_seconds
        self.decode += m.decode_seconds
        self.peak = max(self.peak, m.peak_memory_bytes)
        self.active = m.active_memory_bytes

    def metrics(self, total_seconds: float) -> GenerateMetrics:
        return GenerateMetrics(prompt_tokens=self.prompt, generated_tokens=self.generated,
                               prefill_seconds=self.prefill, decode_seconds=self.decode,
                               total_seconds=total_seconds, peak_memory_bytes=self.peak,
                               active_memory_bytes=self.active)


#: The former name of `execute_chunk` (the Celery task and `ChunkRunner.process` were
#: called "run chunk" too); kept importable.
run_chunk = execute_chunk
