"""One chunk's life on a worker: what a Celery task calls.

`ChunkRunner.process` loads the spec and rows, skips a chunk whose part exists
(redelivery), runs it, publishes its parts once and records it
(`jobs.lifecycle.record_chunk`, which finalizes the job after its last chunk).
Nothing here knows about Celery: `inferq run` calls the same code in-process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference import TextModel
from jobs.errors import InputLocationError, InvalidJobSpec, JobNotFound
from jobs.execute import ChunkContext, ChunkOutput, ChunkStopped, error_rows, execute_chunk
from jobs.failures import PERMANENT, Decision, FailurePolicy, Verdict
from jobs.isolate import run_isolating
from jobs.lifecycle import (
    ACTIVE,
    ChunkStatus,
    ChunkSummary,
    JobState,
    finalize,
    manifest,
    record_chunk,
    summary_from_parts,
)
from jobs.provenance import Provenance
from jobs.sinks import PartSink, encode_table
from jobs.spec import JobSpec
from jobs.store import JobStore

# Moved to `jobs.lifecycle`; the old names stay importable from here.
summary_from_disk = summary_from_parts
__all__ = ["ChunkReport", "ChunkRunner", "ModelProvider", "finalize", "manifest",
           "summary_from_disk"]

log = logging.getLogger("jobs.runner")

#: (spec) -> (model, backend name, device) ; raises when this worker cannot serve it.
ModelProvider = Callable[[JobSpec], tuple[TextModel, str, str]]
#: (spec, model, backend name) -> what produced the chunk's rows (`jobs.provenance`).
ProvenanceOf = Callable[[JobSpec, TextModel, str], Provenance]


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
    """Runs chunks for one worker; `FailurePolicy` decides what a troubled chunk does."""

    def __init__(self, store: JobStore, sink: PartSink, models: ModelProvider, *,
                 worker: str, max_attempts: int = 3,
                 provenance: ProvenanceOf | None = None) -> None:
        self.store = store
        self.sink = sink
        self.models = models
        self.provenance = provenance or (lambda spec, model, backend: Provenance())
        self.worker = worker
        self.policy = FailurePolicy(max_attempts=max_attempts)
        self.current: tuple[str, int] | None = None  #: the chunk running now
        self._counted: dict[tuple[str, int], int] = {}  #: deliveries counted, not yet ended

    @property
    def max_attempts(self) -> int:
        return self.policy.max_attempts

    def decide(self, job_id: str, chunk: int, error: BaseException) -> Decision:
        """What to do after `process` raised ``error`` on this delivery of ``chunk``.

        Asks the policy with the store's attempt count, counting this delivery first
        if it failed before `process` counted it.
        """
        attempt = self._counted.pop((job_id, chunk), None)
        if attempt is None and not isinstance(error, (JobNotFound, *PERMANENT)):
            try:
                attempt = self.store.start_attempt(job_id, chunk)
            except Exception as exc:  # the store itself is unreachable: try again later
                return Decision(Verdict.RETRY, f"{error}; counting the attempt failed: {exc}",
                                countdown=5)
        return self.policy.on_error(attempt or 1, error)

    def process(self, job_id: str, chunk: int) -> ChunkReport:
        if self.sink.has_part(job_id, chunk):  # published by an earlier delivery (rare)
            if self.store.status(job_id).terminal:
                return ChunkReport(job_id, chunk, "gone")
            if self.store.chunk_done(job_id, chunk):
                return ChunkReport(job_id, chunk, "skipped")
            summary = summary_from_parts(self.sink, job_id, chunk)
            return self._record(job_id, chunk, summary, "skipped")
        start = self.store.begin_chunk(job_id, chunk)  # one round trip: the chunk's cost
        if start.terminal:
            return ChunkReport(job_id, chunk, "gone")
        if start.recorded or start.spec is None:
            return ChunkReport(job_id, chunk, "skipped")  # a redelivery of a recorded chunk
        self._counted[job_id, chunk] = start.attempt  # for `decide`, should this delivery raise
        report = self._run(start.spec, chunk, start.attempt, start.cancel_requested)
        del self._counted[job_id, chunk]
        return report

    def _run(self, spec: JobSpec, chunk: int, attempt: int, cancelled: bool) -> ChunkReport:
        job_id = spec.job_id
        rows = self.store.get_chunk_input(job_id, chunk)
        if cancelled:
            return self._record(job_id, chunk, ChunkSummary(
                rows=0, errors=0, status=ChunkStatus.CANCELLED), "cancelled")
        if spec.deadline is not None and time.time() > spec.deadline:
            return self._fail_rows(spec, chunk, rows, ChunkStatus.EXPIRED, "expired",
                                   "the job's deadline passed before this row ran")
        decision = self.policy.on_delivery(attempt, len(rows))
        if decision.verdict == Verdict.FAIL:
            return self._fail_rows(spec, chunk, rows, ChunkStatus.FAILED, "chunk_failed",
                                   decision.reason)
        self.current = (job_id, chunk)  # the job is in_progress: `begin_chunk` moved it
        try:
            model, backend, device = self.models(spec)
            ctx = ChunkContext(job_id=job_id, chunk=chunk, backend=backend, worker=self.worker,
                               device=device, provenance=self.provenance(spec, model, backend))
            if decision.verdict == Verdict.ISOLATE:  # it killed its worker: find the row
                output = run_isolating(model, spec, rows, ctx, self.store)
            else:
                output = execute_chunk(model, spec, rows, ctx,
                                       should_stop=lambda: self.store.cancel_requested(job_id))
        except ChunkStopped:
            return self._record(job_id, chunk, ChunkSummary(
                rows=0, errors=0, status=ChunkStatus.CANCELLED), "cancelled")
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
        try:
            rows = self.store.get_chunk_input(job_id, chunk)
        except (InputLocationError, OSError) as exc:  # set up apart from the submitter, or
            # an object store that refuses this worker: no row can be read, none answered
            self.store.set_state(job_id, JobState.FAILED, only_from=ACTIVE,
                                 error=f"chunk {chunk}: worker {self.worker}: {exc}"[:1000])
            return ChunkReport(job_id, chunk, "failed")
        if self.store.cancel_requested(job_id):  # its delivery is counted: see `jobs.cancel`
            return self._record(job_id, chunk, ChunkSummary(
                rows=0, errors=0, status=ChunkStatus.CANCELLED), "cancelled")
        try:
            return self._fail_rows(spec, chunk, rows, ChunkStatus.FAILED, "chunk_failed", reason)
        except OSError as exc:  # not even error rows can be written: the job cannot end whole
            if str(exc) not in reason:
                reason = f"{reason}; writing its error rows failed too: {exc}"
            self.store.set_state(job_id, JobState.FAILED,
                                 error=f"chunk {chunk}: {reason}"[:1000], only_from=ACTIVE)
            self.store.drop_inputs(job_id)
            return ChunkReport(job_id, chunk, "failed")

    # -- internals --------------------------------------------------------------------

    def _fail_rows(self, spec: JobSpec, chunk: int, rows: list[Any], status: str, code: str,
                   message: str) -> ChunkReport:
        ctx = ChunkContext(job_id=spec.job_id, chunk=chunk, backend=spec.backend,
                           worker=self.worker)
        table = error_rows(spec, rows, ctx, code, message)
        if not self.sink.put_part(spec.job_id, chunk, "results", encode_table(table)):
            # another delivery, or the expiry sweep, published first: its part is the truth
            return self._record(spec.job_id, chunk,
                                summary_from_parts(self.sink, spec.job_id, chunk), "skipped")
        summary = ChunkSummary(rows=len(rows), errors=len(rows), status=status,
                               worker=self.worker, reason=message)
        return self._record(spec.job_id, chunk, summary, status)

    def _publish(self, job_id: str, chunk: int, output: ChunkOutput) -> ChunkReport:
        won = self.sink.put_part(job_id, chunk, "results", encode_table(output.results))
        self.sink.put_part(job_id, chunk, "metrics", encode_table(output.metrics))
        if not won:  # another delivery published first: its part is the truth
            summary = summary_from_parts(self.sink, job_id, chunk)
            return self._record(job_id, chunk, summary, "skipped")
        self.store.publish_rows(job_id, output.results.to_pylist())
        return self._record(job_id, chunk, output.summary, "ran")

    def _record(self, job_id: str, chunk: int, summary: ChunkSummary,
                outcome: str) -> ChunkReport:
        finalized = record_chunk(self.store, self.sink, job_id, chunk, summary)
        return ChunkReport(job_id, chunk, outcome, summary.rows, summary.errors, finalized)
