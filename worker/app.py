"""The Celery app and its one task, `run_chunk_task`. The job domain does the work."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from celery import Celery, Task, signals

from jobs import JOB_ID, PERMANENT, Verdict
from worker.config import Settings
from worker.feeding import FeedLoop, chunk_sender, top_up
from worker.timelimit import ChunkTimeLimitExceeded, time_limit

log = logging.getLogger("inferq.worker")

TASK = "inferq.run_chunk"


def create_app(settings: Settings) -> Celery:
    app = Celery("inferq", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        # JSON only: a pickle message is remote code execution, and is refused.
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, result_backend=None,
        # At-least-once delivery; the output protocol makes it exactly-once.
        task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Look for abandoned (unacked, timed out) messages every few seconds, not
            # kombu's default of about 100 s: a chunk whose worker died comes back soon
            # after its visibility timeout.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        },
        task_time_limit=settings.chunk_time_limit,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True, task_send_sent_event=True,
        # kombu connects to a rediss:// URL that names no ssl_* option without checking the
        # certificate; check it (the URL's own ssl_* options replace this; Settings refuses
        # those that turn checks off).
        broker_use_ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if settings.broker_url.startswith("rediss://") else None,
    )
    _register_task(app, settings)
    return app


_runtime: Any = None


def runtime(settings: Settings) -> Any:
    """This process's `WorkerRuntime`, built on first use (never at import)."""
    global _runtime
    if _runtime is None:
        from worker.runtime import WorkerRuntime

        _runtime = WorkerRuntime(settings)
    return _runtime


def run_chunk_task(task: Task, job_id: str, chunk: int) -> dict[str, Any]:
    """The Celery task ``inferq.run_chunk``: run one chunk of one job on this worker.

    Thin: the job domain runs the chunk (`jobs.ChunkRunner.process`) and, when that
    raises, decides what happens (`jobs.ChunkRunner.decide`, one `jobs.FailurePolicy`);
    this function only enforces the time limit and acts on the decision.
    """
    if not (isinstance(job_id, str) and JOB_ID.match(job_id)) or not (
            type(chunk) is int and chunk >= 0):  # results paths are built from these
        log.warning("chunk message dropped: %r is not a valid job id or %r not a chunk "
                    "number", job_id, chunk)
        return {"job_id": str(job_id)[:100], "chunk": chunk, "outcome": "refused"}
    settings: Settings = task.app.inferq_settings
    rt = runtime(settings)
    try:  # Celery enforces no time limit in the solo and threads pools: we do
        with time_limit(settings.chunk_time_limit, f"chunk {chunk} of {job_id}",
                        interruptible=lambda: rt.runner.current is not None):
            report = rt.runner.process(job_id, chunk)
    except (Exception, ChunkTimeLimitExceeded) as exc:  # the engine, Redis, the disk, a hang
        decision = rt.runner.decide(job_id, chunk, exc)
        if decision.verdict == Verdict.DROP:
            log.warning("chunk %s of job %s dropped: %s", chunk, job_id, exc)  # says what
            top_up(rt.feeder, chunk_sender(task.app), job_id, chunk)
            return {"job_id": job_id, "chunk": chunk, "outcome": "gone"}
        if decision.verdict == Verdict.RETRY:
            log.exception("chunk %s of %s failed; retrying in %g s", chunk, job_id,
                          decision.countdown)
            raise task.retry(exc=exc, countdown=decision.countdown) from exc
        if not isinstance(exc, PERMANENT):
            log.exception("chunk %s of %s failed: %s", chunk, job_id, decision.reason)
        report = rt.runner.fail_chunk(job_id, chunk, decision.reason)
    rt.record(report)
    top_up(rt.feeder, chunk_sender(task.app), job_id, chunk)  # its queue's next chunk, fairly
    return {"job_id": job_id, "chunk": chunk, "outcome": report.outcome,
            "rows": report.rows, "errors": report.errors}


def _register_task(app: Celery, settings: Settings) -> None:
    app.inferq_settings = settings  # read by run_chunk_task through task.app
    app.task(name=TASK, bind=True, max_retries=None)(run_chunk_task)

    @signals.worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _advertise(sender: Any = None, **_: Any) -> None:
        rt = runtime(settings)
        rt.heartbeat.start()
        rt.feed_loop = FeedLoop(settings, rt.redis, rt.feeder, chunk_sender(app), rt.store,
                                rt.sink)
        rt.feed_loop.start()
        log.info("worker %s serving %s", settings.worker_name, ", ".join(rt.queues))

    @signals.worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _retire(sender: Any = None, **_: Any) -> None:
        if _runtime is not None:
            _runtime.close()
