"""Every recipe of docs/analytics.md, in each engine, against the output of real jobs.

One module-scoped run produces the data: a private redis-server, one fake worker, a
classify job with bad rows, a generate job and two scored runs of an evaluation suite,
all through the `inferq` command line. Each recipe's DuckDB, polars and pandas versions
must give the same table, and that table must agree with what the jobs wrote.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference import GenerateOptions
from inference.testing import FakeModel
from tests.processes import RedisServer, Worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "analytics.md"
INFERQ = str(Path(sys.executable).parent / "inferq")
# What the recipes write, and what the tests put in its place.
DOC_ROOT, DOC_INPUT, DOC_JOB = "/shared/inferq", "reviews.jsonl", "JOB_ID"
ENGINES = {"sql": "sql", "python polars": "polars", "python pandas": "pandas"}

LABELS = ("positive", "negative", "neutral")
ROWS = 60
#: Input rows that must become error rows: index -> (request body, error code).
BAD = {5: ({"prompt": ""}, "empty_prompt"),
       20: ({"prompt": ""}, "empty_prompt"),
       33: ({"prompt": 42}, "invalid_type"),
       47: ({}, "missing_prompt"),
       52: ({"prompt": "x" * 5000}, "prompt_too_long")}  # the fake engine's context: 4096
EVAL_LABELS = ("positive", "negative")
EVAL_ROWS = 20
SUITE = f"""\
[suites.sentiment]
models = ["demo"]
dataset = "sentiment.jsonl"
op = "classify"
labels = {json.dumps(list(EVAL_LABELS))}
scorer = "label"
chunk_size = 10
alerts = {{ max_drop = 0.05 }}
"""


@dataclass(frozen=True, slots=True)
class Output:
    root: Path
    input: Path
    classify: str
    generate: str
    evals: tuple[str, str]
    printed_scores: tuple[float, float]  #: as `inferq eval run --wait` printed them


def write_input(path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(ROWS):
            prompt = f"Review {i}: {'great' if i % 2 else 'awful'} product. Sentiment:"
            body = BAD[i][0] if i in BAD else {"prompt": prompt}
            f.write(json.dumps({"custom_id": f"req-{i:03d}", "method": "POST",
                                "url": "/v1/completions", "body": body}) + "\n")


def eval_prompts() -> list[str]:
    return [""] + [f"review {i}" for i in range(1, EVAL_ROWS)]  # row 0: an error row


def write_dataset(path: Path, wrong: set[int]) -> None:
    """The suite's dataset, its answers right (as the fake model predicts) but for ``wrong``."""
    prompts = eval_prompts()
    predicted = [r.label for r in FakeModel("fake://demo").classify(
        prompts, GenerateOptions(labels=EVAL_LABELS))]
    with open(path, "w", encoding="utf-8") as f:
        for i, (prompt, label) in enumerate(zip(prompts, predicted, strict=True)):
            right = label or EVAL_LABELS[0]
            answer = next(x for x in EVAL_LABELS if x != right) if i in wrong else right
            f.write(json.dumps({"custom_id": f"q{i}", "prompt": prompt,
                                "expected": answer}) + "\n")


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Any:
    base = tmp_path_factory.mktemp("analytics")
    results = base / "results"
    server = RedisServer(base / "redis")
    worker = None

    def inferq(*args: str, exit_code: int = 0) -> str:
        out = subprocess.run([INFERQ, "--broker-url", server.url, "--results", str(results),
                              *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == exit_code, out.stdout + out.stderr
        return out.stdout

    try:
        worker = Worker(server.url, str(results), "w-analytics", base, backends="fake",
                        fake_models="demo").start()
        write_input(base / "reviews.jsonl")
        jobs = [inferq("submit", op, str(base / "reviews.jsonl"), "--model", "demo",
                       *options, "--wait").split()[0]
                for op, options in (("classify", ("--labels", ",".join(LABELS),
                                                  "--chunk-size", "16")),
                                    ("generate", ("--max-tokens", "4", "--chunk-size", "25")))]
        (base / "evals.toml").write_text(SUITE)
        runs, scores = [], []
        for wrong in ({1}, set(range(1, 20, 2))):  # the second run scores lower: an alert
            write_dataset(base / "sentiment.jsonl", wrong)
            # eval run --wait exits 1 when a run breaches its threshold: the second one
            printed = inferq("eval", "run", "sentiment", "--suites", str(base / "evals.toml"),
                             "--wait", exit_code=1 if runs else 0)
            runs.append(printed.split()[0])
            scores.append(float(re.search(r"demo: label ([0-9.]+)", printed).group(1)))
    finally:
        if worker:
            worker.stop()
        server.stop()
    return Output(root=results, input=base / "reviews.jsonl", classify=jobs[0], generate=jobs[1],
                  evals=(runs[0], runs[1]), printed_scores=(scores[0], scores[1]))


# -- the recipes ---------------------------------------------------------------------------


def recipes() -> dict[str, dict[str, str]]:
    """The doc's code blocks: {"3a": {"sql": ..., "polars": ..., "pandas": ...}, ...}.

    A recipe is keyed by the number that starts its heading ("### 3a. ..." -> "3a").
    """
    found: dict[str, dict[str, str]] = {}
    key, engine, block = "", None, None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if block is None and line.startswith("#"):
            key = line.lstrip("#").strip().split(".")[0]
        elif block is None and line.startswith("```"):
            engine, block = ENGINES.get(line[3:].strip()), []
        elif block is not None and line == "```":
            if engine:
                assert engine not in found.get(key, {}), f"two {engine} blocks in {key}"
                found.setdefault(key, {})[engine] = "\n".join(block)
            engine, block = None, None
        elif block is not None:
            block.append(line)
    return found


def plain(value: Any) -> Any:
    """A cell as a Python value: missing values as None, numpy and pandas scalars unwrapped."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def run(code: str, engine: str, out: Output, name: str) -> tuple[list[str], list[tuple]]:
    """Run one block with the real paths in place; its columns and rows."""
    code = (code.replace(DOC_ROOT, str(out.root)).replace(DOC_INPUT, str(out.input))
            .replace(DOC_JOB, out.classify))
    if engine == "sql":
        with duckdb.connect() as con:  # arrow: fetchall() wants pytz for timestamptz
            table = con.sql(code).to_arrow_table()
            return table.column_names, [tuple(r.values()) for r in table.to_pylist()]
    namespace: dict[str, Any] = {}
    exec(compile(code, f"docs/analytics.md {name} ({engine})", "exec"), namespace)
    result = namespace["result"]
    if engine == "polars":
        assert isinstance(result, pl.DataFrame), type(result)
        return result.columns, result.rows()
    assert isinstance(result, pd.DataFrame), type(result)
    return [str(c) for c in result.columns], [tuple(plain(v) for v in row)
                                              for row in result.itertuples(index=False)]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    return bool(a == b)


# -- what the jobs wrote, read directly ----------------------------------------------------


def parts(out: Output, kind: str, job_id: str | None = None) -> list[dict[str, Any]]:
    folder = f"job={job_id}" if job_id else "job=*"
    files = sorted(out.root.glob(f"{kind}/{folder}/*.parquet"))
    assert files, f"no {kind} parts under {out.root}"
    return pa.concat_tables(pq.read_table(f) for f in files).to_pylist()


def expected_errors(out: Output) -> set[tuple[str, str, str]]:
    """(job id, custom id, error code) of every row that must have failed."""
    errors = {(job, f"req-{i:03d}", code) for job in (out.classify, out.generate)
              for i, (_, code) in BAD.items()}
    return errors | {(job, "q0", "empty_prompt") for job in out.evals}


# -- what each recipe must say -------------------------------------------------------------


def check_one_glob(rows: list[dict[str, Any]], out: Output) -> None:
    assert all(r["job"] == r["job_id"] for r in rows)
    assert {r["job_id"]: (r["op"], r["rows"]) for r in rows} == {
        out.classify: ("classify", ROWS), out.generate: ("generate", ROWS),
        out.evals[0]: ("classify", EVAL_ROWS), out.evals[1]: ("classify", EVAL_ROWS)}


def check_throughput(rows: list[dict[str, Any]], out: Output) -> None:
    metrics = parts(out, "metrics")
    total = {k: sum(m[k] for m in metrics) for k in (
        "rows", "prompt_tokens", "generated_tokens", "prefill_seconds", "decode_seconds",
        "total_seconds")}
    [row] = rows
    assert (row["backend"], row["host"]) == ("fake", socket.gethostname())
    assert row["chunks"] == len(metrics) == 4 + 3 + 2 + 2
    assert row["rows"] == total["rows"] == 2 * ROWS + 2 * EVAL_ROWS
    assert row["prompt_tokens_per_sec"] == pytest.approx(
        total["prompt_tokens"] / total["prefill_seconds"])
    assert row["generated_tokens_per_sec"] == pytest.approx(
        total["generated_tokens"] / total["decode_seconds"])
    assert row["rows_per_sec"] == pytest.approx(total["rows"] / total["total_seconds"])


def check_error_rate(rows: list[dict[str, Any]], out: Output) -> None:
    assert {r["job_id"]: (r["rows"], r["errors"]) for r in rows} == {
        out.classify: (ROWS, len(BAD)), out.generate: (ROWS, len(BAD)),
        out.evals[0]: (EVAL_ROWS, 1), out.evals[1]: (EVAL_ROWS, 1)}
    assert all(r["error_rate"] == pytest.approx(r["errors"] / r["rows"]) for r in rows)


def check_error_codes(rows: list[dict[str, Any]], out: Output) -> None:
    codes = Counter(code for _, _, code in expected_errors(out))
    assert {r["error_code"]: r["errors"] for r in rows} == codes
    assert [r["errors"] for r in rows] == sorted(codes.values(), reverse=True)
    total = 2 * ROWS + 2 * EVAL_ROWS
    assert all(r["share_of_rows"] == pytest.approx(r["errors"] / total) for r in rows)


def check_retry(rows: list[dict[str, Any]], out: Output) -> None:
    assert {(r["job_id"], r["custom_id"], r["error_code"]) for r in rows} == expected_errors(out)
    assert len(rows) == len(expected_errors(out))
    assert all(r["error_message"] for r in rows)
    inputs = {f"req-{i:03d}": i for i in range(ROWS)} | {f"q{i}": i for i in range(EVAL_ROWS)}
    assert all(r["row_index"] == inputs[r["custom_id"]] for r in rows)


def check_labels(rows: list[dict[str, Any]], out: Output) -> None:
    assert {r["job_id"] for r in rows} == {out.classify, *out.evals}
    for job_id in (out.classify, *out.evals):
        written = [r for r in parts(out, "results", job_id) if r["label"] is not None]
        counts = Counter(r["label"] for r in written)
        found = {r["label"]: r for r in rows if r["job_id"] == job_id}
        assert {label: r["rows"] for label, r in found.items()} == counts
        assert sum(r["share"] for r in found.values()) == pytest.approx(1.0)
        for label, r in found.items():
            winners = [max(p["prob"] for p in w["label_probs"]) for w in written
                       if w["label"] == label]
            assert r["mean_prob"] == pytest.approx(sum(winners) / len(winners))
            assert r["share"] == pytest.approx(counts[label] / len(written))
    assert sum(r["rows"] for r in rows if r["job_id"] == out.classify) == ROWS - len(BAD)


def check_trend(rows: list[dict[str, Any]], out: Output) -> None:
    assert [(r["suite"], r["target"], r["job_id"]) for r in rows] == [
        ("sentiment", "demo", job) for job in out.evals]
    assert [r["score"] for r in rows] == pytest.approx(list(out.printed_scores), abs=5e-4)
    assert [(r["n"], r["errors"]) for r in rows] == [(EVAL_ROWS, 1)] * 2
    assert rows[0]["finished_at"] < rows[1]["finished_at"]


def check_latest(rows: list[dict[str, Any]], out: Output) -> None:
    [row] = rows
    first, second = out.printed_scores
    assert (row["target"], row["job_id"]) == ("demo", out.evals[1])
    assert (row["score"], row["previous_score"]) == pytest.approx((second, first), abs=5e-4)
    assert row["score_drop"] == pytest.approx(row["previous_score"] - row["score"])
    assert row["score_drop"] > 0.05


def check_breached(rows: list[dict[str, Any]], out: Output) -> None:
    assert [r["job_id"] for r in rows] == [out.evals[1]]
    assert "score fell" in rows[0]["breach"] and "more than 0.050" in rows[0]["breach"]


def check_join(rows: list[dict[str, Any]], out: Output) -> None:
    lines = [json.loads(line) for line in out.input.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == [line["custom_id"] for line in lines]
    assert {r["custom_id"]: r["error_code"] for r in rows if r["error_code"]} == {
        f"req-{i:03d}": code for i, (_, code) in BAD.items()}
    for row, line in zip(rows, lines, strict=True):
        if not row["error_code"]:
            assert row["prompt"] == line["body"]["prompt"]
            assert row["label"] in LABELS
    written = {r["custom_id"]: r["label"] for r in parts(out, "results", out.classify)}
    assert {r["custom_id"]: r["label"] for r in rows} == written


def check_f1(rows: list[dict[str, Any]], out: Output) -> None:
    assert [r["job_id"] for r in rows] == [j for j in out.evals for _ in EVAL_LABELS]
    for job_id in out.evals:
        written = parts(out, "results", job_id)
        pairs = [(None if r["error_code"] else r["label"], r["expected"]) for r in written]
        for label in EVAL_LABELS:
            hits = sum(p == e == label for p, e in pairs)
            predicted, support = (sum(p == label for p, _ in pairs),
                                  sum(e == label for _, e in pairs))
            precision = hits / predicted if predicted else 0.0
            recall = hits / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
            [row] = [r for r in rows if (r["job_id"], r["label"]) == (job_id, label)]
            assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
                (precision, recall, f1))
            assert row["support"] == support


CHECKS: dict[str, Callable[[list[dict[str, Any]], Output], None]] = {
    "1": check_one_glob, "2": check_throughput, "3a": check_error_rate,
    "3b": check_error_codes, "3c": check_retry, "4": check_labels, "5a": check_trend,
    "5b": check_latest, "5c": check_breached, "6": check_join, "7": check_f1,
}


def test_every_recipe_in_the_doc_has_three_engines_and_a_check():
    found = recipes()
    assert set(found) == set(CHECKS)
    assert all(sorted(engines) == sorted(ENGINES.values()) for engines in found.values()), found


@pytest.mark.parametrize("key", list(CHECKS))
def test_a_recipe_gives_one_answer_in_every_engine_and_it_matches_the_jobs(key, output):
    answers = {engine: run(code, engine, output, key) for engine, code in recipes()[key].items()}
    columns, rows = answers["sql"]
    assert rows, f"recipe {key} returned no rows"
    for engine, (other_columns, other_rows) in answers.items():
        assert other_columns == columns, (engine, other_columns)
        assert len(other_rows) == len(rows), (engine, other_rows)
        for row, other in zip(rows, other_rows, strict=True):
            assert all(same(a, b) for a, b in zip(row, other, strict=True)), (engine, row, other)
    CHECKS[key]([dict(zip(columns, row, strict=True)) for row in rows], output)
