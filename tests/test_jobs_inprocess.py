"""The job domain in this process, in seconds: no Redis, no Celery, no worker processes.

A `MemoryJobStore`, a `ParquetSink` in a temporary directory and the fake backend
(`inference.testing.FakeModel`) drive `submit_job`, `ChunkRunner`, the failure
policy, row isolation, finalize, reconcile and cancellation the way the Celery task
does (`deliver` below is that task without Celery). A worker process that dies is
played by `Died`, a `BaseException` that leaves the delivery counted and unrecorded,
as a segfault would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from inference import ClassifyResult, GenerateOptions, ModelLoadError, TextModel
from inference.testing import FakeModel
from jobs import ChunkRunner, FailurePolicy, JobState, Verdict, reconcile_job
from jobs.errors import JobNotFound
from jobs.failures import isolation_budget
from jobs.isolate import CRASH_CODE
from jobs.lifecycle import ChunkSummary
from jobs.rows import PAYLOAD_VERSION, InputRow, decode_chunk, encode_chunk
from jobs.schema import (
    METRIC_FIELDS,
    METRICS_SCHEMA,
    RESULTS_SCHEMA,
    SUMMARY_METRICS,
    MetricRow,
    ResultRow,
    field_names,
)
from jobs.sinks import ParquetSink
from jobs.spec import JobSpec
from jobs.store import MemoryJobStore
from jobs.submit import submit_job

LABELS = ("yes", "no")


class Died(BaseException):
    """The worker process died on this delivery (what ``os._exit`` would do)."""


class DyingModel(FakeModel):
    """The fake model, except that a prompt with ``@@die@@`` takes the process down."""

    def classify(self, prompts: Sequence[str],
                 options: GenerateOptions | None = None) -> list[ClassifyResult]:
        if any("@@die@@" in p for p in prompts):
            raise Died()
        return super().classify(prompts, options)


class Job:
    """One job's store, sink, runner and queue, delivered by hand."""

    def __init__(self, tmp_path: Path, prompts: Sequence[str], *, chunk_size: int = 4,
                 max_attempts: int = 3, model: TextModel | None = None,
                 job_id: str = "job-1") -> None:
        self.input = tmp_path / "input.jsonl"
        self.input.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        self.store = MemoryJobStore()
        self.sink = ParquetSink(str(tmp_path / "results"))
        self.queue: list[int] = []
        self.model = model or DyingModel("fake://test")
        self.load_error: Exception | None = None
        self.spec = JobSpec(op="classify", model="fake-model", job_id=job_id,
                            chunk_size=chunk_size, options=GenerateOptions(labels=LABELS))
        self.runner = ChunkRunner(self.store, self.sink, self._models, worker="test",
                                  max_attempts=max_attempts)

    def _models(self, spec: JobSpec) -> tuple[TextModel, str, str]:
        if self.load_error is not None:
            raise self.load_error
        return self.model, "fake", "cpu"

    def submit(self) -> None:
        submit_job(self.spec, str(self.input), self.store, self.sink,
                   lambda _job, chunk: self.queue.append(chunk))

    def deliver(self, chunk: int) -> str:
        """What the Celery task does with one delivery; its outcome."""
        try:
            return self.runner.process(self.spec.job_id, chunk).outcome
        except Died:
            self.queue.append(chunk)  # late ack: the message comes back
            return "died"
        except Exception as exc:
            decision = self.runner.decide(self.spec.job_id, chunk, exc)
            if decision.verdict == Verdict.RETRY:
                self.queue.append(chunk)
                return "retry"
            if decision.verdict == Verdict.DROP:
                return "gone"
            return self.runner.fail_chunk(self.spec.job_id, chunk, decision.reason).outcome

    def drain(self, limit: int = 100) -> list[str]:
        outcomes = []
        while self.queue and len(outcomes) < limit:
            outcomes.append(self.deliver(self.queue.pop(0)))
        return outcomes

    def rows(self) -> list[dict[str, object]]:
        return list(self.sink.read_results(self.spec.job_id).to_pylist())

    def manifest(self) -> dict[str, object]:
        return self.sink.read_document(self.spec.job_id, "manifest.json")


def prompts(n: int) -> list[str]:
    return [f"review number {i}" for i in range(n)]


