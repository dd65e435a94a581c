"""The machinery's ceiling, with the fake backend (no engine time to hide behind).

    python -m bench.bench_ceiling [--rows 20000] [--chunk-size 100] [--repeats 5]
                                  [--big-rows 1000000]

(a) Chunks per second: a classify job on one fake `inferq worker` (private
    redis-server), timed from submit to completion, interleaved with the same job
    through `inferq run`'s code (`worker.embedded.run_embedded`, in this process:
    same chunks and Parquet, no Redis or Celery). The difference per chunk is what
    the queue costs a chunk.
(b) Submitting a large file: `inferq submit classify big.jsonl --model demo
    --queue-anyway --chunk-size 1000` as a subprocess under ``/usr/bin/time -v``
    (no worker: the chunks stay queued), for a one-row file, a tenth of the rows
    and all of them: seconds, peak RSS, and the Redis memory the queued job holds.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.bench_queue import QueueRig, check, classify_spec, fake_embedded, write_prompts
from bench.common import machine, timed, versions
from worker.local import RedisServer

INFERQ = str(Path(sys.executable).parent / "inferq")


def chunk_rate(tmp: Path, rows: int, chunk_size: int, repeats: int) -> None:
    write_prompts(tmp / "in.jsonl", rows)
    write_prompts(tmp / "warm.jsonl", chunk_size * 2)
    chunks = -(-rows // chunk_size)
    embedded = fake_embedded(tmp, chunk_size)
    rig = QueueRig(tmp, backends="fake", fake_models="demo")
    try:
        rig.run(classify_spec("demo", chunk_size), tmp / "warm.jsonl", chunk_size * 2)
        embedded(tmp / "warm.jsonl", chunk_size * 2)
        queued_s, submit_s, embedded_s = [], [], []
        for r in range(repeats):
            started = time.perf_counter()
            status = rig.client.submit(classify_spec("demo", chunk_size), str(tmp / "in.jsonl"))
            submit_s.append(time.perf_counter() - started)
            final = rig.client.wait(status.job_id, poll=0.05, timeout=3600)
            queued_s.append(time.perf_counter() - started)
            check(final, rows, rig.results)
            embedded_s.append(timed(lambda: embedded(tmp / "in.jsonl", rows)))
            print(f"repeat {r + 1}: queued {queued_s[-1]:.2f}s (submit {submit_s[-1]:.2f}s), "
                  f"embedded {embedded_s[-1]:.2f}s", flush=True)
    finally:
        rig.close()
    q, s, e = (statistics.median(x) for x in (queued_s, submit_s, embedded_s))
    per_chunk = statistics.median(a - b for a, b in zip(queued_s, embedded_s, strict=True))
    per_chunk_ratio = statistics.median(b / a for a, b in zip(queued_s, embedded_s, strict=True))
    print(f"\n(a) classify, {rows:,} rows of 24 bytes in {chunks} chunks of {chunk_size}, "
          f"fake backend; medians of {repeats} interleaved repeats\n")
    print("| path | seconds | chunks/s | rows/s | ms a chunk |")
    print("|---|---|---|---|---|")
    print(f"| queued: submit -> Redis -> worker -> Parquet | {q:.2f} | {chunks / q:,.1f} "
          f"| {rows / q:,.0f} | {q / chunks * 1000:.1f} |")
    print(f"| of which `submit` (read, store inputs, enqueue) | {s:.2f} | | | "
          f"{s / chunks * 1000:.1f} |")
    print(f"| embedded `inferq run` (run_embedded) | {e:.2f} | {chunks / e:,.1f} "
          f"| {rows / e:,.0f} | {e / chunks * 1000:.1f} |")
    print(f"\nThe queue's own cost: {per_chunk / chunks * 1000:.1f} ms a chunk "
          f"(queued minus embedded, paired); embedded / queued time {per_chunk_ratio:.2f}.")


def write_big(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"custom_id": f"r{i:07d}", "prompt": f"great product!! #{i:07d}"})
                    + "\n")


def submit_big(tmp: Path, big_rows: int) -> None:
    server = RedisServer(tmp / "redis-big")
    client = redis.Redis.from_url(server.url)
    print("\n(b) `inferq submit classify FILE --model demo --queue-anyway --chunk-size 1000`, "
          "no worker, under /usr/bin/time -v\n")
    print("| rows | file MB | seconds | peak RSS MB | Redis used_memory added MB | "
          "Redis keys | queued messages |")
    print("|---|---|---|---|---|---|---|")
    try:
        for rows in (1, big_rows // 10, big_rows):
            path = tmp / f"big-{rows}.jsonl"
            write_big(path, rows)
            client.flushall()
            before = int(client.info("memory")["used_memory"])
            started = time.perf_counter()
            out = subprocess.run(
                ["/usr/bin/time", "-v", INFERQ, "--broker-url", server.url, "--results",
                 str(tmp / "results-big"), "submit", "classify", str(path), "--model", "demo",
                 "--queue-anyway", "--chunk-size", "1000"],
                capture_output=True, text=True, timeout=600)
            seconds = time.perf_counter() - started
            if out.returncode != 0:
                raise RuntimeError(f"submit failed ({out.returncode}):\n{out.stderr}")
            peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                                    out.stderr).group(1))  # type: ignore[union-attr]
            added = int(client.info("memory")["used_memory"]) - before
            print(f"| {rows:,} | {path.stat().st_size / 1e6:,.1f} | {seconds:.2f} | "
                  f"{peak_kb / 1024:,.0f} | {added / 2**20:,.1f} | {client.dbsize():,} | "
                  f"{client.llen('inferq.model.demo'):,} |", flush=True)
            path.unlink()
    finally:
        client.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    print(f"Versions: {versions('inferq', 'celery', 'kombu', 'redis', 'pyarrow')}, "
          f"redis-server {server.stdout.split()[2].removeprefix('v=')}")
    tmp = Path(tempfile.mkdtemp(prefix="inferq-bench-ceiling-"))
    try:
        chunk_rate(tmp, args.rows, args.chunk_size, args.repeats)
        submit_big(tmp, args.big_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
