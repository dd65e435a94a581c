"""The main job, end to end, on this machine.

A tiny model is generated locally (random weights: its labels are noise), a
private redis-server and one `inferq worker` start, a classify job of a few
hundred prompts is submitted with a progress bar, and the Parquet results are
summarised. Without redis-server the same job runs in-process (`inferq run`).

Use a real model: put a GGUF file (or an MLX directory) under a model root and
run ``inferq worker`` with ``INFERQ_MODEL_ROOTS=/that/root``; submit with
``--model <file name without .gguf>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.testing import build_tiny_llama  # noqa: E402
from tests.processes import RedisServer  # noqa: E402

WORK = ROOT / ".cache" / "demo"
INFERQ = str(Path(sys.executable).parent / "inferq")
REVIEWS = ["I loved it, would buy again", "Broke after a day", "It is a chair",
           "Terrible support, never again", "Exactly as described", "Arrived late but fine"]


def write_input(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            body = {"prompt": f"Review: {REVIEWS[i % len(REVIEWS)]}. Sentiment:"}
            f.write(json.dumps({"custom_id": f"review-{i:04d}", "method": "POST",
                                "url": "/v1/completions", "body": body}) + "\n")


def summarise(results: Path, job_id: str) -> None:
    table = ds.dataset(results / "results" / f"job={job_id}", format="parquet").to_table()
    metrics = ds.dataset(results / "metrics" / f"job={job_id}", format="parquet").to_table()
    labels = pc.value_counts(table.column("label")).to_pylist()
    errors = table.num_rows - table.column("error_code").null_count
    seconds = pc.sum(metrics.column("total_seconds")).as_py()
    tokens = pc.sum(metrics.column("prompt_tokens")).as_py()
    print(f"\n{table.num_rows} result rows in {results}/results/job={job_id}/")
    print("labels: " + ", ".join(f"{v['values']}={v['counts']}" for v in labels
                                 if v["values"] is not None) + f"; error rows: {errors}")
    print(f"{len(metrics)} chunks, {tokens:,} prompt tokens, {seconds:.1f}s of model time "
          f"({tokens / seconds:,.0f} prompt tok/s)")
    print(f"read them: duckdb -c \"select label, count(*) from "
          f"'{results}/results/*/*.parquet' group by 1\"")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--in-process", action="store_true", help="Skip Redis and workers.")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "models").mkdir(parents=True)
    tiny = build_tiny_llama(ROOT / ".cache" / "demo-models")
    shutil.copy(tiny.gguf_path, WORK / "models" / "tiny-llama.gguf")
    print(f"demo model: {tiny.config.parameter_count:,} parameters of random weights "
          f"-> {WORK / 'models' / 'tiny-llama.gguf'} (model id: tiny-llama)")
    write_input(WORK / "reviews.jsonl", args.rows)
    results = WORK / "results"
    job = ["classify", str(WORK / "reviews.jsonl"), "--model", "tiny-llama",
           "--labels", "positive,negative,neutral", "--chunk-size", "50", "--json"]

    if args.in_process or shutil.which("redis-server") is None:
        print("running in-process (inferq run): no redis-server here")
        out = subprocess.run([INFERQ, "--results", str(results), "run", *job,
                              "--model-root", str(WORK / "models")],
                             stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            return out.returncode
        summarise(results, json.loads(out.stdout)["job_id"])
        return 0

    redis = RedisServer(WORK / "redis")
    env = os.environ | {"INFERQ_BROKER_URL": redis.url, "INFERQ_RESULTS": str(results),
                        "INFERQ_MODEL_ROOTS": str(WORK / "models"),
                        "INFERQ_BACKENDS": "llama_cpp", "INFERQ_WORKER_NAME": "demo-worker"}
    print(f"redis-server on {redis.url}; starting one worker (log: {WORK / 'worker.log'})")
    with open(WORK / "worker.log", "wb") as log:
        worker = subprocess.Popen([INFERQ, "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            listed = subprocess.run([INFERQ, "workers", "--json"], env=env,
                                    capture_output=True, text=True)
            if listed.returncode == 0 and json.loads(listed.stdout or "[]"):
                break
            time.sleep(0.1)
        out = subprocess.run([INFERQ, "submit", *job, "--wait"], env=env,
                             stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            print(f"the job did not complete; see {WORK / 'worker.log'}")
            return out.returncode
        job_id = out.stdout.split()[0]
        subprocess.run([INFERQ, "status", job_id], env=env)
        summarise(results, job_id)
        return 0
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
