"""A job's life, in one place: its states, its status, a chunk's record, finalize, manifest.

States, after the OpenAI Batch API::

    validating -> queued -> in_progress -> finalizing -> completed | failed | expired
                          \\-> cancelling -> cancelled

`JobState` is a `StrEnum`: its members equal the strings stored in Redis and shown
by the command line. A chunk, once it has run (or could not), is recorded once by
`record_chunk`; the call that records the last chunk runs `finalize`, which picks
the terminal state, scores an evaluation run, writes ``manifest.json`` and drops
the chunk inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.evaluate import record_evaluation
from jobs.provenance import PROVENANCE_COLUMNS, distinct
from jobs.schema import METRICS_SCHEMA_VERSION, SCHEMA_VERSION, SUMMARY_METRICS
from jobs.sinks import SINGLE_THREADED, EvaluationSink

if TYPE_CHECKING:
    from jobs.sinks import PartSink
    from jobs.spec import JobSpec
    from jobs.store import JobStore


class JobState(StrEnum):
    """Where a job is; equal to the string stored and shown."""

    VALIDATING = "validating"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


#: Every state, in lifecycle order.
STATES: tuple[JobState, ...] = tuple(JobState)
#: States that end a job: nothing moves it again.
TERMINAL: tuple[JobState, ...] = (JobState.COMPLETED, JobState.FAILED, JobState.EXPIRED,
                                  JobState.CANCELLED)
#: States a job can still leave.
ACTIVE: tuple[JobState, ...] = tuple(s for s in STATES if s not in TERMINAL)


class ChunkStatus(StrEnum):
    """How a recorded chunk ended."""

    OK = "ok"                #: its part holds every row (some may be error rows)
    FAILED = "failed"        #: its part holds every row as a ``chunk_failed`` error row
    EXPIRED = "expired"      #: its part holds every row as an ``expired`` error row
    CANCELLED = "cancelled"  #: no part: cancelled before it ran


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkSummary:
    """What one chunk left behind; recorded once per chunk (see `ChunkStatus`)."""

    rows: int
    errors: int
    status: str = ChunkStatus.OK
    worker: str = ""
    backend: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)  #: `Provenance.to_dict()`

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkSummary:
        """From `to_dict`; keys a newer inferq added are ignored (workers of two versions
        share the done-hash during an upgrade)."""
        return cls(**{k: v for k, v in data.items() if k in _SUMMARY_FIELDS})


_SUMMARY_FIELDS = frozenset(f.name for f in fields(ChunkSummary))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStatus:
    """A job as the store sees it now."""

    job_id: str
    state: str                   #: a `JobState` value
    total: int
    completed: int               #: rows with a result
    failed: int                  #: error rows
    chunks: int
    chunks_done: int
    timestamps: dict[str, float] = field(default_factory=dict)
    error: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  #: backend -> totals
    alert: str = ""              #: an evaluation threshold this run breached

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def done_rows(self) -> int:
        return self.completed + self.failed


def record_chunk(store: JobStore, sink: PartSink, job_id: str, chunk: int,
                 summary: ChunkSummary) -> bool:
    """Record ``chunk`` once; finalize the job if it was the last. True if this call
    finalized it."""
    counts = store.complete_chunk_counts(job_id, chunk, summary)
    if counts is not None and counts[0] >= counts[1]:
        return finalize(store, sink, job_id)
    return False


def final_state(outcomes: set[str], cancel_requested: bool) -> JobState:
    """The terminal state of a job whose chunks ended with ``outcomes``."""
    if ChunkStatus.CANCELLED in outcomes or cancel_requested:
        return JobState.CANCELLED
    if ChunkStatus.FAILED in outcomes:
        return JobState.FAILED
    if ChunkStatus.EXPIRED in outcomes:
        return JobState.EXPIRED
    return JobState.COMPLETED


def finalize(store: JobStore, sink: PartSink, job_id: str) -> bool:
    """End a job whose chunks are all recorded: manifest, terminal state. Runs once."""
    if not store.claim_finalize(job_id):
        return False
    status = store.status(job_id)
    if status.terminal:
        return False
    chunks = store.done_chunks(job_id)
    final = final_state({s.status for s in chunks.values()}, store.cancel_requested(job_id))
    if final != JobState.CANCELLED:
        store.set_state(job_id, JobState.FINALIZING)
    spec = store.get_spec(job_id)
    if spec.op == "classify" and spec.calibrate == "batch":
        from jobs.calibrate import calibrate_job  # on use: classify jobs that ask for it

        calibrate_job(sink, job_id, [c for c in sorted(chunks) if sink.has_part(job_id, c)],
                      spec.label_priors)
    if spec.evaluation and final == JobState.COMPLETED and isinstance(sink, EvaluationSink):
        record_evaluation(store, sink, spec)
    status = store.status(job_id)
    sink.put_document(job_id, "manifest.json", manifest(spec, status, chunks, final))
    reasons = sorted({s.reason for s in chunks.values() if s.reason})
    store.set_state(job_id, final, error="; ".join(reasons)[:1000])
    store.drop_inputs(job_id)
    sink.remove_temporaries(job_id)  # left by writers that died before publishing
    return True


def manifest(spec: JobSpec, status: JobStatus, chunks: dict[int, ChunkSummary],
             state: str) -> dict[str, Any]:
    """The job's closing record, written next to its parts."""
    cancelled = ChunkStatus.CANCELLED
    return {
        "job_id": spec.job_id, "state": str(state), "schema_version": SCHEMA_VERSION,
        "metrics_schema_version": METRICS_SCHEMA_VERSION,
        "spec": spec.to_dict(),
        "request_counts": {"total": status.total, "completed": status.completed,
                           "failed": status.failed},
        "chunks": {"total": status.chunks,
                   "parts": sorted(c for c, s in chunks.items() if s.status != cancelled),
                   "cancelled": sorted(c for c, s in chunks.items() if s.status == cancelled)},
        "metrics": status.metrics, "alert": status.alert,
        "timestamps": status.timestamps,
        "provenance": distinct((c, s.provenance) for c, s in chunks.items()),
    }


