"""Chunk time limits where Celery enforces none: its solo and threads pools.

Celery enforces ``task_time_limit`` only in its prefork pool, which engines that are
not fork-safe cannot use; under solo or threads a chunk stuck on a hanging prompt
would hold its worker (and its warm shutdown) forever. `time_limit` enforces the
worker's ``chunk_time_limit`` itself:

- soft: on the main thread (the solo pool) a SIGALRM raises `ChunkTimeLimitExceeded`
  into the chunk when the limit passes, and again every second while
  ``interruptible()`` says no (a chunk publishing its part is left to finish). It is
  an error like any other to `jobs.failures.FailurePolicy`: retried, then the
  chunk's rows become error rows. This module decides nothing about the chunk.
- hard: a chunk still running ``hard_grace`` seconds later (stuck in native code that
  never returns to Python, or on the threads pool, whose threads no signal reaches)
  ends the process. Late acks put the chunk back once its visibility timeout passes,
  and its attempts are counted, as for a chunk that crashed its worker.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("inferq.worker")

#: Exit status of a worker that ended itself at a chunk's hard time limit (EX_SOFTWARE).
HARD_LIMIT_EXIT = 70


class ChunkTimeLimitExceeded(BaseException):
    """A chunk ran past ``chunk_time_limit``.

    A `BaseException`, like `asyncio.CancelledError`: engine code that wraps its
    errors (``except Exception``) must not turn the interruption into a row error or
    a model that "failed to load".
    """


def hard_grace(seconds: float) -> float:
    """Seconds past the soft limit before the process ends itself."""
    return max(5.0, seconds / 10)


@contextmanager
def time_limit(seconds: float, what: str,
               interruptible: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Run the body under a soft and a hard limit of ``seconds`` (0 = none)."""
    if seconds <= 0:
        yield
        return
    hard = threading.Timer(seconds + hard_grace(seconds), _hard_limit, args=(seconds, what))
    hard.daemon = True
    hard.start()
    soft = threading.current_thread() is threading.main_thread()
    previous: Callable[[int, FrameType | None], object] | int | None = None
    if soft:
        def on_alarm(signum: int, frame: FrameType | None) -> None:
            if interruptible():
                raise ChunkTimeLimitExceeded(f"{what} ran past the chunk time limit of "
                                             f"{seconds:g} s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        if soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        hard.cancel()


def _hard_limit(seconds: float, what: str) -> None:
    log.critical("%s is still running %g s past its time limit of %g s: ending this worker "
                 "(exit %d) so that its chunk is delivered again", what, hard_grace(seconds),
                 seconds, HARD_LIMIT_EXIT)
    os._exit(HARD_LIMIT_EXIT)
