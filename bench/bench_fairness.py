"""A small job submitted behind a big one: the feeder against first in, first out.

    python -m bench.bench_fairness [--big-chunks 100] [--small-chunks 3]
                                   [--chunk-seconds 0.1] [--repeats 3]

One fake `inferq worker` (private redis-server), a generate job of ``--big-chunks``
chunks whose rows sleep so that each chunk takes about ``--chunk-seconds``; once it
has run a few chunks, a job of ``--small-chunks`` chunks is submitted. Timed from the
small job's submit (its ``queued_at``): until its first chunk starts (*wait*) and
until its last chunk ends (*turnaround*), from the chunks' metrics parts; and the big
job's whole time. Each repeat runs twice, interleaved: with the feeder as deployed
(``INFERQ_FEED_DEPTH=2``), and with a depth far above the job (``10000``), which feeds
every chunk at submit as inferq did before the feeder: first in, first out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.common import machine, versions
from jobs import JobSpec
from jobs.redis_store import RedisJobStore
from worker.client import Client
from worker.config import Settings
from worker.local import RedisServer, Worker


def write_job(path: Path, chunks: int, chunk_seconds: float) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(2 * chunks):  # two rows a chunk
            f.write(json.dumps({"prompt": f"row {i} @@slow:{chunk_seconds / 2}@@"}) + "\n")


def chunk_times(results: Path, job_id: str) -> list[tuple[float, float]]:
    times = []
    for part in (results / "metrics" / f"job={job_id}").glob("*.parquet"):
        row = pq.read_table(part).to_pylist()[0]
        times.append((row["started_at"].timestamp(), row["finished_at"].timestamp()))
    return sorted(times)


def one_run(tmp: Path, depth: int, big: Path, small: Path) -> dict[str, float]:
    """Seconds: the small job's wait and turnaround, the big job's whole time."""
    results = tmp / f"results-{depth}-{time.monotonic_ns()}"
    server = RedisServer(tmp / f"redis-{depth}-{time.monotonic_ns()}")
    worker = Worker(server.url, str(results), "bench-worker", tmp, backends="fake",
                    fake_models="demo", feed_depth=str(depth))
    try:
        worker.start(timeout=120)
        client = Client(Settings(broker_url=server.url, results=str(results),
                                 feed_depth=depth))
        store = RedisJobStore(client.redis)
        big_status = client.submit(JobSpec(op="generate", model="demo", chunk_size=2), str(big))
        while store.status(big_status.job_id).chunks_done < 3:
            time.sleep(0.01)
        small_status = client.submit(JobSpec(op="generate", model="demo", chunk_size=2),
                                     str(small))
        for job_id in (small_status.job_id, big_status.job_id):
            final = client.wait(job_id, poll=0.1, timeout=3600)
            assert final.state == "completed", final
        submitted = store.status(small_status.job_id).timestamps["queued_at"]
        small_times = chunk_times(results, small_status.job_id)
        big_times = chunk_times(results, big_status.job_id)
        client.redis.close()
        return {"wait": small_times[0][0] - submitted,
                "turnaround": small_times[-1][1] - submitted,
                "big": big_times[-1][1] - big_times[0][0]}
    finally:
        worker.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-chunks", type=int, default=100)
    parser.add_argument("--small-chunks", type=int, default=3)
    parser.add_argument("--chunk-seconds", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inferq-bench-fair-") as name:
        tmp = Path(name)
        write_job(tmp / "big.jsonl", args.big_chunks, args.chunk_seconds)
        write_job(tmp / "small.jsonl", args.small_chunks, args.chunk_seconds)
        runs: dict[int, list[dict[str, float]]] = {2: [], 10_000: []}
        for _ in range(args.repeats):
            for depth in runs:
                runs[depth].append(one_run(tmp, depth, tmp / "big.jsonl", tmp / "small.jsonl"))
    med = {depth: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for depth, rs in runs.items()}
    fed, fifo = med[2], med[10_000]
    print(f"Machine: {machine()}; {versions('celery', 'redis')}.\n")
    print(f"One fake worker; a {args.big_chunks}-chunk job, then a {args.small_chunks}-chunk "
          f"job submitted after its third chunk; chunks of about {args.chunk_seconds:g} s; "
          f"medians of {args.repeats} interleaved runs.\n")
    print("| seconds | feeder (depth 2) | all fed at submit (FIFO) | FIFO / feeder |")
    print("|---|---|---|---|")
    for key, label in (("wait", "small job: submit to its first chunk's start"),
                       ("turnaround", "small job: submit to its last chunk's end"),
                       ("big", "big job: first chunk's start to last chunk's end")):
        print(f"| {label} | {fed[key]:.2f} | {fifo[key]:.2f} | {fifo[key] / fed[key]:.2f}x |")


if __name__ == "__main__":
    main()
