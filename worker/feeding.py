"""The feeder's Celery side: how a chunk message is sent, and where the periodic pass runs.

The pass (`jobs.feeder.Feeder.tick`) runs in a thread of every worker process, and
only the one holding the lease (``inferq:feed:lease``) runs it; when that process
dies another takes the lease within ``feed_lease_seconds``. Workers, not beat or
``inferq serve``: a chunk only ever runs where a worker is, so wherever there is work
to feed there is a process to feed it, with no extra process to deploy; beat and
serve are optional in a deployment. Each worker also tops its own queue up when a
chunk ends (`top_up`), so the pass matters only for what no completion triggers:
a new worker, a job that found its queue full, and recovery.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis

from jobs import keys
from jobs.feeder import Feeder, Send
from jobs.lease import Lease
from jobs.sinks import PartSink
from jobs.store import JobStore
from worker.advertise import live_workers
from worker.config import Settings

log = logging.getLogger("inferq.feeder")


def chunk_sender(app: Any) -> Send:
    """Sends one chunk message through the Celery ``app``."""
    from worker.app import TASK

    def send(queue: str, job_id: str, chunk: int) -> None:
        app.send_task(TASK, args=[job_id, chunk], queue=queue)
    return send


def make_feeder(settings: Settings, client: redis.Redis) -> Feeder:
    return Feeder(client, depth=settings.feed_depth, grace=settings.feed_lease_seconds)


def depth_targets(workers: Iterable[dict[str, Any]], per_process: int) -> dict[str, int]:
    """queue -> chunks to keep fed: ``per_process`` for each live worker process that
    consumes it (an advertisement's ``concurrency``, 1 if it names none)."""
    consumers: Counter[str] = Counter()
    for worker in workers:
        processes = worker.get("concurrency", 1)
        for queue in worker.get("queues", ()):
            consumers[queue] += processes if isinstance(processes, int) and processes > 0 else 1
    return {queue: n * per_process for queue, n in consumers.items()}


class FeedLoop:
    """The periodic pass in a worker process: a daemon thread that ticks while this
    process holds the lease, every third of the lease."""

    def __init__(self, settings: Settings, client: redis.Redis, feeder: Feeder, send: Send,
                 store: JobStore, sink: PartSink) -> None:
        self.settings, self.redis, self.feeder, self.send = settings, client, feeder, send
        self.store, self.sink = store, sink
        self.lease = Lease(client, keys.FEED_LEASE, settings.worker_name,
                           settings.feed_lease_seconds)
        self.interval = settings.feed_lease_seconds / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferq-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        with contextlib.suppress(redis.RedisError):  # else it expires
            self.lease.release()

    def step(self) -> dict[str, int] | None:
        """One pass if this process holds the lease (taking it if free); None if not."""
        if not self.lease.hold():
            return None
        self.feeder.set_depths(depth_targets(live_workers(self.redis),
                                             self.settings.feed_depth))
        return self.feeder.tick(self.send, self.store, self.sink)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.step()
                if done and any(done.values()):
                    log.info("feeder pass: %s", done)
            except Exception:  # Redis away, a job mid-deletion: the next pass tries again
                log.exception("feeder pass failed")
            self._stop.wait(self.interval)


def top_up(feeder: Feeder, send: Send, job_id: str, chunk: int) -> None:
    """A chunk's delivery ended on this worker: settle it and feed its queue. Never
    raises: the pass settles and feeds what a failure here leaves."""
    try:
        feeder.after_chunk(job_id, chunk, send)
    except Exception:
        log.exception("topping up after chunk %s of %s failed; the feeder's pass will",
                      chunk, job_id)
