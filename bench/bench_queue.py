"""Queue overhead: a classify job through Redis and a worker vs the same calls in-process.

    python -m bench.bench_queue [--rows 512] [--repeats 3]

One `inferq worker` (llama.cpp, the bench model as id ``bench``) on a private
redis-server. Each repeat runs, one after another (the machine's cores are shared):

* queued: `Client.submit` -> Redis -> worker -> Parquet, timed from submit until
  `Client.wait` (polling every 0.5 s, as ``inferq submit --wait`` does) sees the job
  completed, with the worker started and its model warmed beforehand;
* in-process: the same `model.classify` calls the worker makes (each chunk of 256
  rows in batches of `jobs.execute.DEFAULT_BATCH`), same options, model loaded once;
* embedded: `inferq run`'s code (`worker.embedded.run_embedded`) in this process:
  same chunks, same Parquet, no Redis or Celery; it loads the model on each run.

Prints rows/s for each (medians of the repeats), the ratios to the in-process rate
(medians of each repeat's ratio: neighbouring runs see the same machine load), and
the worker's own chunk time, which splits the queued time into model work and the
queue's overhead independently of that load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

import inference
from bench.common import bench_model, machine, timed, versions
from inference import GenerateOptions, LoadOptions, TextModel
from jobs.execute import DEFAULT_BATCH
from jobs.spec import DEFAULT_CHUNK_SIZE, JobSpec
from jobs.store import JobStatus
from worker.client import Client
from worker.config import Settings
from worker.embedded import run_embedded
from worker.local import RedisServer, Worker

LABELS = ("positive", "negative")
REVIEWS = ["great product!!", "awful, broke...", "works as stated", "meh, it is fine",
           "never again, no", "love it so much", "too expensive!!", "arrived broken."]


def prompt(i: int) -> str:
    """24 bytes: 24 tokens + BOS under the byte-level vocabulary; neighbours share nothing."""
    return f"{REVIEWS[i % len(REVIEWS)]} #{i:07d}"


def write_prompts(path: Path, n: int, make: Callable[[int], str] = prompt) -> list[str]:
    prompts = [make(i) for i in range(n)]
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(prompts):
            f.write(json.dumps({"custom_id": f"r{i:07d}", "prompt": text}) + "\n")
    return prompts


def parquet_rows(results: Path, job_id: str) -> int:
    return int(pq.read_table(results / "results" / f"job={job_id}").num_rows)


def check(status: JobStatus, rows: int, results: Path) -> JobStatus:
    """Fail loudly unless the job completed with one Parquet row per input row."""
    on_disk = parquet_rows(results, status.job_id)
    if (status.state, status.total, status.completed, on_disk) != ("completed", rows, rows, rows):
        raise RuntimeError(f"job {status.job_id}: {status.state}, total {status.total}, "
                           f"completed {status.completed}, {on_disk} Parquet rows; "
                           f"expected {rows} ({status.error})")
    return status


def fake_embedded(directory: Path, chunk_size: int) -> Callable[[Path, int], JobStatus]:
    """`inferq run` in this process on the fake backend (model "demo"), results under
    ``directory / "results-embedded"``: a function of the input and its row count that
    runs the job and checks it (`check`)."""
    results = directory / "results-embedded"
    settings = Settings(results=str(results), fake_models=("demo",), backends=("fake",))

    def run(path: Path, rows: int) -> JobStatus:
        return check(run_embedded(settings, classify_spec("demo", chunk_size), str(path)),
                     rows, results)

    return run


class QueueRig:
    """A private redis-server, one `inferq worker`, and a client, under ``directory``."""

    def __init__(self, directory: Path, **worker_settings: str) -> None:
        self.results = directory / "results-queued"
        self.redis = RedisServer(directory / "redis")
        self.worker = Worker(self.redis.url, str(self.results), "bench-worker", directory,
                             **worker_settings)
        try:
            self.worker.start(timeout=120)
        except BaseException:
            self.redis.stop()
            raise
        self.client = Client(Settings(broker_url=self.redis.url, results=str(self.results)))

    def run(self, spec: JobSpec, input_path: Path, rows: int, *, poll: float = 0.5) -> JobStatus:
        """Submit and wait (polling as `inferq submit --wait` does); the completed job's
        status, checked against the Parquet."""
        status = self.client.submit(spec, str(input_path))
        final = self.client.wait(status.job_id, poll=poll, timeout=3600)
        return check(final, rows, self.results)

    def close(self) -> None:
        self.worker.stop()
        self.client.redis.close()
        self.redis.stop()


def classify_spec(model: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> JobSpec:
    return JobSpec(op="classify", model=model, options=GenerateOptions(labels=LABELS),
                   chunk_size=chunk_size)


def in_process(model: TextModel, prompts: list[str], options: GenerateOptions,
               chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """The backend calls a worker makes for these rows: per chunk, batches of DEFAULT_BATCH."""
    for start in range(0, len(prompts), chunk_size):
        chunk = prompts[start:start + chunk_size]
        for first in range(0, len(chunk), DEFAULT_BATCH):
            model.classify(chunk[first:first + DEFAULT_BATCH], options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    gguf = bench_model().gguf_path
    # Next to the cached model, so that the model root can hold a hard link to it
    # (workers refuse symlinks that lead out of their model roots).
    tmp = Path(tempfile.mkdtemp(prefix="queue-", dir=gguf.parent.parent))
    root = tmp / "models"
    root.mkdir()
    try:
        os.link(gguf, root / "bench.gguf")
    except OSError:
        shutil.copy(gguf, root / "bench.gguf")
    prompts = write_prompts(tmp / "in.jsonl", args.rows)
    write_prompts(tmp / "warm.jsonl", 64)
    options = GenerateOptions(labels=LABELS)
    embedded_settings = Settings(results=str(tmp / "results-embedded"),
                                 model_roots=(str(root),), backends=("llama_cpp",))

    def embedded(path: Path, rows: int) -> JobStatus:
        status = run_embedded(embedded_settings, classify_spec("bench"), str(path))
        return check(status, rows, tmp / "results-embedded")

    try:
        rig = QueueRig(tmp, model_roots=str(root), backends="llama_cpp")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model = inference.load_model(str(gguf), LoadOptions(backend="llama_cpp"))
    try:
        # Warm-up: the worker loads its model on its first chunk; page cache; first calls.
        rig.run(classify_spec("bench"), tmp / "warm.jsonl", 64)
        in_process(model, prompts[:64], options)
        embedded(tmp / "warm.jsonl", 64)
        load = statistics.median(
            timed(lambda: inference.load_model(str(gguf), LoadOptions(backend="llama_cpp"))
                  .close()) for _ in range(3))

        queued_s, direct_s, embedded_s, engine_s = [], [], [], []
        for r in range(args.repeats):
            started = time.perf_counter()
            status = rig.run(classify_spec("bench"), tmp / "in.jsonl", args.rows)
            queued_s.append(time.perf_counter() - started)
            engine_s.append(status.metrics["llama_cpp"]["total_seconds"])
            direct_s.append(timed(lambda: in_process(model, prompts, options)))
            embedded_s.append(timed(lambda: embedded(tmp / "in.jsonl", args.rows)))
            print(f"repeat {r + 1}: queued {queued_s[-1]:.2f}s (worker in chunks "
                  f"{engine_s[-1]:.2f}s), in-process {direct_s[-1]:.2f}s, "
                  f"embedded {embedded_s[-1]:.2f}s", flush=True)
    finally:
        model.close()
        rig.close()
        shutil.rmtree(tmp, ignore_errors=True)

    q, d, e = (statistics.median(x) for x in (queued_s, direct_s, embedded_s))
    # Paired ratios: runs next to each other see the same machine load.
    q_ratio = statistics.median(a / b for a, b in zip(direct_s, queued_s, strict=True))
    e_ratio = statistics.median(a / b for a, b in zip(direct_s, embedded_s, strict=True))
    busy = statistics.median(a / b for a, b in zip(engine_s, queued_s, strict=True))
    overhead = statistics.median(b - a for a, b in zip(engine_s, queued_s, strict=True))
    n = args.rows
    chunks = -(-n // DEFAULT_CHUNK_SIZE)
    print(f"\nMachine: {machine()}; llama.cpp threads: all cores (LoadOptions.threads=0)")
    print(f"Versions: {versions('inferq', 'llama-cpp-python', 'celery', 'redis', 'pyarrow')}")
    print(f"Workload: classify, {n:,} prompts of 24 bytes, labels {','.join(LABELS)}, "
          f"chunk size {DEFAULT_CHUNK_SIZE} ({chunks} chunks), model batches of "
          f"{DEFAULT_BATCH}; medians of {args.repeats} interleaved repeats\n")
    print("| path | seconds | rows/s | vs in-process (paired) |")
    print("|---|---|---|---|")
    print(f"| in-process `model.classify` | {d:.2f} | {n / d:,.1f} | 1.00x |")
    print(f"| queued: submit -> Redis -> worker -> Parquet | {q:.2f} | {n / q:,.1f} "
          f"| {q_ratio:.2f}x |")
    print(f"| embedded `inferq run` (run_embedded) | {e:.2f} | {n / e:,.1f} | {e_ratio:.2f}x |")
    print(f"\nQueued wall time outside the worker's chunk runs (submit, messages, Redis, "
          f"Parquet encode and publish, a poll every 0.5 s seeing the end): {overhead:.2f}s, "
          f"{overhead / chunks * 1000:.0f} ms a chunk; the worker ran chunks for "
          f"{busy:.1%} of the queued wall time. Model load (in embedded's time only): "
          f"{load:.2f}s.")

if __name__ == "__main__":
    main()
