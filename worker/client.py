"""What the command line does against a shared Redis: submit, watch, cancel, collect."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import redis

from jobs import (
    TERMINAL,
    InputLimits,
    JobSpec,
    JobStateError,
    JobStatus,
    ParquetSink,
    PartSink,
    RedisJobStore,
    RedisPartSink,
    manifest,
    submit_job,
)
from jobs.calibrate import DOCUMENT as CALIBRATION
from jobs.calibrate import calibrate_job
from jobs.cancel import cancel_job
from jobs.mapping import InputMapping
from worker.advertise import live_workers
from worker.app import create_app
from worker.config import Settings
from worker.feeding import chunk_sender, make_feeder
from worker.routing import queue_for


class NoWorkerForJob(JobStateError):
    """No live worker consumes the queue a job would go to."""


class Client:
    """A submitter's view of inferq: one Redis, one results location."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.broker_url)
        self.store = RedisJobStore(self.redis, results_root=settings.inputs_root(),
                                   retention_seconds=settings.retention_seconds)
        root = "results" if settings.results_via_redis else settings.results_root()
        #: Where this process reads results (and, with results via Redis, collects them).
        self.sink = ParquetSink(root)
        self._app: Any = None
        self.feeder = make_feeder(settings, self.redis)

    @property
    def app(self) -> Any:
        if self._app is None:
            self._app = create_app(self.settings)
        return self._app

    def workers(self) -> list[dict[str, Any]]:
        return live_workers(self.redis)

    def check_servable(self, spec: JobSpec) -> None:
        """Raise `NoWorkerForJob` unless a live worker consumes the job's queue."""
        queue = queue_for(spec)
        workers = self.workers()
        if not any(queue in w.get("queues", ()) for w in workers):
            served = sorted({q for w in workers for q in w.get("queues", ())})
            raise NoWorkerForJob(
                f"no live worker serves {queue!r} (model {spec.model!r}"
                f"{', backend ' + repr(spec.backend) if spec.backend else ''}); "
                f"{len(workers)} live worker(s) serve: {', '.join(served) or 'nothing'}. "
                "Start one that has the model, or pass --queue-anyway")

    def submit(self, spec: JobSpec, input_path: str, *, fmt: str | None = None,
               queue_anyway: bool = False, limits: InputLimits | None = None,
               mapping: InputMapping | None = None, keep_path: bool = True) -> JobStatus:
        """Validate the input, check a live worker serves the job (unless
        ``queue_anyway``), then store and enqueue it; ``limits`` None = the settings'
        input limits; ``mapping`` and ``keep_path`` as for `jobs.submit_job`. The job's
        chunks go to the feeder, which sends the first ones now."""
        queue = queue_for(spec)
        if not spec.inputs:  # where the workers will read the chunk inputs from
            spec = dataclasses.replace(spec, inputs=self.settings.inputs_location())

        status = submit_job(spec, input_path, self.store, self.sink,
                            self.feeder.enqueue_for(queue, spec.priority), fmt=fmt,
                            limits=limits or self.settings.input_limits(), mapping=mapping,
                            keep_path=keep_path,
                            check=None if queue_anyway else lambda: self.check_servable(spec))
        self.feed(queue)  # the first window now: the job starts without waiting for a pass
        return status

    def feed(self, queue: str) -> list[tuple[str, int]]:
        """Top ``queue`` up to its depth (jobs/feeder.py); the chunks sent."""
        return self.feeder.feed(queue, chunk_sender(self.app))

    def cancel(self, job_id: str) -> JobStatus:
        """Ask a job to stop and record the chunks no worker holds (`jobs.cancel`): it ends
        ``cancelled`` once its running chunks stop, with or without workers. A job that
        has ended is left as it is; an unknown one raises `JobNotFound`."""
        cancel_job(self.store, self.sink_for_workers(), job_id)
        return self.store.status(job_id)

    def sink_for_workers(self) -> PartSink:
        """Where workers publish parts: this process's results root, or Redis."""
        return RedisPartSink(self.redis) if self.settings.results_via_redis else self.sink

    def collect(self, job_id: str) -> int:
        """With results via Redis: move finished parts to the local results directory."""
        if not self.settings.results_via_redis:
            return 0
        status = self.store.status(job_id)
        moved = RedisPartSink(self.redis).collect(job_id, status.chunks, self.sink)
        if status.terminal:
            spec = self.store.get_spec(job_id)
            self.sink.put_document(job_id, "manifest.json", manifest(
                spec, status, self.store.done_chunks(job_id), status.state))
            if spec.calibrate == "batch" and self.sink.has_document(job_id, CALIBRATION):
                # parts collected before the job finalized hold raw probabilities
                calibrate_job(self.sink, job_id, self.sink.part_chunks(job_id),
                              spec.label_priors)
        return moved

    def wait(self, job_id: str, *, poll: float = 0.5, timeout: float | None = None,
             on_progress: Callable[[JobStatus], None] = lambda s: None) -> JobStatus:
        """Poll until the job is terminal (collecting parts on the way); its last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.store.status(job_id)
            self.collect(job_id)
            on_progress(status)
            if status.state in TERMINAL:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status.state} after {timeout}s")
            time.sleep(poll)
