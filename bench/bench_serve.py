"""`inferq serve` vs `inferq submit`: the same generate job through the OpenAI Batch API
and through the command line, in one run.

    python -m bench.bench_serve [--rows 20000] [--repeats 3]

A private redis-server and one `inferq worker` on the fake backend (model ``demo``), so
that the figures are the machinery's, not a model's. Each repeat runs both paths, one
after the other, the order alternating between repeats (the machine's cores are shared):

* serve: `inferq serve` on a loopback port, driven by the official `openai` SDK:
  files.create of a /v1/completions batch file -> batches.create -> batches.retrieve
  every 0.5 s until the batch ends -> files.content of the output file;
* submit: `inferq submit generate --wait` (which polls every 0.5 s) of the same
  prompts, then `inferq results JOB --to out.jsonl --openai`, each as a subprocess.

Both jobs: same prompts, ``max_tokens`` 8, chunks of 256 rows. Each run's output is
checked: one line per row, the same custom_ids on both paths. Prints the medians, the
ratio submit seconds / serve seconds (median of the paired repeats; >= 1 means serve is
as fast), and serve's split into upload, run and download.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from bench.common import machine, versions
from worker.local import RedisServer, Server, Worker

INFERQ = str(Path(sys.executable).parent / "inferq")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
KEY = "sk-bench"
MODEL = "demo"
MAX_TOKENS = 8
CHUNK = 256
POLL = 0.5
REVIEWS = ["great product!!", "awful, broke...", "works as stated", "meh, it is fine"]


def prompt(i: int) -> str:
    return f"{REVIEWS[i % len(REVIEWS)]} #{i:07d}"


def write_inputs(directory: Path, n: int) -> tuple[Path, Path]:
    """The same rows twice: inferq's JSONL (custom_id, prompt) and an OpenAI batch file."""
    plain, batch = directory / "in.jsonl", directory / "batch.jsonl"
    with open(plain, "w", encoding="utf-8") as a, open(batch, "w", encoding="utf-8") as b:
        for i in range(n):
            cid = f"r{i:07d}"
            a.write(json.dumps({"custom_id": cid, "prompt": prompt(i)}) + "\n")
            b.write(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/completions",
                                "body": {"model": MODEL, "prompt": prompt(i),
                                         "max_tokens": MAX_TOKENS}}) + "\n")
    return plain, batch


def custom_ids(text: str) -> list[str]:
    return sorted(json.loads(line)["custom_id"] for line in text.splitlines() if line.strip())


def check_output(text: str, path: str, n: int) -> list[str]:
    """The output's custom_ids; fail loudly unless every row came back as a 200."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    bad = [ln for ln in lines if (ln.get("response") or {}).get("status_code") != 200]
    if len(lines) != n or bad:
        raise RuntimeError(f"{path}: {len(lines)} output lines for {n} rows, "
                           f"{len(bad)} not 200 (first: {bad[:1]})")
    return custom_ids(text)


def via_serve(client: openai.OpenAI, batch_file: Path, n: int) -> tuple[dict[str, float], str]:
    """Seconds of each step, and the output file's text."""
    t0 = time.perf_counter()
    with open(batch_file, "rb") as f:
        file_id = client.files.create(file=f, purpose="batch").id
    t1 = time.perf_counter()
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                  completion_window="24h")
    t_created = time.perf_counter()
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(POLL)
        batch = client.batches.retrieve(batch.id)
    t2 = time.perf_counter()
    if batch.status != "completed" or batch.output_file_id is None:
        raise RuntimeError(f"batch {batch.id}: {batch.status} ({batch.errors})")
    text = client.files.content(batch.output_file_id).text
    t3 = time.perf_counter()
    return {"upload": t1 - t0, "create": t_created - t1, "run": t2 - t1,
            "download": t3 - t2, "total": t3 - t0}, text