def test_submitted_job_runs_every_chunk_and_finalizes_with_a_manifest(tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(10))
    job.submit()
    assert job.store.status("job-1").state == JobState.QUEUED
    assert job.queue == [0, 1, 2]
    assert job.drain() == ["ran", "ran", "ran"]
    status = job.store.status("job-1")
    assert status.state == JobState.COMPLETED == "completed"
    assert (status.total, status.completed, status.failed, status.chunks_done) == (10, 10, 0, 3)
    rows = job.rows()
    assert [r["row_index"] for r in rows] == list(range(10))
    assert all(r["label"] in LABELS and r["error_code"] is None for r in rows)
    manifest = job.manifest()
    assert manifest["state"] == "completed"
    assert manifest["chunks"] == {"total": 3, "parts": [0, 1, 2], "cancelled": []}
    assert manifest["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    assert job.store.status("job-1").metrics["fake"]["rows"] == 10


def test_a_redelivered_chunk_is_skipped_and_counted_once(tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(8))
    job.submit()
    assert job.deliver(job.queue.pop(0)) == "ran"
    assert job.deliver(0) == "skipped"
    assert job.drain() == ["ran"]
    status = job.store.status("job-1")
    assert (status.completed, status.failed, status.state) == (8, 0, "completed")
    assert job.deliver(1) == "gone"  # the job has ended


def test_an_empty_input_finalizes_at_submit(tmp_path: Path) -> None:
    job = Job(tmp_path, [])
    job.submit()
    assert job.queue == []
    assert job.store.status("job-1").state == JobState.COMPLETED
    assert job.manifest()["chunks"] == {"total": 0, "parts": [], "cancelled": []}


def test_the_row_that_kills_its_worker_is_isolated_as_one_error_row(tmp_path: Path) -> None:
    texts = prompts(8)
    texts[5] = "this one @@die@@"
    job = Job(tmp_path, texts, chunk_size=8, max_attempts=2)
    job.submit()
    outcomes = job.drain()
    assert outcomes[:2] == ["died", "died"]  # run whole while attempts <= max_attempts
    assert outcomes[-1] == "ran"
    assert len(outcomes) <= isolation_budget(8, max_attempts=2)
    rows = job.rows()
    assert [r["row_index"] for r in rows] == list(range(8))
    assert [r["row_index"] for r in rows if r["error_code"]] == [5]
    assert rows[5]["error_code"] == CRASH_CODE
    status = job.store.status("job-1")
    assert (status.state, status.completed, status.failed) == ("completed", 7, 1)


def test_a_model_that_will_not_load_fails_the_chunk_at_once(tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(6))
    job.load_error = ModelLoadError("fake://x", "refuses to load")
    job.submit()
    assert job.drain() == ["failed", "failed"]
    status = job.store.status("job-1")
    assert (status.state, status.completed, status.failed) == ("failed", 0, 6)
    assert {r["error_code"] for r in job.rows()} == {"chunk_failed"}
    assert "refuses to load" in status.error


def test_a_chunk_that_keeps_raising_is_retried_then_fails_its_rows(tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(3), max_attempts=3)
    job.load_error = RuntimeError("the disk is on fire")
    job.submit()
    assert job.drain() == ["retry", "retry", "failed"]
    status = job.store.status("job-1")
    assert status.state == JobState.FAILED
    assert "gave up after 3 attempts: the disk is on fire" in status.error
    assert [r["error_code"] for r in job.rows()] == ["chunk_failed"] * 3


def test_cancelling_stops_the_chunks_not_yet_run(tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(12))
    job.submit()
    assert job.deliver(job.queue.pop(0)) == "ran"
    job.store.request_cancel("job-1")
    job.store.set_state("job-1", JobState.CANCELLING)
    assert job.drain() == ["cancelled", "cancelled"]
    status = job.store.status("job-1")
    assert status.state == JobState.CANCELLED
    assert job.manifest()["chunks"] == {"total": 3, "parts": [0], "cancelled": [1, 2]}
    assert len(job.rows()) == 4


def test_reconcile_rebuilds_a_lost_store_from_the_parts_and_finishes(tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(10))
    job.submit()
    job.deliver(job.queue.pop(0))
    job.store = MemoryJobStore()  # the store forgot everything
    job.runner.store = job.store
    job.queue.clear()
    report = reconcile_job("job-1", job.store, job.sink,
                           lambda _job, chunk: job.queue.append(chunk))
    assert (report.recreated, report.recorded, report.requeued) == (True, [0], [1, 2])
    assert job.drain() == ["ran", "ran"]
    status = job.store.status("job-1")
    assert (status.state, status.completed) == ("completed", 10)
    assert [r["row_index"] for r in job.rows()] == list(range(10))


def test_part_files_hold_the_schema_of_the_job_domain(tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(2))
    job.submit()
    job.drain()
    part = tmp_path / "results" / "results" / "job=job-1" / "part-000000.parquet"
    assert pq.read_schema(part).metadata[b"inferq.schema"] == b"results"


@pytest.mark.parametrize(("attempt", "verdict"), [(1, "run"), (3, "run"), (4, "isolate"),
                                                   (13, "isolate"), (14, "fail")])
def test_the_policy_runs_then_isolates_then_fails_a_chunk_that_kills_workers(
        attempt: int, verdict: str) -> None:
    assert FailurePolicy(max_attempts=3).on_delivery(attempt, rows=8).verdict == verdict


def test_the_policy_retries_errors_until_the_limit_and_fails_permanent_ones_at_once() -> None:
    policy = FailurePolicy(max_attempts=3)
    assert policy.on_error(1, RuntimeError("x")).verdict == Verdict.RETRY
    assert policy.on_error(2, RuntimeError("x")).countdown == 2
    assert policy.on_error(3, RuntimeError("x")).verdict == Verdict.FAIL
    assert policy.on_error(1, ModelLoadError("p", "no")).verdict == Verdict.FAIL
    assert policy.on_error(1, JobNotFound("j")).verdict == Verdict.DROP


def test_typed_rows_have_exactly_the_columns_of_their_schemas() -> None:
    assert field_names(ResultRow) == RESULTS_SCHEMA.names
    assert field_names(MetricRow) == METRICS_SCHEMA.names
    assert set(METRIC_FIELDS) <= set(METRICS_SCHEMA.names)
    assert set(SUMMARY_METRICS) <= set(field_names(ChunkSummary))


def test_a_misspelt_result_column_is_an_error_not_a_null_column() -> None:
    with pytest.raises(TypeError):
        ResultRow.from_dict({"job_id": "j", "row_index": 0, "custom_id": "0", "chunk": 0,
                             "op": "classify", "model": "m", "backend": "b", "worker": "w",
                             "lable": "yes"})


def test_chunk_payloads_carry_a_version_and_round_trip() -> None:
    rows = [InputRow(index=3, custom_id="a", prompt="hi", expected="yes"),
            InputRow(index=4, custom_id="b", error_code="empty_prompt", error_message="x")]
    payload = encode_chunk(rows)
    assert payload["version"] == 2  # no row carries its own options: readable by older workers
    assert decode_chunk(json.loads(json.dumps(payload))) == rows
    assert decode_chunk([r.to_json() for r in rows]) == rows  # version 1: a bare list


def test_rows_with_their_own_options_travel_in_payload_version_3() -> None:
    rows = [InputRow(index=0, custom_id="a", prompt="hi",
                     options={"max_tokens": 5, "stop_strings": ["\n"]}, model="m"),
            InputRow(index=1, custom_id="b", prompt="ho")]
    payload = encode_chunk(rows)
    assert payload["version"] == PAYLOAD_VERSION == 3
    assert decode_chunk(json.loads(json.dumps(payload))) == rows


def test_a_worker_answers_a_payload_version_it_does_not_know_with_an_error_row_per_row(
        tmp_path: Path) -> None:
    job = Job(tmp_path, prompts(5))
    job.submit()
    inputs = job.store._jobs["job-1"]["inputs"]
    inputs[0] = dict(inputs[0], version=99, rows="a body this worker cannot read")
    assert job.drain() == ["ran", "ran"]
    rows = job.rows()
    assert [r["row_index"] for r in rows] == list(range(5))
    refused = [r for r in rows if r["error_code"] == "unsupported_payload"]
    assert [r["custom_id"] for r in refused] == ["0", "1", "2", "3"]
    assert "version 99 is unknown to this worker" in str(refused[0]["error_message"])
    assert rows[4]["error_code"] is None
    status = job.store.status("job-1")
    assert (status.state, status.completed, status.failed) == ("completed", 1, 4)


def test_a_chunk_failed_after_another_part_won_is_recorded_from_the_winning_part(
        tmp_path: Path) -> None:
    """The expiry sweep (or another delivery) published chunk 0's part first: failing the
    chunk then writes nothing and records what the published part says."""
    from jobs.execute import ChunkContext, error_rows
    from jobs.sinks import encode_table

    job = Job(tmp_path, prompts(4))
    job.submit()
    rows = job.store.get_chunk_input("job-1", 0)
    ctx = ChunkContext(job_id="job-1", chunk=0, backend="", worker="sweeper")
    won = encode_table(error_rows(job.spec, rows, ctx, "expired", "the window ended"))
    assert job.sink.put_part("job-1", 0, "results", won)
    report = job.runner.fail_chunk("job-1", 0, "the engine crashed three times")
    assert report.outcome == "skipped"
    assert job.sink.read_part("job-1", 0) == won
    status = job.store.status("job-1")
    assert status.state == JobState.EXPIRED
    assert [r["error_code"] for r in job.rows()] == ["expired"] * 4
