"""What the queue costs a chunk, with the fake backend: time, Redis commands, bytes.

    python -m bench.bench_chunk_cost [--rows 20000] [--chunk-size 100] [--repeats 5]

A classify job on one fake `inferq worker` (solo pool, private redis-server), timed
from submit until `Client.wait` (polling every 50 ms) sees it completed, interleaved
with the same job through `inferq run`'s code (`worker.embedded.run_embedded` in
this process: same chunks, same Parquet, no Redis or Celery). Queued minus embedded,
per chunk and paired by repeat, is what the queue costs a chunk. Around each queued
run the Redis server's ``INFO`` counters give the commands, bytes and Redis CPU
time each chunk cost (`bench.redis_cost`), submit included.

On a machine whose cores other work shares, the wall-clock difference is mostly
waiting: every Redis round trip needs redis-server scheduled, then the worker again.
So the CPU time is read too, which that load hardly moves: the worker process's, Redis's
and this process's (submit and polling) for the queued run, this process's for the
embedded one; their difference is what the queue costs a chunk in CPU.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from bench.bench_queue import QueueRig, check, classify_spec, fake_embedded, write_prompts
from bench.common import cpu_seconds, machine, timed, versions
from bench.redis_cost import RedisCost, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows, size = args.rows, args.chunk_size
    chunks = -(-rows // size)
    tmp = Path(tempfile.mkdtemp(prefix="inferq-bench-chunk-"))
    write_prompts(tmp / "in.jsonl", rows)
    write_prompts(tmp / "warm.jsonl", size * 2)
    embedded = fake_embedded(tmp, size)
    rig = QueueRig(tmp, backends="fake", fake_models="demo")
    assert rig.worker.process is not None
    worker_pid = rig.worker.process.pid
    probe = redis.Redis.from_url(rig.redis.url)
    queued_s, submit_s, embedded_s, costs = [], [], [], []
    queued_cpu, embedded_cpu = [], []
    try:
        rig.run(classify_spec("demo", size), tmp / "warm.jsonl", size * 2, poll=0.05)
        embedded(tmp / "warm.jsonl", size * 2)
        for r in range(args.repeats):
            before = sample(probe)
            worker0, own0 = cpu_seconds(worker_pid), time.process_time()
            started = time.perf_counter()
            status = rig.client.submit(classify_spec("demo", size), str(tmp / "in.jsonl"))
            submit_s.append(time.perf_counter() - started)
            final = rig.client.wait(status.job_id, poll=0.05, timeout=3600)
            queued_s.append(time.perf_counter() - started)
            own = time.process_time() - own0
            costs.append(RedisCost.between(before, sample(probe), chunks))
            queued_cpu.append((cpu_seconds(worker_pid) - worker0 + own) / chunks * 1000
                              + costs[-1].cpu_ms)
            check(final, rows, rig.results)
            own0 = time.process_time()
            embedded_s.append(timed(lambda: embedded(tmp / "in.jsonl", rows)))
            embedded_cpu.append((time.process_time() - own0) / chunks * 1000)
            print(f"repeat {r + 1}: queued {queued_s[-1]:.2f}s (submit {submit_s[-1]:.2f}s), "
                  f"embedded {embedded_s[-1]:.2f}s; Redis {costs[-1].commands:.1f} commands, "
                  f"{costs[-1].cpu_ms:.2f} ms CPU a chunk; CPU a chunk queued "
                  f"{queued_cpu[-1]:.1f} ms, embedded {embedded_cpu[-1]:.1f} ms", flush=True)
    finally:
        probe.close()
        rig.close()
        shutil.rmtree(tmp, ignore_errors=True)

    q, s, e = (statistics.median(x) for x in (queued_s, submit_s, embedded_s))
    cost_ms = statistics.median((a - b) / chunks * 1000
                                for a, b in zip(queued_s, embedded_s, strict=True))
    ratio = statistics.median(b / a for a, b in zip(queued_s, embedded_s, strict=True))
    cost = costs[len(costs) // 2] if len(costs) % 2 else costs[-1]
    med = {name: statistics.median(getattr(c, name) for c in costs)
           for name in ("commands", "bytes_in", "bytes_out", "cpu_ms")}
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"Machine: {machine()}; load average at the end {' '.join(load)}")
    print(f"Versions: {versions('inferq', 'celery', 'kombu', 'redis', 'pyarrow')}, "
          f"redis-server {server.stdout.split()[2].removeprefix('v=')}")
    print(f"Workload: classify, {rows:,} rows of 24 bytes in {chunks} chunks of {size}, "
          f"fake backend, one worker (solo pool); medians of {args.repeats} interleaved "
          "repeats\n")
    qc, ec = statistics.median(queued_cpu), statistics.median(embedded_cpu)
    cpu_cost = statistics.median(a - b for a, b in zip(queued_cpu, embedded_cpu, strict=True))
    print("| path | seconds | chunks/s | ms a chunk | CPU ms a chunk (all processes) |")
    print("|---|---|---|---|---|")
    print(f"| queued: submit -> Redis -> worker -> Parquet | {q:.2f} | {chunks / q:,.1f} "
          f"| {q / chunks * 1000:.1f} | {qc:.1f} |")
    print(f"| of which `submit` | {s:.2f} | | {s / chunks * 1000:.1f} | |")
    print(f"| embedded `inferq run` (run_embedded) | {e:.2f} | {chunks / e:,.1f} "
          f"| {e / chunks * 1000:.1f} | {ec:.1f} |")
    print(f"\nThe queue's cost: {cost_ms:.1f} ms a chunk of wall time (queued minus "
          f"embedded, paired), {cpu_cost:.1f} ms a chunk of CPU (worker + Redis + submitter "
          f"minus embedded, paired); embedded / queued time {ratio:.2f}.")
    print(f"Redis a chunk, submit included: {med['commands']:.1f} commands, "
          f"{med['bytes_in']:,.0f} bytes in, {med['bytes_out']:,.0f} bytes out, "
          f"{med['cpu_ms']:.2f} ms of Redis CPU; most called: {cost.top()}")


if __name__ == "__main__":
    main()
