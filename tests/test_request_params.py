"""Each request line's own parameters: honoured row by row, or refused with a code.

An OpenAI batch line carries ``model``, ``max_tokens``, ``stop``, ``temperature``,
``logprobs``... in its body. inferq runs every line with its own parameters (rows
with equal parameters batched together) and answers a line it cannot honour with an
error line naming the parameter; nothing is silently ignored. The output files are
OpenAI's shapes: ``chat.completion`` for chat requests, ``text_completion`` for
completions, each with ``usage`` and, when asked, ``logprobs``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import inference
from inference import GenerateOptions
from jobs.readers import read_input

INFERQ = str(Path(sys.executable).with_name("inferq"))
MODEL = "smollm2-135m-instruct"
COUNT = "Count from one to twenty, in digits, separated by spaces."


def chat_line(custom_id: str, text: str, **body: object) -> dict[str, object]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}]} | body}


def completion_line(custom_id: str, prompt: str, **body: object) -> dict[str, object]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/completions",
            "body": {"model": MODEL, "prompt": prompt} | body}


def write_lines(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


# -- reading: what each body asks for, or why it cannot run -------------------------


def rows_of(tmp_path: Path, lines: list[dict[str, object]]) -> dict[str, object]:
    return {r.custom_id: r for r in read_input(str(write_lines(tmp_path / "in.jsonl", lines)))}


def test_body_parameters_become_the_rows_own_options(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, [
        chat_line("a", "hi", max_completion_tokens=5, stop="\n", temperature=0.7, seed=3),
        completion_line("b", "hi", max_tokens=2, logprobs=3),
        chat_line("c", "hi", logprobs=True, top_logprobs=2, user="someone", n=1),
        chat_line("d", "hi")])
    assert rows["a"].options == {"max_tokens": 5, "stop_strings": ["\n"], "temperature": 0.7,
                                 "seed": 3}
    assert rows["b"].options == {"max_tokens": 2, "logprobs": True, "top_logprobs": 3}
    assert rows["c"].options == {"logprobs": True, "top_logprobs": 2}
    assert rows["d"].options is None and rows["d"].model == MODEL


@pytest.mark.parametrize(("body", "code", "says"), [
    ({"tools": []}, "unsupported_parameter", "body.tools is not supported"),
    ({"n": 2}, "unsupported_parameter", "body.n=2 is not supported"),
    ({"stream": True}, "unsupported_parameter", "body.stream=True"),
    ({"response_format": {"type": "json_object"}}, "unsupported_parameter",
     "body.response_format"),
    ({"temperature": -1}, "invalid_parameter", "body.temperature: must be >= 0"),
    ({"max_tokens": "ten"}, "invalid_parameter", "body.max_tokens is string, expected an "
     "integer"),
    ({"top_logprobs": 2}, "invalid_parameter", "needs logprobs"),
    ({"logprobs": "yes"}, "invalid_parameter", "body.logprobs is string"),
    ({"model": 7}, "invalid_parameter", "body.model is int"),
])
def test_a_parameter_inferq_cannot_honour_makes_an_error_row_naming_it(
        tmp_path: Path, body: dict[str, object], code: str, says: str) -> None:
    rows = rows_of(tmp_path, [chat_line("bad", "hi", **body), chat_line("good", "hi")])
    assert rows["bad"].error_code == code
    assert says in str(rows["bad"].error_message)
    assert rows["good"].ok


# -- running: one real model, every line with its own parameters ----------------------


@pytest.fixture(scope="module")
def ran(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One `inferq run` of a chat batch, exported as the OpenAI output and error files."""
    tmp = tmp_path_factory.mktemp("params")
    lines = [
        chat_line("one-token", COUNT, max_tokens=1),
        chat_line("twelve-tokens", COUNT, max_completion_tokens=12),
        chat_line("stopped", COUNT, max_tokens=30, stop=["5"]),
        chat_line("logprobs", COUNT, max_tokens=4, logprobs=True, top_logprobs=3),
        chat_line("other-model", COUNT, model="gpt-4o-mini"),
        chat_line("tools", COUNT, tools=[]),
        chat_line("negative-temperature", COUNT, temperature=-1),
    ]
    source = write_lines(tmp / "in.jsonl", lines)
    results = tmp / "results"
    common = [INFERQ, "--results", str(results)]
    out = subprocess.run([*common, "run", "generate", str(source), "--model", MODEL,
                          "--model-root", str(smollm2_path.parent), "--json"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job_id"]
    files = {"output": tmp / "output.jsonl", "errors": tmp / "errors.jsonl"}
    for name, extra in (("output", []), ("errors", ["--errors"])):
        done = subprocess.run([*common, "results", job_id, "--openai", *extra, "--to",
                               str(files[name])], capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
    return files


def lines_of(path: Path) -> dict[str, dict[str, object]]:
    return {line["custom_id"]: line for line in map(json.loads, path.read_text().splitlines())}


def body_of(ran: dict[str, Path], custom_id: str) -> dict[str, object]:
    return lines_of(ran["output"])[custom_id]["response"]["body"]


@pytest.mark.slow
@pytest.mark.real_model
def test_chat_requests_come_back_as_chat_completions_with_usage(ran: dict[str, Path]) -> None:
    body = body_of(ran, "twelve-tokens")
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("1")
    usage = body["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12 and usage["prompt_tokens"] > 10


@pytest.mark.slow
@pytest.mark.real_model
def test_each_lines_max_tokens_is_honoured(ran: dict[str, Path]) -> None:
    one, twelve = body_of(ran, "one-token"), body_of(ran, "twelve-tokens")
    assert one["usage"]["completion_tokens"] == 1
    assert one["choices"][0]["finish_reason"] == "length"
    assert twelve["choices"][0]["finish_reason"] == "length"
    assert twelve["choices"][0]["message"]["content"].startswith(
        one["choices"][0]["message"]["content"])


@pytest.mark.slow
@pytest.mark.real_model
def test_a_lines_stop_string_ends_its_answer_before_the_stop(ran: dict[str, Path]) -> None:
    stopped = body_of(ran, "stopped")["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["message"]["content"] == "1234"


@pytest.mark.slow
@pytest.mark.real_model
def test_logprobs_come_in_openais_chat_shape(ran: dict[str, Path]) -> None:
    choice = body_of(ran, "logprobs")["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    for token in content:
        assert token["logprob"] <= 0
        assert token["bytes"] == list(token["token"].encode())
        alternatives = [t["logprob"] for t in token["top_logprobs"]]
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        # greedy: the chosen token is the likeliest one
        assert token["top_logprobs"][0]["token"] == token["token"]
        assert math.isclose(token["top_logprobs"][0]["logprob"], token["logprob"])
    assert body_of(ran, "twelve-tokens")["choices"][0]["logprobs"] is None


@pytest.mark.slow
@pytest.mark.real_model
def test_lines_that_cannot_run_are_error_lines_with_their_code(ran: dict[str, Path]) -> None:
    errors = lines_of(ran["errors"])
    assert {k: v["error"]["code"] for k, v in errors.items()} == {
        "other-model": "mismatched_model", "tools": "unsupported_parameter",
        "negative-temperature": "invalid_parameter"}
    assert "gpt-4o-mini" in errors["other-model"]["error"]["message"]
    assert set(lines_of(ran["output"])).isdisjoint(errors)


@pytest.mark.slow
@pytest.mark.real_model
def test_a_generated_tokens_logprob_is_the_models_next_token_distribution(
        smollm2_path: Path) -> None:
    """The first generated token's log-probability equals the log-softmax of the
    prompt's last logits, as classify computes them."""
    with inference.load_model(str(smollm2_path), inference.LoadOptions(backend="llama_cpp")) \
            as model:
        prompt = model.render_chat([inference.Message("user", COUNT)])
        [result] = model.batch_generate([prompt], GenerateOptions(
            max_tokens=3, logprobs=True, top_logprobs=5))
        [scored] = model.classify([prompt], GenerateOptions(logits=True))
    logits = np.array(scored.logits, dtype=np.float64)
    expected = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
    first = result.tokens[0]
    assert first.id == scored.token.id
    assert first.logprob == pytest.approx(expected[first.id], abs=0.05)
    top = np.argsort(-expected)[:5]
    assert [lp for _, lp in first.top_logprobs] == pytest.approx(expected[top], abs=0.05)


def test_a_plain_line_carries_its_own_label_set(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "The sky is", "labels": ["blue", "green"]}\n'
                    '{"prompt": "Grass is", "labels": "green"}\n'
                    '{"prompt": "Snow is"}\n', encoding="utf-8")
    first, second, third = read_input(str(path))
    assert first.options == {"labels": ["blue", "green"]}
    assert second.error_code == "invalid_parameter"
    assert "body.labels is string, expected an array of strings" in str(second.error_message)
    assert third.ok and third.options is None


def test_rows_with_their_own_label_sets_are_labelled_among_their_own_labels() -> None:
    from inference.testing import FakeModel
    from jobs.execute import ChunkContext, execute_chunk
    from jobs.rows import InputRow
    from jobs.spec import JobSpec

    spec = JobSpec(op="classify", model="fake", options=GenerateOptions(labels=("yes", "no")))
    rows = [InputRow(index=0, custom_id="a", prompt="Is it?"),
            InputRow(index=1, custom_id="b", prompt="Which colour?",
                     options={"labels": ["red", "green", "blue"]}),
            InputRow(index=2, custom_id="c", prompt="Which animal? ",
                     options={"labels": ["cat", "dog"]})]
    with FakeModel("fake://test") as model:
        out = execute_chunk(model, spec, rows, ChunkContext(job_id="j", chunk=0,
                                                            backend="fake", worker="w"))
    results = out.results.to_pylist()
    for row, labels in zip(results, (("yes", "no"), ("red", "green", "blue"), ("cat", "dog")),
                           strict=True):
        assert row["error_code"] is None
        assert [p["label"] for p in row["label_probs"]] == list(labels)  # as written
        assert row["label"] in labels
        assert row["label_prob"] == max(p["prob"] for p in row["label_probs"])


def test_labels_that_become_the_same_after_a_word_are_an_error_row_not_a_crash() -> None:
    from inference.testing import FakeModel
    from jobs.execute import ChunkContext, execute_chunk
    from jobs.rows import InputRow
    from jobs.spec import JobSpec

    spec = JobSpec(op="classify", model="fake", options=GenerateOptions(labels=("yes", "no")))
    rows = [InputRow(index=0, custom_id="clash", prompt="Is it",
                     options={"labels": ["yes", " yes"]}),
            InputRow(index=1, custom_id="spaced", prompt="Is it",
                     options={"labels": [" yes", " no"]}),
            InputRow(index=2, custom_id="bare", prompt="Is it")]
    with FakeModel("fake://test") as model:
        out = execute_chunk(model, spec, rows, ChunkContext(job_id="j", chunk=0,
                                                            backend="fake", worker="w"))
    clash, spaced, bare = out.results.to_pylist()
    assert clash["error_code"] == "ambiguous_labels"
    assert "scored as ' yes', ' yes'" in clash["error_message"]
    # the same scored labels, each row's own names kept
    assert [p["label"] for p in spaced["label_probs"]] == [" yes", " no"]
    assert [p["label"] for p in bare["label_probs"]] == ["yes", "no"]
