"""Rebuild a job's Redis state from what is on disk, and finish it.

The results location is the truth: ``spec.json`` says what the job is, each
published part says which chunk finished and with how many error rows. After a
Redis that lost its data (no persistence, a flush, a new server), `reconcile_job`
recreates the job, records every chunk that has a part (by membership, so it
is safe to run twice), re-reads the input file for the chunks that have none,
and enqueues those again; or, when the job's deadline has passed, expires them
(`jobs.expire.expire_job`: error rows ``expired``, through the path workers publish
by), so a job whose window ended while nobody ran it ends ``expired``.

The same rebuilds a job whose state expired with its retention: ``manifest.json``
says which chunks ended cancelled (they have no part), so they are not run again. The
input must be the file the job was submitted from (its size and SHA-256 are in
``spec.json``, `jobs.fingerprint`); another is refused before anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jobs.cancel import CANCELLED, cancel_job
from jobs.errors import InputFileError, JobNotFound
from jobs.expire import expire_job, past_deadline
from jobs.fingerprint import check_fingerprint
from jobs.lifecycle import JobState, finalize, summary_from_parts
from jobs.mapping import InputMapping
from jobs.readers import read_input
from jobs.rows import InputRow
from jobs.sinks import ParquetSink
from jobs.spec import spec_from_document
from jobs.store import JobStore
from jobs.submit import Enqueue


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    job_id: str
    recreated: bool        #: the job was absent from Redis
    recorded: list[int]    #: chunks newly recorded from their parts
    requeued: list[int]    #: chunks without a part, enqueued again
    state: str
    expired: list[int] = field(default_factory=list)  #: chunks expired: past the deadline


def reconcile_job(job_id: str, store: JobStore, sink: ParquetSink, enqueue: Enqueue, *,
              input_path: str | None = None) -> ReconcileReport:
    doc = sink.read_document(job_id, "spec.json")
    spec = spec_from_document(doc)
    total, chunks = int(doc["rows"]), int(doc["chunks"])
    recreated = store.create_job(spec, total=total, chunks=chunks)
    if recreated:
        store.set_state(job_id, JobState.QUEUED)
    status = store.status(job_id)
    if status.terminal:
        return ReconcileReport(job_id, recreated, [], [], status.state)
    done = store.done_chunks(job_id)
    recorded = []
    for chunk in sink.part_chunks(job_id):
        if chunk not in done and store.complete_chunk(
                job_id, chunk, summary_from_parts(sink, job_id, chunk)) is not None:
            recorded.append(chunk)
    _record_cancelled(store, sink, job_id)
    done = store.done_chunks(job_id)
    missing = [c for c in range(chunks) if c not in done]
    if missing:
        _store_inputs(store, doc, input_path or doc.get("input_path"), missing)
        if store.cancel_requested(job_id):  # cancelled before Redis lost it, or since
            cancel_job(store, sink, job_id)
            return ReconcileReport(job_id, recreated, recorded, [], store.status(job_id).state)
        if past_deadline(store, job_id):
            report = expire_job(store, sink, job_id)
            return ReconcileReport(job_id, recreated, recorded, [], store.status(job_id).state,
                                   expired=report.expired if report else [])
        for chunk in missing:
            enqueue(job_id, chunk)
    elif store.status(job_id).chunks_done >= chunks:
        finalize(store, sink, job_id)
    return ReconcileReport(job_id, recreated, recorded, missing, store.status(job_id).state)


def _store_inputs(store: JobStore, doc: dict[str, Any], path: str | None,
                  missing: list[int]) -> None:
    """Store the ``missing`` chunks' inputs again from ``path``, once it is known to be
    the file the job was submitted from."""
    job_id = doc["job_id"]
    missing = [c for c in missing if not _input_kept(store, job_id, c)]
    if not missing:  # kept off Redis (jobs/inputs.py), they outlived its state
        return
    if not path:
        raise InputFileError(job_id, "spec.json names no input file; pass --input")
    check_fingerprint(doc, path)
    mapping = InputMapping.from_dict(doc.get("mapping"))  # as submission read it
    found = set()
    for chunk, rows in _chunks(path, doc.get("format"), int(doc["chunk_size"]), set(missing),
                               mapping):
        store.put_chunk_input(job_id, chunk, rows)
        found.add(chunk)
    if set(missing) - found:  # a spec.json without a fingerprint, and a shorter file
        raise InputFileError(path, f"holds no rows for chunk(s) {sorted(set(missing) - found)}"
                             f" of job {job_id} ({doc['rows']:,} rows in {doc['chunks']} "
                             "chunks at submit): not the file it was submitted from; pass "
                             "that one with --input")


def _input_kept(store: JobStore, job_id: str, chunk: int) -> bool:
    """Whether the chunk's input is still where the job's spec keeps it."""
    try:
        store.get_chunk_input(job_id, chunk)
    except JobNotFound:
        return False
    return True


def _record_cancelled(store: JobStore, sink: ParquetSink, job_id: str) -> None:
    """A job whose manifest says it ended cancelled (its state expired, or Redis lost
    it): its cancelled chunks, which have no part, are recorded so again, not rerun."""
    if not sink.has_document(job_id, "manifest.json"):
        return
    closing = sink.read_document(job_id, "manifest.json")
    cancelled = closing.get("chunks", {}).get("cancelled", [])
    if closing.get("state") == JobState.CANCELLED and cancelled:
        store.request_cancel(job_id)
        for chunk in cancelled:
            store.complete_chunk(job_id, chunk, CANCELLED)


def _chunks(path: str, fmt: str | None, size: int, wanted: set[int],
            mapping: InputMapping) -> Iterator[tuple[int, list[InputRow]]]:
    """The input's rows for the ``wanted`` chunks, cut as submission cut them (streaming)."""
    batch: list[InputRow] = []
    current = -1
    for row in read_input(path, fmt, mapping=mapping):
        chunk = row.index // size
        if chunk != current and batch:
            yield current, batch
            batch = []
        current = chunk
        if chunk in wanted:
            batch.append(row)
    if batch:
        yield current, batch
