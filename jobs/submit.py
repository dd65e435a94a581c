"""Submission: read the input streaming, validate, store chunk inputs, then enqueue.

Nothing is enqueued until the whole file has been read: a malformed file or a
duplicate custom id fails the job in ``validating`` with the reason, and no
chunk message ever reaches a queue.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jobs.errors import JobError, JobStateError
from jobs.lifecycle import JobState, finalize
from jobs.readers import InputLimits, read_input
from jobs.rows import InputRow
from jobs.sinks import PartSink
from jobs.spec import JobSpec
from jobs.store import JobStatus, JobStore

#: (job id, chunk index) -> None: puts one chunk message on its queue.
Enqueue = Callable[[str, int], None]


def submit_job(spec: JobSpec, input_path: str, store: JobStore, sink: PartSink,
               enqueue: Enqueue, *, fmt: str | None = None,
               limits: InputLimits | None = None) -> JobStatus:
    """Create the job, store its chunks, enqueue them; returns the queued job's status."""
    if sink.has_document(spec.job_id, "spec.json"):
        # Even one Redis forgot (a restart without persistence): its parts would be taken
        # for the new job's, whatever its input.
        raise JobStateError(f"job {spec.job_id!r} exists already: its spec is under "
                            f"{sink.location()}; choose another --job-id (`inferq reconcile "
                            f"{spec.job_id}` finishes it if Redis lost it)")
    if not store.create_job(spec, total=0, chunks=0):
        raise JobStateError(f"job {spec.job_id!r} exists already")
    total = chunks = 0
    try:
        batch: list[InputRow] = []
        for row in read_input(input_path, fmt, limits=limits or InputLimits()):
            batch.append(row)
            if len(batch) == spec.chunk_size:
                store.put_chunk_input(spec.job_id, chunks, batch)
                total, chunks, batch = total + len(batch), chunks + 1, []
        if batch:
            store.put_chunk_input(spec.job_id, chunks, batch)
            total, chunks = total + len(batch), chunks + 1
    except (JobError, OSError) as exc:
        store.set_state(spec.job_id, JobState.FAILED, error=str(exc))
        store.set_counts(spec.job_id, total=total, chunks=chunks)
        store.drop_inputs(spec.job_id)
        raise
    store.set_counts(spec.job_id, total=total, chunks=chunks)
    sink.put_document(spec.job_id, "spec.json",
                      spec.to_dict() | {"input": Path(input_path).name, "rows": total,
                                        "input_path": str(Path(input_path).resolve()),
                                        "format": fmt, "chunks": chunks})
    store.set_state(spec.job_id, JobState.QUEUED)
    if chunks == 0:
        finalize(store, sink, spec.job_id)
    for chunk in range(chunks):
        enqueue(spec.job_id, chunk)
    return store.status(spec.job_id)
