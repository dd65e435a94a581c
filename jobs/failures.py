"""One decision for a chunk that may not end well: run it, isolate its rows, retry it, fail it.

One counter: the store's attempt count of the chunk (`JobStore.start_attempt`), one
per delivery, whether the last delivery raised, ran past its time limit or took its
worker process down with it. One limit: ``max_attempts``.

- On delivery (`FailurePolicy.on_delivery`): attempts up to ``max_attempts`` run the
  chunk whole; past it the chunk has killed its worker every time, so it runs range
  by range (`jobs.isolate`) to find the row that crashes the engine; past
  `isolation_budget` it fails.
- On an error (`FailurePolicy.on_error`): a job that is gone is dropped; a model that
  will not load or a spec this worker cannot read fails the chunk at once; anything
  else is retried with backoff until the attempt count reaches ``max_attempts``,
  then fails the chunk.

A failed chunk ends as a part of ``chunk_failed`` error rows carrying the reason, so
every input row still ends as exactly one row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from inference import ModelLoadError
from jobs.errors import InputLocationError, InvalidJobSpec, JobNotFound

#: Errors that no retry can mend: the chunk's rows become error rows at once (or, when
#: this worker cannot even read the rows, `InputLocationError`, the job fails saying why).
PERMANENT: tuple[type[BaseException], ...] = (ModelLoadError, InvalidJobSpec,
                                              InputLocationError)


class Verdict(StrEnum):
    """What to do with a chunk."""

    RUN = "run"          #: run it whole
    ISOLATE = "isolate"  #: run it range by range: it killed its worker every time
    RETRY = "retry"      #: deliver it again after ``Decision.countdown`` seconds
    FAIL = "fail"        #: record every row as a ``chunk_failed`` error row
    DROP = "drop"        #: the job is gone: nothing to record


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str = ""        #: why (FAIL: the error rows' message)
    countdown: float = 0.0  #: RETRY: seconds to wait first


def isolation_budget(rows: int, max_attempts: int) -> int:
    """Deliveries a chunk may take while isolating: its retries plus two per halving."""
    return max_attempts + 2 * math.ceil(math.log2(rows + 1)) + 2


@dataclass(frozen=True, slots=True, kw_only=True)
class FailurePolicy:
    """The chunk-failure decision; ``attempt`` is the store's count (1 = first delivery)."""

    max_attempts: int = 3

    def on_delivery(self, attempt: int, rows: int) -> Decision:
        """How to run a chunk of ``rows`` rows on its ``attempt``-th delivery."""
        if attempt > isolation_budget(rows, self.max_attempts):
            return Decision(Verdict.FAIL, f"chunk failed {attempt - 1} times; giving up")
        if attempt > self.max_attempts:
            return Decision(Verdict.ISOLATE, f"delivered {attempt} times: isolating rows")
        return Decision(Verdict.RUN)

    def on_error(self, attempt: int, error: BaseException) -> Decision:
        """What to do after the ``attempt``-th delivery raised ``error``."""
        if isinstance(error, JobNotFound):
            return Decision(Verdict.DROP, str(error))
        if isinstance(error, PERMANENT):
            return Decision(Verdict.FAIL, str(error))
        if attempt >= self.max_attempts:
            return Decision(Verdict.FAIL,
                            f"gave up after {self.max_attempts} attempts: {error}")
        return Decision(Verdict.RETRY, str(error), countdown=min(60, 2 ** max(0, attempt - 1)))
