"""Delete: forget a job, and with its files, remove its results too.

`delete_job` removes every key of the job's state and its id in ``inferq:jobs``
(`keys.job_keys`); with ``files`` also its parts, metrics parts and documents under
the results root (`ParquetSink.remove_job`) and any still held in Redis. A job that
has not ended is refused: its workers would still write parts and records for it.
Cancel it first (`jobs.cancel`), or pass ``force``, which cancels it and deletes at
once (a chunk running at that moment may still write its part afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.cancel import cancel_job
from jobs.errors import JobNotFound, JobStateError
from jobs.sinks import ParquetSink
from jobs.store import JobStore


@dataclass(frozen=True, slots=True)
class DeleteReport:
    """What `delete_job` removed."""

    job_id: str
    state: str            #: the job's state before (empty: Redis held no state)
    redis: bool           #: its Redis state was removed
    files: int = 0        #: folders removed under the results root


def delete_job(store: JobStore, sink: ParquetSink, job_id: str, *, files: bool = False,
               force: bool = False) -> DeleteReport:
    """Remove the job's state (and with ``files`` its results); `JobNotFound` when
    neither Redis nor the results root knows it, `JobStateError` for a job that has not
    ended, unless ``force``."""
    try:
        status = store.status(job_id)
    except JobNotFound:
        if not (files and sink.has_document(job_id, "spec.json")):
            raise  # nothing in Redis, and nothing asked of the results root
        return DeleteReport(job_id, "", False, sink.remove_job(job_id))
    if not status.terminal:
        if not force:
            raise JobStateError(
                f"job {job_id!r} is {status.state}: cancel it first (`inferq cancel "
                f"{job_id}`), or pass --force to cancel and delete it at once")
        cancel_job(store, sink, job_id)
        store.drop_inputs(job_id)  # wherever they are kept: finalize drops them, not this
    deleted = store.delete_job(job_id, results=files)
    return DeleteReport(job_id, status.state, deleted,
                        sink.remove_job(job_id) if files else 0)
