"""Where chunk inputs live: Redis memory and submit time, inputs in Redis vs Parquet files.

    python -m bench.bench_inputs [--rows 1000000] [--prompt-bytes 64] [--chunk-size 256]
                                 [--repeats 3] [--modes redis,results]

Generates a JSONL input of ``--rows`` rows on the fly (prompts of about
``--prompt-bytes`` bytes: words drawn from a fixed vocabulary, so zlib compresses them
about as it does prose; each row's number keeps rows distinct), then, for each mode in
the same run, on a private redis-server flushed before each submit:

    inferq submit classify FILE --model demo --queue-anyway --chunk-size N

as a subprocess with ``INFERQ_INPUTS=redis`` or ``INFERQ_INPUTS=results`` (Parquet under
a local results root), no worker, so every chunk stays queued with its input stored.
Repeats alternate the modes' order. Prints per mode the submit's median wall time,
Redis ``used_memory`` added (INFO memory), the chunk-input keys' own ``MEMORY USAGE``,
the keys in Redis, and the bytes of Parquet inputs on disk; then the memory moved off
Redis and the median ratio of submit times.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.common import machine, versions
from jobs import keys
from worker.local import RedisServer

INFERQ = str(Path(sys.executable).parent / "inferq")
#: Review words; prompts are drawn from them, so zlib finds prose-like repetition.
WORDS = tuple(" ".join([
    "the product arrived on time and works as described although the box was damaged",
    "battery life could be better price is fair for what you get would buy again",
    "customer service answered quickly screen colours look great sound quality is poor",
    "after a week it stopped charging instructions were unclear setup took five minutes",
    "my kids love it too heavy to carry around fits perfectly"]).split())
PARAGRAPHS = 4096


def write_input(path: Path, rows: int, prompt_bytes: int) -> None:
    """``rows`` JSONL rows of about ``prompt_bytes``-byte prompts (streamed, one pass)."""
    rng = random.Random(42)
    pieces = []
    for _ in range(PARAGRAPHS):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < max(prompt_bytes - 10, 8):
            words.append(rng.choice(WORDS))
        pieces.append(" ".join(words)[:max(prompt_bytes - 10, 8)])
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        for i in range(rows):
            f.write(f'{{"custom_id": "r{i:08d}", "prompt": '
                    f'"{pieces[(i * 7919) % PARAGRAPHS]} #{i:08d}"}}\n')


def input_key_bytes(client: redis.Redis) -> int:
    """The summed ``MEMORY USAGE`` of every chunk-input key."""
    total = 0
    for key in client.scan_iter(match=keys.chunk_input("*", "*"), count=1000):  # type: ignore[arg-type]
        total += int(client.memory_usage(key) or 0)
    return total


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def submit(server: RedisServer, client: redis.Redis, path: Path, results: Path, mode: str,
           chunk_size: int) -> dict[str, float]:
    client.flushall()
    time.sleep(0.5)  # let the allocator settle after the flush
    before = int(client.info("memory")["used_memory"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")} | {
        "INFERQ_INPUTS": mode, "INFERQ_MAX_ROWS": "100000000",
        "INFERQ_MAX_INPUT_BYTES": str(64 * 2**30)}
    started = time.perf_counter()
    out = subprocess.run([INFERQ, "--broker-url", server.url, "--results", str(results),
                          "submit", "classify", str(path), "--model", "demo",
                          "--queue-anyway", "--chunk-size", str(chunk_size)],
                         env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"submit ({mode}) failed ({out.returncode}):\n{out.stderr}")
    job_id = out.stdout.split()[0]
    added = int(client.info("memory")["used_memory"]) - before
    inputs_dir = results / "inputs" / f"job={job_id}"
    return {"seconds": seconds, "added": added, "input_keys": input_key_bytes(client),
            "keys": client.dbsize(),
            "disk": tree_bytes(inputs_dir) if inputs_dir.exists() else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--prompt-bytes", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--modes", default="redis,results")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    modes = args.modes.split(",")
    print(f"Machine: {machine()}\nVersions: {versions('pyarrow', 'redis', 'celery')}")
    with tempfile.TemporaryDirectory(prefix="bench-inputs-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "in.jsonl"
        started = time.perf_counter()
        write_input(path, args.rows, args.prompt_bytes)
        print(f"Workload: `inferq submit` of {args.rows:,} rows with prompts of about "
              f"{args.prompt_bytes:,} bytes ({path.stat().st_size / 1e6:,.1f} MB of JSONL, "
              f"written in {time.perf_counter() - started:.1f}s), chunk size "
              f"{args.chunk_size}, no worker; {args.repeats} repeats, the modes' order "
              "alternating\n", flush=True)
        server = RedisServer(tmp / "redis")
        client = redis.Redis.from_url(server.url)
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        try:
            for r in range(args.repeats):  # the order flips each repeat: load hits both
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    runs[mode].append(submit(server, client, path, tmp / f"results-{mode}",
                                             mode, args.chunk_size))
                    print(f"repeat {r + 1}: {mode} {runs[mode][-1]['seconds']:.1f}s",
                          flush=True)
        finally:
            client.close()
            server.stop()
    print("| INFERQ_INPUTS | submit s | rows/s | Redis used_memory added MB | "
          "input keys MB | Redis keys | Parquet inputs on disk MB |")
    print("|---|---|---|---|---|---|---|")
    for mode, ms in runs.items():
        seconds = statistics.median(m["seconds"] for m in ms)
        last = ms[-1]  # memory, keys and bytes are the same in every repeat
        print(f"| {mode} | {seconds:.1f} | {args.rows / seconds:,.0f} | "
              f"{last['added'] / 2**20:,.1f} | {last['input_keys'] / 2**20:,.1f} | "
              f"{last['keys']:,.0f} | {last['disk'] / 2**20:,.1f} |")
    if {"redis", "results"} <= set(runs):
        red, par = runs["redis"][-1], runs["results"][-1]
        ratio = statistics.median(b["seconds"] / a["seconds"]
                                  for a, b in zip(runs["redis"], runs["results"], strict=True))
        print(f"\nRedis memory added: {red['added'] / 2**20:,.1f} MB with inputs in Redis, "
              f"{par['added'] / 2**20:,.1f} MB with inputs under the results root "
              f"({(red['added'] - par['added']) / args.rows:,.1f} bytes a row moved off "
              "Redis); "
              f"submit time, results / redis: {ratio:.2f}x (median of {args.repeats} "
              "repeats' ratios)")


if __name__ == "__main__":
    main()
