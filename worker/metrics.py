"""Metrics for operators, in Prometheus' format: computed from Redis at each scrape.

`InferqCollector` reads everything it reports from Redis when scraped and keeps no
state of its own, so any number of exporters (`inferq exporter`, ``/metrics`` on
`inferq serve`) report the same numbers and nothing drifts when one restarts.

Per queue (label ``queue``):

- ``inferq_queue_queued``: messages waiting in the queue's Redis lists;
- ``inferq_queue_reserved``: delivered to a worker and not acknowledged (prefetched or
  running; `worker.broker_queues`);
- ``inferq_queue_in_flight``: chunks a worker started and nobody recorded yet (the
  job's ``attempts`` hash less its ``done`` hash; a running chunk is reserved too);
- ``inferq_queue_waiting``: chunks of jobs the feeder holds back, not yet fed;
- ``inferq_queue_backlog``: queued + reserved + waiting, the autoscaling signal.

Work done (labels ``backend`` and ``model``), counters over every job since the
deployment started counting, recorded once per chunk with the chunk
(`jobs.redis_store`): ``inferq_rows_total``, ``inferq_row_errors_total``,
``inferq_prompt_tokens_total``, ``inferq_generated_tokens_total``,
``inferq_model_seconds_total``; Prometheus' ``rate()`` makes them rows and tokens
per second.

Jobs and workers: ``inferq_jobs{state}`` (jobs Redis still holds, by state),
``inferq_workers`` (live), and per live worker ``inferq_worker_heartbeat_timestamp_seconds``,
``inferq_worker_busy`` (running a chunk) and ``inferq_worker_chunks_total``.
``inferq_redis_up`` is 0 when Redis did not answer (and nothing else is reported).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs import ACTIVE, STATES, keys
from worker import broker_queues
from worker.advertise import live_workers
from worker.routing import PREFIX, backend_queue, model_queue

log = logging.getLogger("inferq.metrics")

#: Per-chunk totals kept in `keys.TOTALS` -> (metric name, help).
COUNTERS = {
    "rows": ("inferq_rows", "Rows recorded (results and error rows)."),
    "errors": ("inferq_row_errors", "Error rows recorded."),
    "prompt_tokens": ("inferq_prompt_tokens", "Prompt tokens processed."),
    "generated_tokens": ("inferq_generated_tokens", "Tokens generated."),
    "total_seconds": ("inferq_model_seconds", "Seconds chunks spent running on a model."),
}


class InferqCollector(Collector):
    """Every inferq metric, read from ``client``'s Redis at each `collect`."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("inferq_redis_up", "1 when Redis answered this scrape.")
        try:
            metrics = list(self._collect())
        except redis.RedisError as exc:
            log.warning("scrape: Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        workers = live_workers(self.redis)
        states, in_flight = _jobs(self.redis)
        reserved = broker_queues.reserved(self.redis)
        queues = {q for w in workers for q in w.get("queues", [])} | set(in_flight) | {
            q for q in reserved if q.startswith(f"{PREFIX}.")}
        waiting = waiting_not_fed(self.redis, queues)
        queues |= set(waiting)
        queued = broker_queues.queued(self.redis, queues)
        yield from _per_queue(sorted(queues), queued, reserved, in_flight, waiting)
        jobs = GaugeMetricFamily("inferq_jobs", "Jobs Redis holds, by state.",
                                 labels=["state"])
        for state in STATES:
            jobs.add_metric([str(state)], states.get(str(state), 0))
        yield jobs
        yield from _totals(self.redis)
        yield from _workers(workers)


def metrics_registry(client: redis.Redis) -> CollectorRegistry:
    """A registry holding only `InferqCollector` over ``client`` (no process metrics:
    the numbers are the deployment's, not this exporter's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InferqCollector(client))
    return registry


def waiting_not_fed(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Chunks the feeder holds back, not yet fed, for each of ``queues`` and each queue the
    feeder serves: the feeder's own count (`jobs.feeder.waiting`). Empty in an inferq
    without the feeder, where submit enqueues every chunk at once."""
    try:
        from jobs.feeder import waiting
    except ImportError:
        return {}
    served: Any = client.smembers(keys.FEED_QUEUES)
    names = set(queues) | {q.decode() for q in served}
    return {queue: waiting(client, queue) for queue in sorted(names)}


# Jobs by state, and each active job's spec and chunks in flight (started, not
# recorded), in one call: Redis walks the index itself (a pipeline of one HGET per job
# cost 0.5 s a scrape at 10,000 jobs). Job keys are built here from their parts:
# `keys.job(id)` = ARGV[1] .. id, its attempts and done hashes that and ARGV[2], ARGV[3].
_JOBS = """
local counts, active, wanted = {}, {}, {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local job = ARGV[1] .. id
  local state = redis.call('HGET', job, 'state')
  if state then
    counts[state] = (counts[state] or 0) + 1
    if wanted[state] then
      local flying = 0
      for _, chunk in ipairs(redis.call('HKEYS', job .. ARGV[2])) do
        flying = flying + 1 - redis.call('HEXISTS', job .. ARGV[3], chunk)
      end
      active[#active + 1] = redis.call('HGET', job, 'spec') or ''
      active[#active + 1] = flying
    end
  end
end
local flat = {}
for state, n in pairs(counts) do flat[#flat + 1] = state; flat[#flat + 1] = n end
return {flat, active}
"""


def _jobs(client: redis.Redis) -> tuple[Counter[str], dict[str, int]]:
    """Jobs by state, and chunks in flight by queue over the active jobs (each active
    job's queue is there, in flight or not)."""
    prefix = keys.job("")
    found: Any = client.eval(_JOBS, 1, keys.JOBS, prefix, keys.attempts("")[len(prefix):],
                             keys.done("")[len(prefix):], *map(str, ACTIVE))
    flat, active = found
    states: Counter[str] = Counter({flat[i].decode(): int(flat[i + 1])
                                    for i in range(0, len(flat), 2)})
    in_flight: Counter[str] = Counter()
    for k in range(0, len(active), 2):
        queue = _queue_of(active[k])
        if queue:
            in_flight[queue] += int(active[k + 1])
    return states, dict(in_flight)


def _queue_of(raw_spec: bytes | None) -> str:
    """The queue of a stored spec (`worker.routing.queue_for`, without validating it)."""
    try:
        spec = json.loads(raw_spec or b"")
        model, backend = str(spec["model"]), spec.get("backend") or ""
    except (ValueError, KeyError, TypeError):
        return ""
    return backend_queue(backend, model) if backend else model_queue(model)


def _per_queue(queues: list[str], queued: dict[str, int], reserved: dict[str, int],
               in_flight: dict[str, int], waiting: dict[str, int]) -> Iterator[Metric]:
    families = {
        "queued": GaugeMetricFamily("inferq_queue_queued", "Messages waiting in the queue's "
                                    "Redis lists (every priority).", labels=["queue"]),
        "reserved": GaugeMetricFamily("inferq_queue_reserved", "Messages delivered to a "
                                      "worker, not acknowledged (prefetched or running).",
                                      labels=["queue"]),
        "in_flight": GaugeMetricFamily("inferq_queue_in_flight", "Chunks started and not "
                                       "recorded.", labels=["queue"]),
        "waiting": GaugeMetricFamily("inferq_queue_waiting", "Chunks the feeder holds, not "
                                     "yet fed to the queue.", labels=["queue"]),
        "backlog": GaugeMetricFamily("inferq_queue_backlog", "queued + reserved + waiting: "
                                     "chunks the queue's workers have yet to finish.",
                                     labels=["queue"]),
    }
    for queue in queues:
        values = {"queued": queued.get(queue, 0), "reserved": reserved.get(queue, 0),
                  "in_flight": in_flight.get(queue, 0), "waiting": waiting.get(queue, 0)}
        values["backlog"] = values["queued"] + values["reserved"] + values["waiting"]
        for name, family in families.items():
            family.add_metric([queue], values[name])
    yield from families.values()


def _totals(client: redis.Redis) -> Iterator[Metric]:
    raw: Any = client.hgetall(keys.TOTALS)
    families = {field: CounterMetricFamily(name, text, labels=["backend", "model"])
                for field, (name, text) in COUNTERS.items()}
    for key, value in sorted(raw.items()):
        model, backend, field = key.decode().rsplit("|", 2)
        if field in families:
            families[field].add_metric([backend, model], float(value))
    yield from families.values()


def _workers(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    count = GaugeMetricFamily("inferq_workers", "Live workers (heartbeat not expired).")
    count.add_metric([], len(workers))
    yield count
    labels = ["worker", "host"]
    beat = GaugeMetricFamily("inferq_worker_heartbeat_timestamp_seconds",
                             "A live worker's last heartbeat (Unix time).", labels=labels)
    busy = GaugeMetricFamily("inferq_worker_busy", "1 while the worker runs a chunk.",
                             labels=labels)
    chunks = CounterMetricFamily("inferq_worker_chunks", "Chunks this worker process ran "
                                 "(from zero when it starts).", labels=labels)
    for w in sorted(workers, key=lambda w: str(w.get("name"))):
        names = [str(w.get("name", "")), str(w.get("host", ""))]
        beat.add_metric(names, float(w.get("heartbeat_at", 0)))
        busy.add_metric(names, 1 if w.get("current") else 0)
        chunks.add_metric(names, float(w.get("counters", {}).get("chunks", 0)))
    yield from (beat, busy, chunks)