def summary_from_parts(sink: PartSink, job_id: str, chunk: int) -> ChunkSummary:
    """A chunk's summary rebuilt from its published parts (the truth after a redelivery)."""
    table = pq.read_table(pa.BufferReader(sink.read_part(job_id, chunk)),
                          columns=["error_code", "worker", "backend"], **SINGLE_THREADED)
    errors = table.num_rows - table.column("error_code").null_count
    worker = table.column("worker")[0].as_py() if table.num_rows else ""
    backend = table.column("backend")[0].as_py() if table.num_rows else ""
    tokens: dict[str, Any] = {}
    if sink.has_part(job_id, chunk, "metrics"):
        metrics = pq.read_table(pa.BufferReader(sink.read_part(job_id, chunk, "metrics")),
                                **SINGLE_THREADED)
        row = metrics.to_pylist()[0]
        tokens = {k: row[k] for k in SUMMARY_METRICS}
        tokens["provenance"] = {k: row[k] for k in PROVENANCE_COLUMNS
                                if row.get(k) is not None}  # none in a part before v4
    status = ChunkStatus.OK if errors < table.num_rows or not table.num_rows \
        else _all_error_status(table)
    return ChunkSummary(rows=table.num_rows, errors=errors, worker=worker or "",
                        backend=backend or "", status=status, **tokens)


def _all_error_status(table: pa.Table) -> ChunkStatus:
    """A part of nothing but error rows: ``failed``/``expired`` if the whole chunk was."""
    codes = set(table.column("error_code").to_pylist())
    if len(codes) != 1:
        return ChunkStatus.OK
    return {"chunk_failed": ChunkStatus.FAILED,
            "expired": ChunkStatus.EXPIRED}.get(codes.pop(), ChunkStatus.OK)