def via_submit(redis_url: str, results: Path, plain: Path, out: Path) -> tuple[dict[str, float],
                                                                              str]:
    base = [INFERQ, "--broker-url", redis_url, "--results", str(results)]
    t0 = time.perf_counter()
    done = subprocess.run([*base, "submit", "generate", str(plain), "--model", MODEL,
                                  "--max-tokens", str(MAX_TOKENS), "--chunk-size", str(CHUNK),
                                  "--wait", "--json"],
                          capture_output=True, text=True, env=CLEAN_ENV)
    t1 = time.perf_counter()
    try:
        status = json.loads(done.stdout)
    except ValueError:
        status = {}
    if done.returncode != 0 or status.get("state") != "completed":
        raise RuntimeError(f"submit: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    subprocess.run([*base, "results", status["job_id"], "--to", str(out), "--openai"],
                   capture_output=True, text=True, env=CLEAN_ENV, check=True)
    t2 = time.perf_counter()
    return {"run": t1 - t0, "export": t2 - t1, "total": t2 - t0}, out.read_text(encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.rows
    load_before = os.getloadavg()[0]

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    results = tmp / "results"
    plain, batch_file = write_inputs(tmp, n)
    redis = RedisServer(tmp / "redis")
    worker = Worker(redis.url, str(results), "bench-worker", tmp, backends="fake",
                    fake_models=MODEL)
    server = Server(redis.url, str(results), tmp / "serve.log", api_keys=KEY,
                    batch_chunk_size=str(CHUNK))
    serve_s: list[dict[str, float]] = []
    submit_s: list[dict[str, float]] = []
    try:
        worker.start(timeout=120)
        server.start()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0,
                               timeout=600)
        # Warm-up: first imports, connections, page cache, on both paths.
        (tmp / "warm").mkdir()
        warm_plain, warm_batch = write_inputs(tmp / "warm", 512)
        via_serve(client, warm_batch, 512)
        via_submit(redis.url, results, warm_plain, tmp / "warm" / "out.jsonl")
        for r in range(args.repeats):
            order = ("serve", "submit") if r % 2 == 0 else ("submit", "serve")
            ids = {}
            for path in order:
                if path == "serve":
                    times, text = via_serve(client, batch_file, n)
                    serve_s.append(times)
                else:
                    times, text = via_submit(redis.url, results, plain, tmp / f"out{r}.jsonl")
                    submit_s.append(times)
                ids[path] = check_output(text, path, n)
            if ids["serve"] != ids["submit"]:
                raise RuntimeError(f"repeat {r + 1}: the two outputs' custom_ids differ")
            print(f"repeat {r + 1} ({' then '.join(order)}): serve {serve_s[-1]['total']:.2f}s "
                  f"(upload {serve_s[-1]['upload']:.2f}, create {serve_s[-1]['create']:.2f}, "
                  f"create+run {serve_s[-1]['run']:.2f}, "
                  f"download {serve_s[-1]['download']:.2f}), submit {submit_s[-1]['total']:.2f}s "
                  f"(submit --wait {submit_s[-1]['run']:.2f}, results --openai "
                  f"{submit_s[-1]['export']:.2f}); same {n:,} custom_ids", flush=True)
    finally:
        server.stop()
        worker.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(x[key] for x in runs)

    ratio = statistics.median(b["total"] / a["total"]
                              for a, b in zip(serve_s, submit_s, strict=True))
    load = (f"1-min load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} "
            "at the end (shared machine: other sessions' processes run beside this one)")
    print(f"\nMachine: {machine()}; {load}.\n")
    print(f"Versions: {versions('inferq', 'openai', 'celery', 'redis', 'uvicorn', 'pyarrow')}."
          "\n")
    print(f"Workload: generate, {n:,} prompts of 24 bytes, max_tokens {MAX_TOKENS}, fake "
          f"backend, chunks of {CHUNK} ({-(-n // CHUNK)} chunks), one worker, both paths "
          f"polling every {POLL} s; medians of {args.repeats} repeats, order alternating "
          "(serve first in the odd ones).\n")
    print("| path | seconds | rows/s | of which |")
    print("|---|---|---|---|")
    print(f"| serve: SDK files.create -> batches.create -> poll -> files.content "
          f"| {med(serve_s, 'total'):.2f} | {n / med(serve_s, 'total'):,.0f} "
          f"| upload {med(serve_s, 'upload'):.2f}, batches.create {med(serve_s, 'create'):.2f}, "
          f"create to completed {med(serve_s, 'run'):.2f}, "
          f"download {med(serve_s, 'download'):.2f} |")
    print(f"| submit: `inferq submit --wait` + `inferq results --openai` "
          f"| {med(submit_s, 'total'):.2f} | {n / med(submit_s, 'total'):,.0f} "
          f"| submit --wait {med(submit_s, 'run'):.2f}, results --openai "
          f"{med(submit_s, 'export'):.2f} |")
    print(f"\nRatio submit seconds / serve seconds (median of paired repeats; >= 1: serve "
          f"as fast): **{ratio:.2f}x** (target >= 0.95x). Both outputs carried the same "
          f"{n:,} custom_ids in every repeat. Each repeat, serve / submit seconds: "
          + "; ".join(f"{a['total']:.2f} / {b['total']:.2f}"
                      for a, b in zip(serve_s, submit_s, strict=True)) + ".")


if __name__ == "__main__":
    main()
