"""Classification people can trust: label checks, calibrated probabilities, plain columns.

On SmolLM2 a completion prompt ("...Overall, the customer felt") calls almost every
review positive (mean P(positive) 0.94, argmax right on half the rows) while the same
probabilities, batch-calibrated, are right on 84% (measured on the 120 demo reviews).
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import inference
from inference import ClassifyResult, GenerateOptions
from jobs import calibrate
from jobs.errors import InvalidJobSpec
from jobs.schema import RESULTS_SCHEMA
from jobs.sinks import ParquetSink, encode_table
from jobs.spec import JobSpec, check_labels

INFERQ = str(Path(sys.executable).with_name("inferq"))
REVIEWS = Path(__file__).resolve().parents[1] / "scripts" / "data" / "reviews.csv"
TEMPLATE = r"Customer review: {text}\nOverall, the customer felt"


# -- labels -----------------------------------------------------------------------------


def test_a_label_continues_a_prompt_as_a_new_word_unless_the_prompt_ends_in_space() -> None:
    assert calibrate.needs_space("Overall, the customer felt")
    assert not calibrate.needs_space("<|im_start|>assistant\n")
    assert not calibrate.needs_space("Sentiment: ")
    assert calibrate.scored_label("positive", True) == " positive"
    assert calibrate.scored_label(" positive", True) == " positive"  # written with its space
    assert calibrate.scored_label("positive", False) == "positive"


@pytest.mark.parametrize(("labels", "says"), [
    ([" positive", " "], "label 2 is ' ': a label must hold text"),
    (["positive", ""], "label 2 is '': a label must hold text"),
    (["yes", "no", "yes"], "label 'yes' is given twice (labels 1 and 3)"),
    ([f"l{i}" for i in range(6)], "6 labels; the limit is 5"),
])
def test_blank_repeated_or_too_many_labels_are_refused_naming_the_label(
        labels: list[str], says: str) -> None:
    with pytest.raises(InvalidJobSpec, match=re.escape(says)):
        check_labels(labels, limit=5)


def test_the_command_line_refuses_a_blank_label_instead_of_dropping_it(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "hi"}\n')
    out = subprocess.run([INFERQ, "--results", str(tmp_path / "r"), "run", "classify",
                          str(source), "--model", "m", "--labels", " positive, "],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "--labels" in out.stderr and "label 2 is ' '" in out.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.parquet"))


def test_the_label_limit_is_a_setting(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "hi"}\n')
    labels = ",".join(f"l{i}" for i in range(4))
    out = subprocess.run([INFERQ, "--results", str(tmp_path / "r"), "run", "classify",
                          str(source), "--model", "m", "--labels", labels],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={"PATH": "/usr/bin:/bin", "INFERQ_MAX_LABELS": "3"})
    assert out.returncode == 2
    assert "4 labels; the limit is 3 (INFERQ_MAX_LABELS)" in out.stderr


def test_calibration_applies_to_classify_jobs_and_names_its_methods() -> None:
    with pytest.raises(InvalidJobSpec, match=r"calibrate.*'platt'; use one of none, length, "
                       r"contextual, batch"):
        JobSpec(op="classify", model="m", calibrate="platt")
    with pytest.raises(InvalidJobSpec, match="classify jobs only"):
        JobSpec(op="generate", model="m", calibrate="batch")
    assert "calibrate" not in JobSpec(op="classify", model="m").to_dict()  # older workers
    spec = JobSpec(op="classify", model="m", calibrate="length")
    assert JobSpec.from_dict(spec.to_dict()) == spec


# -- the methods, on numbers worked by hand -----------------------------------------------


def test_length_calibration_compares_labels_per_token() -> None:
    # " very good" (2 tokens, log p -2.0) against " bad" (1 token, log p -1.5): raw
    # favours " bad"; per token -1.0 against -1.5 favours " very good".
    result = ClassifyResult(label=" bad", label_probs={" very good": 0.3775, " bad": 0.6225},
                            label_logprobs={" very good": -2.0, " bad": -1.5},
                            label_tokens={" very good": 2, " bad": 1})
    probs = calibrate.calibrated_probs(result, "length", {" very good": "very good",
                                                          " bad": "bad"})
    assert probs is not None and calibrate.winner(probs) == "very good"
    assert probs["very good"] == pytest.approx(1 / (1 + math.exp(-0.5)))


def test_batch_calibration_divides_by_the_jobs_mean_per_label() -> None:
    rows = [{"pos": 0.9, "neg": 0.1}, {"pos": 0.95, "neg": 0.05}, {"pos": 0.6, "neg": 0.4},
            {"pos": 0.99, "neg": 0.01}]
    means = calibrate.batch_means(rows)
    assert means == pytest.approx({"pos": 0.86, "neg": 0.14})
    third = calibrate.batch_calibrated(rows[2], means)
    # 0.6 / 0.86 against 0.4 / 0.14: the row the model liked least is the negative one
    assert third["neg"] == pytest.approx((0.4 / 0.14) / (0.6 / 0.86 + 0.4 / 0.14))
    assert calibrate.winner(third) == "neg"
    assert calibrate.winner(calibrate.batch_calibrated(rows[3], means)) == "pos"


# -- a real model, end to end ---------------------------------------------------------------


def expected_labels() -> dict[str, str]:
    with open(REVIEWS, encoding="utf-8") as f:
        return {row["id"]: row["label"] for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def batch_job(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, str]:
    """The demo reviews through a completion template, batch-calibrated, in 3 chunks."""
    results = tmp_path_factory.mktemp("calibrated") / "results"
    return results, run_reviews(smollm2_path, results, "batch", chunk_size=40)


def run_reviews(smollm2_path: Path, results: Path, method: str, *, chunk_size: int) -> str:
    """`inferq run` of the demo reviews through the completion template; the job id."""
    out = subprocess.run([INFERQ, "--results", str(results), "run", "classify", str(REVIEWS),
                          "--model", "smollm2-135m-instruct", "--model-root",
                          str(smollm2_path.parent), "--template", TEMPLATE, "--id-column",
                          "id", "--labels", "positive,negative", "--calibrate", method,
                          "--chunk-size", str(chunk_size), "--json"],
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr
    job_id: str = json.loads(out.stdout)["job_id"]
    return job_id


def rows_of(results: Path) -> list[dict[str, object]]:
    return ds.dataset(results / "results", format="parquet",
                      partitioning="hive").to_table().to_pylist()


def accuracy(rows: list[dict[str, object]], column: str) -> float:
    truth = expected_labels()
    right = 0
    for row in rows:
        probs = {p["label"]: p["prob"] for p in row[column]}  # type: ignore[union-attr]
        right += calibrate.winner(probs) == truth[str(row["custom_id"])]
    return right / len(rows)


@pytest.mark.slow
@pytest.mark.real_model
def test_batch_calibration_turns_a_one_sided_model_into_a_useful_classifier(
        batch_job: tuple[Path, str]) -> None:
    rows = rows_of(batch_job[0])
    assert len(rows) == 120 and all(r["error_code"] is None for r in rows)
    raw, calibrated = accuracy(rows, "raw_label_probs"), accuracy(rows, "label_probs")
    assert raw <= 0.6          # measured 0.50: nearly every row "positive"
    assert calibrated >= 0.75  # measured 0.84
    assert calibrated - raw >= 0.2


@pytest.mark.slow
@pytest.mark.real_model
def test_calibrated_rows_keep_raw_probabilities_the_method_and_plain_columns(
        batch_job: tuple[Path, str]) -> None:
    results, job_id = batch_job
    for row in rows_of(results):
        assert row["calibration"] == "batch"
        probs = {p["label"]: p["prob"] for p in row["label_probs"]}  # type: ignore[union-attr]
        assert set(probs) == {"positive", "negative"}  # as written, no tokenizer space
        assert row["label"] == calibrate.winner(probs)
        assert row["label_prob"] == pytest.approx(probs[str(row["label"])])
        assert sum(probs.values()) == pytest.approx(1.0)
    means = ParquetSink(str(results)).read_document(job_id, calibrate.DOCUMENT)["means"]
    assert set(means) == {"positive", "negative"} and means["positive"] > 0.8


@pytest.mark.slow
@pytest.mark.real_model
def test_calibrating_again_rewrites_nothing_and_gives_the_same_bytes(
        batch_job: tuple[Path, str]) -> None:
    results, job_id = batch_job
    sink = ParquetSink(str(results))
    chunks = sink.part_chunks(job_id)
    assert chunks == [0, 1, 2]
    before = {c: sink.read_part(job_id, c) for c in chunks}
    calibrate.calibrate_job(sink, job_id, chunks)
    assert {c: sink.read_part(job_id, c) for c in chunks} == before
    # and a part put back as its chunk wrote it (raw probabilities, method "none") is
    # rewritten to exactly the same bytes
    rows = pq.read_table(results / "results" / f"job={job_id}" / "part-000001.parquet"
                         ).to_pylist()
    for row in rows:
        probs = {p["label"]: p["prob"] for p in row["raw_label_probs"]}
        row |= {"label_probs": row["raw_label_probs"], "raw_label_probs": None,
                "label": calibrate.winner(probs), "calibration": "none"}
        row["label_prob"] = probs[row["label"]]
    raw = pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)
    sink.replace_part(job_id, 1, "results", encode_table(raw))
    calibrate.calibrate_job(sink, job_id, chunks)
    assert sink.read_part(job_id, 1) == before[1]


@pytest.mark.slow
@pytest.mark.real_model
def test_labels_one_of_which_begins_the_other_are_refused_by_the_engine(
        smollm2_path: Path) -> None:
    with inference.load_model(str(smollm2_path),
                              inference.LoadOptions(backend="llama_cpp")) as model:
        results = model.classify(["The city is", "The state is"],
                                 GenerateOptions(labels=(" New", " New York")))
    assert [r.error.code if r.error else None for r in results] == ["ambiguous_labels"] * 2
    assert "label ' New' is the first tokens of label ' New York'" in str(results[0].error)


SYSTEM = "Is the following customer review positive or negative? Answer with one word."


@pytest.mark.slow
@pytest.mark.real_model
def test_contextual_calibration_divides_by_the_chat_with_na_in_place_of_the_review(
        smollm2_path: Path) -> None:
    from inference import Message
    from jobs.execute import ChunkContext, execute_chunk
    from jobs.rows import InputRow

    texts = ["Absolutely love this blender.", "It broke after two days.", "Meh."]
    rows = [InputRow(index=i, custom_id=str(i), messages=(Message("system", SYSTEM),
                                                          Message("user", text)))
            for i, text in enumerate(texts)]
    spec = JobSpec(op="classify", model="m", calibrate="contextual",
                   options=GenerateOptions(labels=("positive", "negative")))
    with inference.load_model(str(smollm2_path),
                              inference.LoadOptions(backend="llama_cpp")) as model:
        out = execute_chunk(model, spec, rows, ChunkContext(job_id="j", chunk=0,
                                                            backend="llama_cpp", worker="w"))
        raw = model.classify([model.render_chat(r.messages) for r in rows], spec.options)
        [free] = model.classify([model.render_chat([Message("system", SYSTEM),
                                                    Message("user", "N/A")])], spec.options)
    for row, engine in zip(out.results.to_pylist(), raw, strict=True):
        assert row["calibration"] == "contextual"
        raw_probs = {p["label"]: p["prob"] for p in row["raw_label_probs"]}
        assert raw_probs == pytest.approx(engine.label_probs, abs=1e-6)
        weights = {k: v / free.label_probs[k] for k, v in engine.label_probs.items()}
        probs = {p["label"]: p["prob"] for p in row["label_probs"]}
        assert probs["positive"] == pytest.approx(weights["positive"] / sum(weights.values()),
                                                  abs=1e-6)
        assert row["label"] == calibrate.winner(probs)


def test_contextual_calibration_of_a_plain_prompt_without_a_template_is_an_error_row() -> None:
    from inference.testing import FakeModel
    from jobs.execute import ChunkContext, execute_chunk
    from jobs.rows import InputRow

    spec = JobSpec(op="classify", model="m", calibrate="contextual",
                   options=GenerateOptions(labels=("yes", "no")))
    with FakeModel("fake://test") as model:
        out = execute_chunk(model, spec, [InputRow(index=0, custom_id="a", prompt="Is it?")],
                            ChunkContext(job_id="j", chunk=0, backend="fake", worker="w"))
    [row] = out.results.to_pylist()
    assert row["error_code"] == "calibration_unavailable"
    assert "needs a content-free input" in row["error_message"]


def test_label_priors_weigh_each_rows_probabilities_and_keep_the_raw_ones() -> None:
    from inference.testing import FakeModel
    from jobs.execute import ChunkContext, execute_chunk
    from jobs.rows import InputRow

    rows = [InputRow(index=i, custom_id=str(i), prompt=f"review {i}") for i in range(6)]
    plain = JobSpec(op="classify", model="m", options=GenerateOptions(labels=("yes", "no")))
    weighted = JobSpec(op="classify", model="m", options=plain.options,
                       label_priors={"no": 4.0})
    ctx = ChunkContext(job_id="j", chunk=0, backend="fake", worker="w")
    with FakeModel("fake://test") as model:
        before = execute_chunk(model, plain, rows, ctx).results.to_pylist()
        after = execute_chunk(model, weighted, rows, ctx).results.to_pylist()
    for a, b in zip(before, after, strict=True):
        raw = {p["label"]: p["prob"] for p in a["label_probs"]}
        assert {p["label"]: p["prob"] for p in b["raw_label_probs"]} == pytest.approx(raw)
        expected_no = 4 * raw["no"] / (4 * raw["no"] + raw["yes"])
        assert {p["label"]: p["prob"] for p in b["label_probs"]}["no"] == pytest.approx(
            expected_no)
        assert b["label"] == ("no" if expected_no > 0.5 else "yes")
    with pytest.raises(InvalidJobSpec, match=r"label_priors.*positive numbers"):
        JobSpec(op="classify", model="m", label_priors={"no": 0})


# -- the command line and suite files ---------------------------------------------------------


@pytest.mark.parametrize(("text", "priors"), [
    ("positive=1,negative=3", {"positive": 1.0, "negative": 3.0}),
    ("a=b=0.5", {"a=b": 0.5}),
    ("", {}),
])
def test_priors_parse_from_the_command_line(text: str, priors: dict[str, float]) -> None:
    from worker.cli.options import parse_priors

    assert parse_priors(text) == priors


@pytest.mark.parametrize("text", ["positive", "positive=0", "positive=-1", "=2", "x=inf"])
def test_a_bad_prior_names_the_item(text: str) -> None:
    import click

    from worker.cli.options import parse_priors

    with pytest.raises(click.BadParameter, match=re.escape(repr(text))):
        parse_priors(text)


def test_contextual_calibration_takes_its_content_free_input_from_the_template() -> None:
    from jobs.mapping import InputMapping

    assert InputMapping(template="Review: {text}\nSentiment:").content_free() == {
        "prompt": "Review: N/A\nSentiment:"}
    assert InputMapping(template="{title}: {text}", system="Judge it.").content_free() == {
        "messages": [{"role": "system", "content": "Judge it."},
                     {"role": "user", "content": "N/A: N/A"}]}
    assert InputMapping(system="Judge it.").content_free() == {
        "messages": [{"role": "system", "content": "Judge it."},
                     {"role": "user", "content": "N/A"}]}
    assert InputMapping().content_free() is None


def test_a_suite_file_takes_calibrate_and_priors(tmp_path: Path) -> None:
    from jobs.suites import SuiteError, load_suites
    from worker.evals import run_specs

    (tmp_path / "data.csv").write_text("id,text,expected\n1,great,positive\n2,bad,negative\n")
    suite_text = """\
