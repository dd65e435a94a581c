"""Everything one worker process needs, built once from its settings."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis

import inference
from inference import LoadOptions
from jobs import ChunkReport, ChunkRunner, ParquetSink, PartSink, RedisJobStore, RedisPartSink
from worker.advertise import Heartbeat
from worker.catalog import Catalog
from worker.config import Settings
from worker.feeding import FeedLoop, make_feeder
from worker.models import ModelCache
from worker.provenance import WorkerProvenance
from worker.routing import worker_queues

log = logging.getLogger("inferq.worker")


def usable_backends(settings: Settings) -> list[str]:
    """Backends available here (and allowed by the settings), in preference order."""
    if settings.fake_models:
        from inference.testing import FakeBackend

        inference.register(FakeBackend(), replace=True)
    available = inference.registry().available()
    if settings.backends:
        available = [b for b in available if b in settings.backends]
    return available


def make_sink(settings: Settings, client: redis.Redis) -> PartSink:
    if settings.results_via_redis:
        return RedisPartSink(client)
    return ParquetSink(settings.results_root())


@dataclass
class Counters:
    chunks: int = 0
    rows: int = 0
    errors: int = 0
    skipped: int = 0
    started_at: float = field(default_factory=time.time)


class WorkerRuntime:
    """The store, sink, catalog, model cache and heartbeat of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.broker_url)
        self.store = RedisJobStore(self.redis, results_root=settings.inputs_root(),
                                   retention_seconds=settings.retention_seconds)
        self.sink = make_sink(settings, self.redis)
        self.backends = usable_backends(settings)
        self.catalog = Catalog.build(roots=settings.model_roots, catalog_file=settings.catalog,
                                     fake_models=settings.fake_models)
        self.served = self.catalog.served(self.backends)
        self.queues = worker_queues(self.served)
        self.models = ModelCache(self.catalog, self.backends, size=settings.model_cache,
                                 load_options=LoadOptions(
                                     parallel_slots=settings.parallel_slots,
                                     context_len=settings.context_len,
                                     prefix_cache_tokens=settings.prefix_cache_tokens))
        self.runner = ChunkRunner(self.store, self.sink, self.models,
                                  worker=settings.worker_name, max_attempts=settings.max_attempts,
                                  provenance=WorkerProvenance(
                                      self.models, parallel_slots=settings.parallel_slots))
        self.counters = Counters()
        self.heartbeat = Heartbeat(self.redis, settings.worker_name, self.describe,
                                   settings.heartbeat_seconds)
        self.feeder = make_feeder(settings, self.redis)
        self.feed_loop: FeedLoop | None = None  #: started with the Celery app's sender

    def describe(self) -> dict[str, Any]:
        current = self.runner.current
        return {
            "backends": self.backends, "models": self.served, "queues": self.queues,
            "devices": sorted({"gpu" if b in ("metal", "rocm", "cuda") else "cpu"
                               for b in self.backends}),
            "loaded": self.models.loaded(),
            "current": f"{current[0]}:{current[1]}" if current else "",
            "counters": vars(self.counters), "results": self.settings.results,
            "concurrency": self.settings.concurrency,  # the feeder's depth per process
        }

    def record(self, report: ChunkReport) -> None:
        self.counters.chunks += report.outcome == "ran"
        self.counters.skipped += report.outcome == "skipped"
        self.counters.rows += report.rows
        self.counters.errors += report.errors

    def close(self) -> None:
        if self.feed_loop is not None:
            self.feed_loop.stop()
        self.heartbeat.stop()
        self.models.close()
