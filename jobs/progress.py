"""How far a job is and how fast it goes: rows per second, tokens, an ETA.

Computed from what the store recorded (`JobStatus`: rows of recorded chunks, the
per-backend token totals, the state timestamps), never from a worker's word, so
every reader of one job sees the same numbers. Rates run from the moment the job
went in progress to its end (now, while it runs); a rate or an ETA that cannot be
known yet (nothing recorded, never started) is None, shown as "—".
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.lifecycle import JobState, JobStatus

_ENDS = tuple(f"{s}_at" for s in (JobState.COMPLETED, JobState.FAILED, JobState.EXPIRED,
                                  JobState.CANCELLED))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress:
    """One job's pace. None = not known yet."""

    elapsed_seconds: float | None   #: in progress until its end, or until now
    rows_per_sec: float | None      #: rows recorded (results and errors) per second
    prompt_tokens: int              #: over every backend that ran its chunks
    generated_tokens: int
    tokens_per_sec: float | None    #: prompt and generated tokens per second
    eta_seconds: float | None       #: rows left at the rate so far; None once it ended


def job_progress(status: JobStatus, now: float) -> JobProgress:
    """``status``'s pace at ``now`` (Unix time)."""
    prompt = int(sum(m.get("prompt_tokens", 0) for m in status.metrics.values()))
    generated = int(sum(m.get("generated_tokens", 0) for m in status.metrics.values()))
    started = status.timestamps.get("in_progress_at")
    ended = max((status.timestamps.get(name, 0.0) for name in _ENDS), default=0.0)
    elapsed = (ended or now) - started if started else None
    if elapsed is None or elapsed <= 0 or not status.done_rows:
        return JobProgress(elapsed_seconds=elapsed, rows_per_sec=None, prompt_tokens=prompt,
                           generated_tokens=generated, tokens_per_sec=None, eta_seconds=None)
    rate = status.done_rows / elapsed
    left = max(0, status.total - status.done_rows)
    return JobProgress(elapsed_seconds=elapsed, rows_per_sec=rate, prompt_tokens=prompt,
                       generated_tokens=generated,
                       tokens_per_sec=(prompt + generated) / elapsed,
                       eta_seconds=None if status.terminal else left / rate)
