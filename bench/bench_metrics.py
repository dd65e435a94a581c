"""The cost of a scrape: `inferq exporter`'s registry over a Redis holding many jobs.

    python -m bench.bench_metrics [--jobs 1000,10000,50000] [--repeats 5]

A private redis-server is filled as a busy deployment leaves it: ``--jobs`` job
hashes (1 in 20 active, each with a 40-chunk spec, half its chunks started and a
quarter recorded), 8 live worker advertisements, 4 queues with 100 messages each
and 8 unacknowledged in kombu's ``unacked`` hash, and the deployment totals. Each
repeat renders the whole exposition (`prometheus_client.generate_latest`), as a
scrape does, and, for comparison in the same run, reads only the queues' list
lengths, which is all a list-length autoscaler reads. Prints the median milliseconds
of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import redis
from prometheus_client import generate_latest

from bench.common import machine, versions
from jobs import keys
from worker.broker_queues import queue_lists
from worker.local import RedisServer
from worker.metrics import metrics_registry

QUEUES = [f"inferq.model.m{i}" for i in range(4)]
CHUNKS = 40


def fill(client: redis.Redis, jobs: int) -> None:
    client.flushall()
    pipe = client.pipeline(transaction=False)
    for n in range(jobs):
        job_id = f"job-{n:07d}"
        active = n % 20 == 0
        spec = {"op": "classify", "model": f"m{n % 4}", "job_id": job_id, "labels": ["a", "b"]}
        pipe.hset(keys.job(job_id), mapping={
            "state": "in_progress" if active else "completed", "total": 40 * 256,
            "chunks": CHUNKS, "completed": 0, "failed": 0, "spec": json.dumps(spec)})
        pipe.zadd(keys.JOBS, {job_id: n})
        if active:
            pipe.hset(keys.attempts(job_id), mapping={str(c): 1 for c in range(CHUNKS // 2)})
            pipe.hset(keys.done(job_id), mapping={str(c): "{}" for c in range(CHUNKS // 4)})
        if n % 1000 == 999:
            pipe.execute()
    for i in range(8):
        name = f"w{i}"
        pipe.set(keys.worker(name), json.dumps({
            "name": name, "host": "h", "queues": QUEUES, "current": "job-0000000:3",
            "heartbeat_at": time.time(), "counters": {"chunks": 10}}))
        pipe.zadd(keys.WORKERS, {name: time.time()})
        pipe.hset("unacked", f"tag-{i}", json.dumps([{}, QUEUES[i % 4], QUEUES[i % 4]]))
    for queue in QUEUES:
        pipe.rpush(queue, *[b"x" * 600] * 100)
        for field in ("rows", "prompt_tokens", "generated_tokens", "total_seconds"):
            pipe.hset(keys.TOTALS, f"{queue.rsplit('.', 1)[1]}|llama_cpp|{field}", 1000)
    pipe.execute()


def median_ms(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", default="1000,10000,50000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        try:
            client = redis.Redis.from_url(server.url)
            registry = metrics_registry(client)

            def lengths() -> None:
                pipe = client.pipeline(transaction=False)
                for queue in QUEUES:
                    for key in queue_lists(queue):
                        pipe.llen(key)
                pipe.execute()

            print(f"Machine: {machine()}")
            print(f"Versions: {versions('prometheus_client', 'redis')}")
            print(f"Workload: jobs in Redis (1 in 20 active, {CHUNKS} chunks each), 4 queues, "
                  f"8 workers; medians of {args.repeats} scrapes after one warm-up.\n")
            print("| jobs in Redis | scrape ms | list lengths only ms | scrape / lengths | "
                  "exposition bytes |")
            print("|---|---|---|---|---|")
            for jobs in (int(j) for j in args.jobs.split(",")):
                fill(client, jobs)
                size = len(generate_latest(registry))  # the warm-up
                scrape = median_ms(lambda: generate_latest(registry), args.repeats)
                only = median_ms(lengths, args.repeats)
                print(f"| {jobs:,} | {scrape:.1f} | {only:.2f} | {scrape / only:.0f}x | "
                      f"{size:,} |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
