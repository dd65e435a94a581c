"""Cancel: a job asked to stop ends ``cancelled`` whether or not a worker is left.

`cancel_job` sets the job's cancel flag and moves it to ``cancelling``; then, as the
expiry does for a deadline (`jobs.expire`), it records from outside each chunk not yet
recorded, through the paths workers record by (`record_chunk`: the first record wins,
the last one finalizes):

- a chunk whose part is published is recorded from its part (its rows stay results);
- a chunk no delivery has started is recorded ``cancelled``, with no part;
- a chunk a delivery has started is left to that delivery: it stops at its next batch
  (``cancelled``, no part) or, finished, publishes and records its part.

Why this never writes a row twice nor loses one: every publisher of a chunk (a
worker's delivery, the expiry) marks the chunk started (`JobStore.start_attempt`,
`JobStore.touch_chunk`) and only then reads the cancel flag. `cancel_job` sets the
flag before it reads which chunks are started. So a publisher this call did not see
started marked its chunk after the flag was set, reads the flag, and records the chunk
``cancelled`` without publishing; one it saw is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.lifecycle import (
    ChunkStatus,
    ChunkSummary,
    JobState,
    record_chunk,
    summary_from_parts,
)
from jobs.sinks import PartSink
from jobs.store import JobStore

#: States a cancel moves to ``cancelling`` (a finalizing job is ending already).
CANCELLABLE = (JobState.VALIDATING, JobState.QUEUED, JobState.IN_PROGRESS)
#: The summary of a chunk cancelled before it ran: no part, no rows.
CANCELLED = ChunkSummary(rows=0, errors=0, status=ChunkStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class CancelReport:
    """What `cancel_job` did to one job."""

    job_id: str
    cancelled: list[int] = field(default_factory=list)  #: chunks recorded cancelled here
    recorded: list[int] = field(default_factory=list)   #: chunks recorded from their part
    running: list[int] = field(default_factory=list)    #: chunks left to their delivery
    state: str = ""                                      #: the job's state afterwards


def cancel_job(store: JobStore, sink: PartSink, job_id: str) -> CancelReport:
    """Ask the job to stop and record every chunk no delivery holds; `JobNotFound` for an
    unknown job. A job that has ended is left as it is (no flag is set)."""
    status = store.status(job_id)
    if status.terminal:
        return CancelReport(job_id, state=status.state)
    store.request_cancel(job_id)
    store.set_state(job_id, JobState.CANCELLING, only_from=CANCELLABLE)
    status = store.status(job_id)
    if status.state != JobState.CANCELLING:  # finalizing, or ended meanwhile
        return CancelReport(job_id, state=status.state)
    # a validating job has no chunks yet: its submitter queues them, its workers cancel them
    started = store.started_chunks(job_id)  # read after the flag was set: see above
    done = store.done_chunks(job_id)
    cancelled, recorded, running = [], [], []
    for chunk in range(status.chunks):
        if chunk in done:
            continue
        if sink.has_part(job_id, chunk):  # published, its record not written yet
            record_chunk(store, sink, job_id, chunk, summary_from_parts(sink, job_id, chunk))
            recorded.append(chunk)
        elif chunk in started:
            running.append(chunk)
        else:
            record_chunk(store, sink, job_id, chunk, CANCELLED)
            cancelled.append(chunk)
    return CancelReport(job_id, cancelled, recorded, running, store.status(job_id).state)
