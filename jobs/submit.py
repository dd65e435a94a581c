"""Submission: validate the input, then create the job, store its chunk inputs, enqueue.

The input is read twice, streaming. The first pass only validates: a malformed file,
a duplicate custom id or a template field the file lacks raises, and nothing exists
yet (no job, no chunk, no queue message). The second pass creates the job and stores
each chunk's rows; nothing is enqueued until the whole file has been stored. Should
the file change between the passes so that the second fails, the job fails in
``validating`` with the reason and no chunk message ever reaches a queue.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jobs.errors import JobError, JobNotFound, JobStateError
from jobs.fingerprint import fingerprint
from jobs.lifecycle import JobState, finalize
from jobs.mapping import InputMapping
from jobs.readers import InputLimits, read_input
from jobs.rows import InputRow
from jobs.sinks import PartSink
from jobs.spec import JobSpec
from jobs.store import JobStatus, JobStore

#: (job id, chunk index) -> None: puts one chunk message on its queue.
Enqueue = Callable[[str, int], None]


def submit_job(spec: JobSpec, input_path: str, store: JobStore, sink: PartSink,
               enqueue: Enqueue, *, fmt: str | None = None,
               limits: InputLimits | None = None,
               mapping: InputMapping | None = None, keep_path: bool = True,
               check: Callable[[], None] | None = None) -> JobStatus:
    """Validate the input, create the job, store its chunks, enqueue them; returns the
    queued job's status. ``mapping`` None = rows as the file gives them; ``keep_path``
    False = the input is a temporary file (standard input): ``spec.json`` names no
    input path, so `reconcile` asks for one; ``check`` runs once the input is valid,
    before anything is created (whether a worker serves the job), and may raise."""
    limits = limits or InputLimits()
    mapping = mapping or InputMapping()
    _check_new(spec, store, sink)
    for _row in read_input(input_path, fmt, limits=limits, mapping=mapping):
        pass  # the validation pass: raises on a file that cannot run
    if check is not None:
        check()
    if not store.create_job(spec, total=0, chunks=0):
        raise JobStateError(f"job {spec.job_id!r} exists already")
    total = chunks = 0
    try:
        batch: list[InputRow] = []
        for row in read_input(input_path, fmt, limits=limits, mapping=mapping):
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
    input_doc = {"input": Path(input_path).name,
                 "input_path": str(Path(input_path).resolve())} if keep_path else \
        {"input": spec.input_name or "-", "input_path": None}
    input_doc |= fingerprint(input_path)  # reconcile refuses another file (jobs.fingerprint)
    sink.put_document(spec.job_id, "spec.json",
                      spec.to_dict() | input_doc | {"rows": total, "format": fmt,
                                                    "chunks": chunks}
                      | ({"mapping": mapping.to_dict()} if not mapping.is_default else {}))
    store.set_state(spec.job_id, JobState.QUEUED)
    if chunks == 0:
        finalize(store, sink, spec.job_id)
    for chunk in range(chunks):
        enqueue(spec.job_id, chunk)
    return store.status(spec.job_id)


def _check_new(spec: JobSpec, store: JobStore, sink: PartSink) -> None:
    """`JobStateError` when the job id is taken, in Redis or on disk."""
    if sink.has_document(spec.job_id, "spec.json"):
        # Even one Redis forgot (a restart without persistence): its parts would be taken
        # for the new job's, whatever its input.
        raise JobStateError(f"job {spec.job_id!r} exists already: its spec is under "
                            f"{sink.location()}; choose another --job-id (`inferq reconcile "
                            f"{spec.job_id}` finishes it if Redis lost it)")
    try:
        store.status(spec.job_id)
    except JobNotFound:
        return
    raise JobStateError(f"job {spec.job_id!r} exists already")
