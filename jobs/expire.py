"""Expiry: a job past its deadline ends ``expired`` whether or not a worker is left.

A worker that takes a chunk after its job's deadline writes every row of it as an
``expired`` error row (`jobs.runner.ChunkRunner`). A job whose queue nobody consumes
would never end, so `expire_job` does the same from outside, through the path workers
publish by: for each chunk not yet recorded it publishes a part of ``expired`` error
rows (`PartSink.put_part`: the first publish of a chunk wins, so a worker that
finishes that chunk later loses, and a part a worker published first is kept and
recorded as it is) and records the chunk by membership (`record_chunk`: the first
record wins), so the last record finalizes the job. Rows finished before the deadline
stay results; two sweepers racing on one job write every row once. Before publishing,
it marks the chunk started and reads the cancel flag, as a worker does, so a cancel
racing the sweep records the chunk ``cancelled`` exactly once (`jobs.cancel`).

`Sweeper` finds the active jobs past their deadline in Redis and expires them;
``inferq serve`` runs it every few seconds, `jobs.reconcile` expires the job it
rebuilds when its deadline has passed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs import keys
from jobs.cancel import CANCELLED
from jobs.errors import JobNotFound
from jobs.execute import ChunkContext, error_rows
from jobs.lifecycle import (
    TERMINAL,
    ChunkStatus,
    ChunkSummary,
    JobState,
    record_chunk,
    summary_from_parts,
)
from jobs.sinks import PartSink, encode_table
from jobs.store import JobStore

if TYPE_CHECKING:  # reconcile imports this module; the command line must not load redis
    from jobs.redis_store import RedisJobStore

log = logging.getLogger("jobs.expire")

#: The ``worker`` column of the error rows an expiry writes.
EXPIRY_WORKER = "inferq-expiry"
#: The reason of those rows, as a worker that finds its chunk late writes it.
REASON = "the job's deadline passed before this row ran"
#: States in which an ended deadline expires the job (validating jobs are still being
#: written by their submitter; finalizing and cancelling ones are ending already).
EXPIRABLE = (JobState.QUEUED, JobState.IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class ExpireReport:
    """What `expire_job` did to one job."""

    job_id: str
    expired: list[int] = field(default_factory=list)   #: chunks this call expired
    recorded: list[int] = field(default_factory=list)  #: chunks whose part was there already
    state: str = ""                                    #: the job's state afterwards


def past_deadline(store: JobStore, job_id: str, now: float | None = None) -> bool:
    """True if the job is queued or running and its spec's deadline has passed."""
    status = store.status(job_id)
    if status.state not in EXPIRABLE:
        return False
    deadline = store.get_spec(job_id).deadline
    return deadline is not None and (time.time() if now is None else now) > deadline


def expire_job(store: JobStore, sink: PartSink, job_id: str, *,
               now: float | None = None) -> ExpireReport | None:
    """End a queued or running job past its deadline: every chunk not yet recorded gets
    a part of ``expired`` error rows (unless one was published first); None if the job
    is not past its deadline or not in a state that expires."""
    if not past_deadline(store, job_id, now):
        return None
    spec = store.get_spec(job_id)
    chunks = store.status(job_id).chunks
    done = store.done_chunks(job_id)
    expired, recorded = [], []
    for chunk in range(chunks):
        if chunk in done:
            continue
        if not sink.has_part(job_id, chunk):
            first = store.touch_chunk(job_id, chunk)  # then read the flag: see `jobs.cancel`
            if store.cancel_requested(job_id):  # cancelled meanwhile: no part ...
                if first:  # ... unless another publisher (a sweeper, a worker) holds it
                    record_chunk(store, sink, job_id, chunk, CANCELLED)
                continue
            try:
                rows = store.get_chunk_input(job_id, chunk)
            except JobNotFound:  # inputs dropped: the job was finalized meanwhile
                break
            ctx = ChunkContext(job_id=job_id, chunk=chunk, backend=spec.backend,
                               worker=EXPIRY_WORKER)
            table = error_rows(spec, rows, ctx, "expired", REASON)
            if sink.put_part(job_id, chunk, "results", encode_table(table)):
                record_chunk(store, sink, job_id, chunk, ChunkSummary(
                    rows=len(rows), errors=len(rows), status=ChunkStatus.EXPIRED,
                    worker=EXPIRY_WORKER, reason=REASON))
                expired.append(chunk)
                continue
        # a part was published first (by a worker, or another sweeper): it is the truth
        record_chunk(store, sink, job_id, chunk, summary_from_parts(sink, job_id, chunk))
        recorded.append(chunk)
    return ExpireReport(job_id, expired, recorded, store.status(job_id).state)


class Sweeper:
    """Finds the jobs in Redis whose deadline has passed while queued or running, and
    expires them (`expire_job`). Safe to run in several processes at once.

    Each `sweep` reads the ids of every job (``inferq:jobs``) and the state of those not
    known to have ended (of those, whether they are still there); ended jobs are
    remembered, so a sweep costs one pipelined read per job id plus one per active job.
    Ids whose job is gone (its retention passed) are pruned from the index.
    """

    def __init__(self, store: RedisJobStore, sink: PartSink) -> None:
        self.store, self.sink = store, sink
        self._ended: set[str] = set()
        self._deadlines: dict[str, float | None] = {}

    def sweep(self, now: float | None = None) -> list[ExpireReport]:
        """Expire every job past its deadline now; what was done to each."""
        now = time.time() if now is None else now
        reports = []
        for job_id in self._due(now):
            try:
                report = expire_job(self.store, self.sink, job_id, now=now)
            except JobNotFound:  # deleted meanwhile
                continue
            if report is not None:
                log.info("expired job %s: %d chunk(s) expired, %d recorded from their parts;"
                         " %s", job_id, len(report.expired), len(report.recorded), report.state)
                reports.append(report)
        return reports

    def _due(self, now: float) -> list[str]:
        """Active jobs whose deadline has passed, by the states and specs in Redis."""
        redis = self.store.redis
        ids: Any = redis.zrange(keys.JOBS, 0, -1)
        everyone = [raw.decode() for raw in ids]
        pipe = redis.pipeline(transaction=False)
        for job_id in everyone:  # ended jobs: only whether their state has expired
            pipe.exists(keys.job(job_id)) if job_id in self._ended \
                else pipe.hget(keys.job(job_id), "state")
        replies = pipe.execute()
        gone = [j for j, reply in zip(everyone, replies, strict=True) if not reply]
        self.store.prune(gone)
        self._ended.difference_update(gone)
        candidates = [j for j in everyone if j not in self._ended]
        states = [r for j, r in zip(everyone, replies, strict=True) if j not in self._ended]
        due = []
        for job_id, raw in zip(candidates, states, strict=True):
            try:
                state = JobState(raw.decode())
            except (AttributeError, ValueError):
                continue  # gone (expired, deleted), or a state this inferq does not know
            if state in TERMINAL:
                self._ended.add(job_id)
                self._deadlines.pop(job_id, None)
            if state not in EXPIRABLE:
                continue
            if job_id not in self._deadlines:
                try:
                    self._deadlines[job_id] = self.store.get_spec(job_id).deadline
                except (JobNotFound, ValueError):
                    continue
            deadline = self._deadlines[job_id]
            if deadline is not None and now > deadline:
                due.append(job_id)
        return due
