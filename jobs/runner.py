"""One chunk's life on a worker, and a job's end: what a Celery task calls.

`process_chunk` loads the spec and rows, skips a chunk whose part exists
(redelivery), runs it, publishes its parts once, records completion by set
membership, and finalizes the job when this was the last chunk. Nothing here
knows about Celery: `inferq run` calls the same code in-process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from inference import TextModel
from jobs.errors import InvalidJobSpec
from jobs.execute import ChunkContext, ChunkOutput, ChunkStopped, error_rows, run_chunk
from jobs.isolate import isolation_budget, run_isolating
from jobs.schema import SCHEMA_VERSION
from jobs.sinks import ParquetSink, PartSink, encode_table
from jobs.spec import JobSpec
from jobs.store import STATES, TERMINAL, ChunkSummary, JobStore

log = logging.getLogger("jobs.runner")

#: (spec) -> (model, backend name, device) ; raises when this worker cannot serve it.
ModelProvider = Callable[[JobSpec], tuple[TextModel, str, str]]


@dataclass(frozen=True, slots=True)
class ChunkReport:
    """What `process_chunk` did, for the task's return value and logs."""

    job_id: str
    chunk: int
    outcome: str          #: ran | skipped (part existed) | cancelled | failed | expired | gone
    rows: int = 0
    errors: int = 0
    finalized: bool = False


class ChunkRunner:
    """Runs chunks for one worker."""

    def __init__(self, store: JobStore, sink: PartSink, models: ModelProvider, *,
                 worker: str, max_attempts: int = 3) -> None:
        self.store = store
        self.sink = sink
        self.models = models
        self.worker = worker
        self.max_attempts = max_attempts
        self.current: tuple[str, int] | None = None  #: the chunk running now

    def process(self, job_id: str, chunk: int) -> ChunkReport:
        status = self.store.status(job_id)
        if status.terminal:
            return ChunkReport(job_id, chunk, "gone")
        if self.store.chunk_done(job_id, chunk):
            return ChunkReport(job_id, chunk, "skipped")  # a redelivery of a recorded chunk
        if self.sink.has_part(job_id, chunk):
            summary = summary_from_disk(self.sink, job_id, chunk)
            return self._record(job_id, chunk, summary, "skipped")
        spec = self.store.get_spec(job_id)
        attempt = self.store.start_attempt(job_id, chunk)
        rows = self.store.get_chunk_input(job_id, chunk)
        if self.store.cancel_requested(job_id):
            return self._record(job_id, chunk, ChunkSummary(rows=0, errors=0,
                                                            status="cancelled"), "cancelled")
        if spec.deadline is not None and time.time() > spec.deadline:
            return self._fail_rows(spec, chunk, rows, "expired", "expired",
                                   "the job's deadline passed before this row ran")
        if attempt > isolation_budget(len(rows), self.max_attempts):
            return self._fail_rows(spec, chunk, rows, "failed", "chunk_failed",
                                   f"chunk failed {attempt - 1} times; giving up")
        self.store.set_state(job_id, "in_progress", only_from=("queued",))
        self.current = (job_id, chunk)
        try:
            model, backend, device = self.models(spec)
            ctx = ChunkContext(job_id=job_id, chunk=chunk, backend=backend, worker=self.worker,
                               device=device)
            if attempt > self.max_attempts:  # it killed its worker every time: find the row
                output = run_isolating(model, spec, rows, ctx, self.store)
            else:
                output = run_chunk(model, spec, rows, ctx,
                                   should_stop=lambda: self.store.cancel_requested(job_id))
        except ChunkStopped:
            return self._record(job_id, chunk, ChunkSummary(rows=0, errors=0,
                                                            status="cancelled"), "cancelled")
        finally:
            self.current = None
        return self._publish(job_id, chunk, output)

    def fail_chunk(self, job_id: str, chunk: int, reason: str) -> ChunkReport:
        """Record every row of a chunk that cannot run as an error row (permanent failure)."""
        try:
            spec = self.store.get_spec(job_id)
        except InvalidJobSpec as exc:  # e.g. a spec from a newer inferq than this worker
            spec = JobSpec(op="classify", model="unknown", job_id=job_id)
            reason = f"this worker cannot read the job's spec ({exc}); {reason}"
        rows = self.store.get_chunk_input(job_id, chunk)
        try:
            return self._fail_rows(spec, chunk, rows, "failed", "chunk_failed", reason)
        except OSError as exc:  # not even error rows can be written: the job cannot end whole
            if str(exc) not in reason:
                reason = f"{reason}; writing its error rows failed too: {exc}"
            self.store.set_state(job_id, "failed", error=f"chunk {chunk}: {reason}"[:1000],
                                 only_from=[s for s in STATES if s not in TERMINAL])
            self.store.drop_inputs(job_id)
            return ChunkReport(job_id, chunk, "failed")

    # -- internals --------------------------------------------------------------------

    def _fail_rows(self, spec: JobSpec, chunk: int, rows: list[Any], status: str, code: str,
                   message: str) -> ChunkReport:
        ctx = ChunkContext(job_id=spec.job_id, chunk=chunk, backend=spec.backend,
                           worker=self.worker)
        table = error_rows(spec, rows, ctx, code, message)
        self.sink.put_part(spec.job_id, chunk, "results", encode_table(table))
        summary = ChunkSummary(rows=len(rows), errors=len(rows), status=status,
                               worker=self.worker, reason=message)
        return self._record(spec.job_id, chunk, summary, status)

    def _publish(self, job_id: str, chunk: int, output: ChunkOutput) -> ChunkReport:
        won = self.sink.put_part(job_id, chunk, "results", encode_table(output.results))
        self.sink.put_part(job_id, chunk, "metrics", encode_table(output.metrics))
        if not won:  # another delivery published first: its part is the truth
            summary = summary_from_disk(self.sink, job_id, chunk)
            return self._record(job_id, chunk, summary, "skipped")
        self.store.publish_rows(job_id, output.results.to_pylist())
        return self._record(job_id, chunk, output.summary, "ran")

    def _record(self, job_id: str, chunk: int, summary: ChunkSummary,
                outcome: str) -> ChunkReport:
        done = self.store.complete_chunk(job_id, chunk, summary)
        finalized = False
        if done is not None and done >= self.store.status(job_id).chunks:
            finalized = finalize(self.store, self.sink, job_id)
        return ChunkReport(job_id, chunk, outcome, summary.rows, summary.errors, finalized)


