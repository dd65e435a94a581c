"""A job's pace (`jobs.progress`): rows per second, tokens and an ETA from its record."""

from __future__ import annotations

import pytest

from jobs.lifecycle import JobStatus
from jobs.progress import job_progress


def _status(state: str, done: int, *, started: float | None = 1000.0,
            ended: dict[str, float] | None = None) -> JobStatus:
    timestamps = {"validating_at": 990.0} | ({"in_progress_at": started} if started else {})
    return JobStatus(job_id="job-p", state=state, total=1000, completed=done - 10, failed=10,
                     chunks=10, chunks_done=done // 100, timestamps=timestamps | (ended or {}),
                     metrics={"llama_cpp": {"prompt_tokens": 4000, "generated_tokens": 1000},
                              "mlx": {"prompt_tokens": 1000, "generated_tokens": 0}})


def test_a_running_job_s_eta_is_the_rows_left_at_its_rate_so_far():
    pace = job_progress(_status("in_progress", 250), now=1050.0)
    assert pace.rows_per_sec == pytest.approx(5.0)      # 250 rows in 50 s
    assert pace.eta_seconds == pytest.approx(150.0)     # 750 rows left at 5 rows/s
    assert (pace.prompt_tokens, pace.generated_tokens) == (5000, 1000)
    assert pace.tokens_per_sec == pytest.approx(120.0)  # both backends' tokens


def test_a_job_that_ended_keeps_its_rate_to_its_end_and_has_no_eta():
    pace = job_progress(_status("completed", 1000, ended={"completed_at": 1100.0}), now=9999.0)
    assert pace.rows_per_sec == pytest.approx(10.0) and pace.eta_seconds is None


@pytest.mark.parametrize(("started", "done"), [(None, 0), (1000.0, 0)])
def test_a_job_without_recorded_rows_or_a_start_has_unknown_rate_and_eta(started, done):
    pace = job_progress(_status("queued" if started is None else "in_progress", done,
                                started=started), now=1050.0)
    assert pace.rows_per_sec is None and pace.eta_seconds is None
    assert pace.tokens_per_sec is None
