"""The job store contract (status, chunk inputs, completion by membership) and its
in-memory implementation, used by `inferq run` and by tests of the job domain.

`jobs.redis_store.RedisJobStore` is the shared implementation; both pass the same
contract tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jobs.errors import ChunkInputMissing, JobNotFound
from jobs.eval_store import EvalStore, MemoryEvalStore
from jobs.lifecycle import STATES, TERMINAL, ChunkSummary, JobState, JobStatus
from jobs.rows import InputRow, decode_chunk, encode_chunk
from jobs.schema import METRIC_FIELDS
from jobs.spec import JobSpec

# Status types live in `jobs.lifecycle`; re-exported here, where they were first.
__all__ = ["METRIC_FIELDS", "STATES", "TERMINAL", "ChunkStart", "ChunkSummary", "JobStatus",
           "JobStore", "MemoryJobStore"]


@dataclass(frozen=True, slots=True)
class ChunkStart:
    """What one delivery of a chunk found as it began (`JobStore.begin_chunk`)."""

    state: str                      #: the job's state, after the call
    recorded: bool = False          #: the chunk is recorded already: a redelivery
    attempt: int = 0                #: this delivery's number; 0 = not counted (ended, recorded)
    cancel_requested: bool = False
    spec: JobSpec | None = None     #: the job's spec when the delivery was counted

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

class JobStore(Protocol):
    """Where job state lives. Every method is safe to call twice (redelivery)."""

    evaluations: EvalStore  #: evaluation scores, beside the jobs

    def create_job(self, spec: JobSpec, *, total: int, chunks: int) -> bool:
        """Record a new job in state ``validating``; False if the id exists already."""
        ...

    def put_chunk_input(self, job_id: str, chunk: int, rows: Sequence[InputRow]) -> None: ...

    def get_chunk_input(self, job_id: str, chunk: int) -> list[InputRow]: ...

    def set_counts(self, job_id: str, *, total: int, chunks: int) -> None: ...

    def get_spec(self, job_id: str) -> JobSpec: ...

    def status(self, job_id: str) -> JobStatus: ...

    def set_state(self, job_id: str, state: str, *, error: str = "",
                  only_from: Sequence[str] = ()) -> bool:
        """Move to ``state`` (stamping ``<state>_at``); with ``only_from``, only from those."""
        ...

    def start_attempt(self, job_id: str, chunk: int) -> int:
        """Count one more delivery of ``chunk``; returns the attempt number (1 = first)."""
        ...

    def complete_chunk(self, job_id: str, chunk: int, summary: ChunkSummary) -> int | None:
        """Record ``chunk`` as done, once: the number of chunks done, or None if it was
        recorded already (a redelivery); counts and metrics move only the first time."""
        ...

    def begin_chunk(self, job_id: str, chunk: int) -> ChunkStart:
        """A delivery of ``chunk`` begins: unless the job has ended or the chunk is
        recorded, count the attempt and move a queued job with no cancel requested to
        ``in_progress``. One call (one round trip to Redis) for what a worker asked in
        six: the status, the chunk's record, the spec, the attempt, the cancel flag."""
        ...

    def complete_chunk_counts(self, job_id: str, chunk: int,
                              summary: ChunkSummary) -> tuple[int, int] | None:
        """`complete_chunk`, answering (chunks done, the job's chunks): whether this was
        the last, without asking the job's status again."""
        ...

    def done_chunks(self, job_id: str) -> dict[int, ChunkSummary]: ...

    def started_chunks(self, job_id: str) -> set[int]:
        """Chunks a delivery has started (`start_attempt`) or a publisher took
        (`touch_chunk`): a cancel leaves them to that delivery."""
        ...

    def touch_chunk(self, job_id: str, chunk: int) -> bool:
        """Mark ``chunk`` started without counting a delivery (the expiry runs nothing);
        True if nothing had started it before."""
        ...

    def chunk_done(self, job_id: str, chunk: int) -> bool: ...

    def load_isolation(self, job_id: str, chunk: int) -> dict[str, Any] | None:
        """The checkpoint of a chunk being run range by range (`jobs.isolate`), if any."""
        ...

    def save_isolation(self, job_id: str, chunk: int, state: dict[str, Any]) -> None: ...

    def set_alert(self, job_id: str, alert: str) -> None: ...

    def request_cancel(self, job_id: str) -> None: ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def publish_rows(self, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Append result rows to the job's live stream (capped; best effort)."""
        ...

    def claim_finalize(self, job_id: str) -> bool:
        """True for exactly one caller per job."""
        ...

    def drop_inputs(self, job_id: str) -> None: ...

    def list_jobs(self, limit: int = 20) -> list[JobStatus]: ...

    def delete_job(self, job_id: str, *, results: bool = False) -> bool:
        """Forget the job (with ``results``, its parts held by the store too); False if
        there was no such job."""
        ...


class MemoryJobStore:
    """A `JobStore` in process memory (thread-safe), for ``inferq run`` and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self.evaluations: EvalStore = MemoryEvalStore()

    def _job(self, job_id: str) -> dict[str, Any]:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    def create_job(self, spec: JobSpec, *, total: int, chunks: int) -> bool:
        with self._lock:
            if spec.job_id in self._jobs:
                return False
            self._jobs[spec.job_id] = {
                "spec": spec, "state": JobState.VALIDATING,
                "timestamps": {"validating_at": time.time()},
                "total": total, "chunks": chunks, "completed": 0, "failed": 0, "error": "",
                "inputs": {}, "done": {}, "attempts": {}, "metrics": {}, "cancel": False,
                "finalize": False, "stream": [],
            }
            return True

    def put_chunk_input(self, job_id: str, chunk: int, rows: Sequence[InputRow]) -> None:
        with self._lock:
            self._job(job_id)["inputs"][chunk] = encode_chunk(rows)  # the wire form

    def get_chunk_input(self, job_id: str, chunk: int) -> list[InputRow]:
        with self._lock:
            inputs: dict[int, dict[str, Any]] = self._job(job_id)["inputs"]
            if chunk not in inputs:
                raise ChunkInputMissing(job_id, chunk)
            return decode_chunk(inputs[chunk])

    def set_counts(self, job_id: str, *, total: int, chunks: int) -> None:
        with self._lock:
            self._job(job_id).update(total=total, chunks=chunks)

    def get_spec(self, job_id: str) -> JobSpec:
        with self._lock:
            spec: JobSpec = self._job(job_id)["spec"]
            return spec

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            j = self._job(job_id)
            return JobStatus(job_id=job_id, state=JobState(j["state"]), total=j["total"],
                             completed=j["completed"], failed=j["failed"], chunks=j["chunks"],
                             chunks_done=len(j["done"]), timestamps=dict(j["timestamps"]),
                             error=j["error"], alert=j.get("alert", ""),
                             metrics={b: dict(m) for b, m in j["metrics"].items()})

    def set_state(self, job_id: str, state: str, *, error: str = "",
                  only_from: Sequence[str] = ()) -> bool:
        with self._lock:
            j = self._job(job_id)
            if only_from and j["state"] not in only_from:
                return False
            j["state"] = state
            j["timestamps"][f"{state}_at"] = time.time()
            if error:
                j["error"] = error
            return True

    def start_attempt(self, job_id: str, chunk: int) -> int:
        with self._lock:
            attempts: dict[int, int] = self._job(job_id)["attempts"]
            attempts[chunk] = attempts.get(chunk, 0) + 1
            return attempts[chunk]

    def begin_chunk(self, job_id: str, chunk: int) -> ChunkStart:
        with self._lock:
            j = self._job(job_id)
            if j["state"] in TERMINAL or chunk in j["done"]:
                return ChunkStart(j["state"], recorded=chunk in j["done"])
            attempts: dict[int, int] = j["attempts"]
            attempts[chunk] = attempts.get(chunk, 0) + 1
            if j["state"] == JobState.QUEUED and not j["cancel"]:
                j["state"] = JobState.IN_PROGRESS
                j["timestamps"]["in_progress_at"] = time.time()
            return ChunkStart(j["state"], attempt=attempts[chunk],
                              cancel_requested=j["cancel"], spec=j["spec"])

    def complete_chunk(self, job_id: str, chunk: int, summary: ChunkSummary) -> int | None:
        counts = self.complete_chunk_counts(job_id, chunk, summary)
        return None if counts is None else counts[0]

    def complete_chunk_counts(self, job_id: str, chunk: int,
                              summary: ChunkSummary) -> tuple[int, int] | None:
        with self._lock:
            j = self._job(job_id)
            if chunk in j["done"]:
                return None
            j["done"][chunk] = summary
            j["completed"] += summary.rows - summary.errors
            j["failed"] += summary.errors
            if summary.rows:  # a cancelled chunk ran nothing
                totals = j["metrics"].setdefault(summary.backend or "-", dict.fromkeys(
                    METRIC_FIELDS, 0.0))
                for name in METRIC_FIELDS:
                    totals[name] += getattr(summary, name)
            return len(j["done"]), j["chunks"]

    def done_chunks(self, job_id: str) -> dict[int, ChunkSummary]:
        with self._lock:
            return dict(self._job(job_id)["done"])

    def chunk_done(self, job_id: str, chunk: int) -> bool:
        with self._lock:
            return chunk in self._job(job_id)["done"]

    def started_chunks(self, job_id: str) -> set[int]:
        with self._lock:
            return set(self._job(job_id)["attempts"])

    def touch_chunk(self, job_id: str, chunk: int) -> bool:
        with self._lock:
            attempts = self._job(job_id)["attempts"]
            first = chunk not in attempts
            attempts.setdefault(chunk, 0)
            return first

    def delete_job(self, job_id: str, *, results: bool = False) -> bool:
        with self._lock:
            return self._jobs.pop(job_id, None) is not None

    def load_isolation(self, job_id: str, chunk: int) -> dict[str, Any] | None:
        import copy

        with self._lock:
            state = self._job(job_id).setdefault("isolation", {}).get(chunk)
            return copy.deepcopy(state) if state is not None else None

    def save_isolation(self, job_id: str, chunk: int, state: dict[str, Any]) -> None:
        import copy

        with self._lock:
            self._job(job_id).setdefault("isolation", {})[chunk] = copy.deepcopy(state)

    def set_alert(self, job_id: str, alert: str) -> None:
        with self._lock:
            self._job(job_id)["alert"] = alert

    def request_cancel(self, job_id: str) -> None:
        with self._lock:
            self._job(job_id)["cancel"] = True

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            return bool(self._job(job_id)["cancel"])

    def publish_rows(self, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            stream: list[dict[str, Any]] = self._job(job_id)["stream"]
            stream.extend(rows)
            del stream[:-10_000]

    def claim_finalize(self, job_id: str) -> bool:
        with self._lock:
            j = self._job(job_id)
            claimed = not j["finalize"]
            j["finalize"] = True
            return claimed

    def drop_inputs(self, job_id: str) -> None:
        with self._lock:
            self._job(job_id)["inputs"].clear()

    def list_jobs(self, limit: int = 20) -> list[JobStatus]:
        with self._lock:
            ids = sorted(self._jobs, key=lambda i: -self._jobs[i]["spec"].created_at)[:limit]
        return [self.status(i) for i in ids]
