"""Many fake-backend workers on one Redis: chunks per second against worker count.

    python -m bench.bench_scale [--rows 20000] [--chunk-size 50] [--workers 1,2,4,8,16]

For each worker count, that many `inferq worker` processes (fake backend, solo pool,
heartbeat every 5 s) on loopback drain one classify job, timed from submit until
`Client.wait` (polling every 50 ms) sees it completed. Each run reads:

* chunks/s and rows/s;
* Redis's side, from its ``INFO`` counters (`bench.redis_cost`): commands, bytes and
  the CPU time of Redis's main thread per chunk (it runs every command, so 1 / that
  time bounds the chunks per second one Redis can serve whatever the workers);
* the workers' side: their processes' CPU seconds per chunk (``/proc/<pid>/stat``),
  what a chunk costs the machines that run workers, which grow with the workers.

The machine has few cores: once the workers' CPU fills them, more workers only
share it, so the chunk rate stops growing well before Redis does. The figure that
carries over to a deployment is Redis's CPU per chunk, not the rate here.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import redis

from bench.bench_queue import check, classify_spec, write_prompts
from bench.common import cpu_seconds, machine, versions
from bench.redis_cost import RedisCost, sample
from worker.client import Client
from worker.config import Settings
from worker.local import RedisServer, Worker


def run(tmp: Path, n: int, rows: int, size: int) -> dict[str, float]:
    server = RedisServer(tmp / f"redis-{n}")
    results = tmp / f"results-{n}"
    workers = [Worker(server.url, str(results), f"w{i}", tmp, backends="fake",
                      fake_models="demo", heartbeat_seconds="5") for i in range(n)]
    client = Client(Settings(broker_url=server.url, results=str(results)))
    probe = redis.Redis.from_url(server.url)
    try:
        for w in workers:
            w.start(timeout=180)
        warm = client.submit(classify_spec("demo", size), str(tmp / "warm.jsonl"))
        check(client.wait(warm.job_id, poll=0.05, timeout=600), size * 2 * n, results)
        pids = [w.process.pid for w in workers if w.process is not None]
        cpu0 = sum(cpu_seconds(p) for p in pids)
        before = sample(probe)
        started = time.perf_counter()
        status = client.submit(classify_spec("demo", size), str(tmp / "in.jsonl"))
        final = client.wait(status.job_id, poll=0.05, timeout=3600)
        seconds = time.perf_counter() - started
        cost = RedisCost.between(before, sample(probe), -(-rows // size))
        worker_cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        check(final, rows, results)
    finally:
        for w in workers:
            w.stop()
        probe.close()
        client.redis.close()
        server.stop()
        shutil.rmtree(results, ignore_errors=True)
    chunks = -(-rows // size)
    return {"workers": n, "seconds": seconds, "chunks_s": chunks / seconds,
            "rows_s": rows / seconds, "commands": cost.commands, "bytes_in": cost.bytes_in,
            "bytes_out": cost.bytes_out, "redis_ms": cost.cpu_ms,
            "worker_ms": worker_cpu / chunks * 1000, "top": cost.top(6)}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--workers", default="1,2,4,8,16")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="inferq-bench-scale-"))
    write_prompts(tmp / "in.jsonl", args.rows)
    write_prompts(tmp / "warm.jsonl", args.chunk_size * 2 * max(counts))
    found = []
    try:
        for n in counts:
            write_prompts(tmp / "warm.jsonl", args.chunk_size * 2 * n)
            found.append(run(tmp, n, args.rows, args.chunk_size))
            r = found[-1]
            print(f"repeat {n} workers: {r['chunks_s']:.1f} chunks/s, Redis "
                  f"{r['redis_ms']:.2f} ms CPU a chunk, workers {r['worker_ms']:.1f} ms CPU "
                  f"a chunk", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    chunks = -(-args.rows // args.chunk_size)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"Machine: {machine()}; load average at the end {' '.join(load)}")
    print(f"Versions: {versions('inferq', 'celery', 'kombu', 'redis')}")
    print(f"Workload: classify, {args.rows:,} rows of 24 bytes in {chunks:,} chunks of "
          f"{args.chunk_size}, fake backend; one run per worker count\n")
    print("| workers | seconds | chunks/s | rows/s | Redis commands a chunk | bytes in / out "
          "a chunk | Redis CPU ms a chunk | workers' CPU ms a chunk | Redis ceiling chunks/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in found:
        print(f"| {r['workers']:.0f} | {r['seconds']:.1f} | {r['chunks_s']:.1f} | "
              f"{r['rows_s']:,.0f} | {r['commands']:.1f} | {r['bytes_in']:,.0f} / "
              f"{r['bytes_out']:,.0f} | {r['redis_ms']:.2f} | {r['worker_ms']:.1f} | "
              f"{1000 / r['redis_ms']:,.0f} |")
    redis_ms = statistics.median(r["redis_ms"] for r in found)
    print(f"\nRedis CPU a chunk, median over the runs: {redis_ms:.2f} ms; one Redis thread "
          f"would then serve about {1000 / redis_ms:,.0f} chunks/s "
          f"({1000 / redis_ms * args.chunk_size:,.0f} rows/s at {args.chunk_size} rows a "
          f"chunk). Most called a chunk (last run): {found[-1]['top']}.")


if __name__ == "__main__":
    main()