[suites.reviews]
models = ["demo"]
dataset = "data.csv"
labels = ["positive", "negative"]
scorer = "label"
template = "Review: {text}\\nSentiment:"
id_column = "id"
calibrate = "contextual"
priors = { negative = 2.0 }
"""
    (tmp_path / "evals.toml").write_text(suite_text)
    suite = load_suites(str(tmp_path / "evals.toml"))["reviews"]
    [spec] = run_specs(suite)
    assert (spec.calibrate, spec.label_priors) == ("contextual", {"negative": 2.0})
    assert spec.content_free == {"prompt": "Review: N/A\nSentiment:"}
    (tmp_path / "evals.toml").write_text(suite_text.replace('"contextual"', '"platt"'))
    with pytest.raises(SuiteError, match=r"calibrate.*'platt'"):
        load_suites(str(tmp_path / "evals.toml"))


@pytest.mark.slow
@pytest.mark.real_model
def test_contextual_calibration_of_a_templated_job_fixes_the_one_sided_prompt(
        smollm2_path: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    run_reviews(smollm2_path, results, "contextual", chunk_size=60)
    rows = rows_of(results)
    assert {r["calibration"] for r in rows} == {"contextual"}
    raw, calibrated = accuracy(rows, "raw_label_probs"), accuracy(rows, "label_probs")
    assert raw <= 0.6           # measured 0.50
    assert calibrated >= 0.85   # measured 0.93