def summary_from_disk(sink: PartSink, job_id: str, chunk: int) -> ChunkSummary:
    """A chunk's summary rebuilt from its published parts (the truth after a redelivery)."""
    table = pq.read_table(pa.BufferReader(sink.read_part(job_id, chunk)),
                          columns=["error_code", "worker", "backend"])
    errors = table.num_rows - table.column("error_code").null_count
    worker = table.column("worker")[0].as_py() if table.num_rows else ""
    backend = table.column("backend")[0].as_py() if table.num_rows else ""
    tokens: dict[str, Any] = {}
    if sink.has_part(job_id, chunk, "metrics"):
        metrics = pq.read_table(pa.BufferReader(sink.read_part(job_id, chunk, "metrics")))
        row = metrics.to_pylist()[0]
        tokens = {k: row[k] for k in ("prompt_tokens", "generated_tokens", "prefill_seconds",
                                      "decode_seconds", "total_seconds")}
    status = "ok" if errors < table.num_rows or not table.num_rows else _all_error_status(table)
    return ChunkSummary(rows=table.num_rows, errors=errors, worker=worker or "",
                        backend=backend or "", status=status, **tokens)


def _all_error_status(table: pa.Table) -> str:
    """A part of nothing but error rows: ``failed``/``expired`` if the whole chunk was."""
    codes = set(table.column("error_code").to_pylist())
    return {"chunk_failed": "failed", "expired": "expired"}.get(codes.pop(), "ok") \
        if len(codes) == 1 else "ok"


def finalize(store: JobStore, sink: PartSink, job_id: str) -> bool:
    """End a job whose chunks are all recorded: manifest, terminal state. Runs once."""
    if not store.claim_finalize(job_id):
        return False
    status = store.status(job_id)
    if status.terminal:
        return False
    chunks = store.done_chunks(job_id)
    outcomes = {s.status for s in chunks.values()}
    if "cancelled" in outcomes or store.cancel_requested(job_id):
        final = "cancelled"
    elif "failed" in outcomes:
        final = "failed"
    elif "expired" in outcomes:
        final = "expired"
    else:
        final = "completed"
    if final != "cancelled":
        store.set_state(job_id, "finalizing")
    spec = store.get_spec(job_id)
    if spec.evaluation and final == "completed" and isinstance(sink, ParquetSink):
        record_evaluation(store, sink, spec)
    status = store.status(job_id)
    sink.put_document(job_id, "manifest.json", manifest(spec, status, chunks, final))
    reasons = sorted({s.reason for s in chunks.values() if s.reason})
    store.set_state(job_id, final, error="; ".join(reasons)[:1000])
    store.drop_inputs(job_id)
    if isinstance(sink, ParquetSink):
        sink.remove_temporaries(job_id)  # left by writers that died before publishing
    return True


def record_evaluation(store: JobStore, sink: ParquetSink, spec: JobSpec) -> None:
    """Score an evaluation run; write its rows, its Redis record and any alert."""
    from jobs.evaluate import breaches, evaluation_table, score_job, write_evaluation

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


def manifest(spec: JobSpec, status: Any, chunks: dict[int, ChunkSummary],
             state: str) -> dict[str, Any]:
    """The job's closing record, written next to its parts."""
    return {
        "job_id": spec.job_id, "state": state, "schema_version": SCHEMA_VERSION,
        "spec": spec.to_dict(),
        "request_counts": {"total": status.total, "completed": status.completed,
                           "failed": status.failed},
        "chunks": {"total": status.chunks, "parts": sorted(c for c, s in chunks.items()
                                                            if s.status != "cancelled"),
                   "cancelled": sorted(c for c, s in chunks.items() if s.status == "cancelled")},
        "metrics": status.metrics, "alert": status.alert,
        "timestamps": status.timestamps,
    }


