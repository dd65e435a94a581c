"""SmolLM2-135M-Instruct, a real quantised instruct model, through inferq's public API,
`inferq run` and a queued job.

The reference is llama-cpp-python's own high-level `Llama` on the same file, with
flash attention on as inferq's contexts have it (llama.cpp's default, "auto", turns
it on for CPU; off, logits move by about 0.3 on this model). Against that reference,
one prompt at a time, label probabilities agree to 1e-5 and greedy text is identical.

Batch shape moves this Q4_1 model's numbers in llama.cpp itself: the same 118-token
prompt evaluated in ubatches of 32 instead of 512 moves its last logits by 0.55
(flash attention on; without it, ubatches of 1 move them by 0.72). Over the demo's 120
reviews, batched rows differ from one-at-a-time by up to 0.08 in label probability
(mean 0.02), and shared-prefix reuse on versus off by up to 0.11. So across batch
shapes probabilities are compared within TOLERANCE, labels only where their margin is
clear, and greedy text only up to a token whose top-two margin is small.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

import inference
from inference import GenerateOptions, Message

pytestmark = [pytest.mark.real_model, pytest.mark.llama, pytest.mark.slow]

INFERQ = str(Path(sys.executable).parent / "inferq")
#: Largest difference of one label probability between two batch shapes (measured: 0.11).
TOLERANCE = 0.15
#: A two-way label decision is "clear" when its probabilities differ by more than this.
CLEAR_MARGIN = 2 * TOLERANCE
#: Greedy tokens may differ across batch shapes where the top two logits are this close.
CLOSE_LOGITS = 1.0
REVIEWS_CSV = Path(__file__).resolve().parent.parent / "scripts" / "data" / "reviews.csv"
SYSTEM = "Is the following customer review positive or negative? Answer with one word."
REVIEWS = {
    "Absolutely love this blender, it crushes ice in seconds.": "positive",
    "The headphones broke after two days. Total waste of money.": "negative",
    "Best coffee maker I have ever owned.": "positive",
    "Customer service never answered my emails. Awful experience.": "negative",
    "Works exactly as described. Very happy with it.": "positive",
    "Worst purchase I have made this year.": "negative",
    "Five stars, this backpack is tough and comfortable.": "positive",
    "It leaked all over my kitchen floor on day one.": "negative",
}


@pytest.fixture(scope="module")
def model(smollm2_path):
    with inference.load_model(str(smollm2_path), inference.LoadOptions(backend="llama_cpp")) as m:
        yield m


@pytest.fixture(scope="module")
def reference(smollm2_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(str(smollm2_path), n_ctx=1024, logits_all=True, flash_attn=True,
                           n_threads=2, verbose=False)


def chat(model, text: str) -> str:
    return model.render_chat([Message("system", SYSTEM), Message("user", text)])


def reference_label_probs(reference, prompt: str, labels: tuple[str, ...]) -> np.ndarray:
    """P(label | prompt) over the label's full token sequence, normalised over labels."""
    prompt_ids = reference.tokenize(prompt.encode(), add_bos=True, special=True)
    logprobs = []
    for label in labels:
        label_ids = reference.tokenize(label.encode(), add_bos=False, special=False)
        reference.reset()
        reference.eval(prompt_ids + label_ids)
        scores = np.asarray(reference.scores[:len(prompt_ids) + len(label_ids)], dtype=np.float64)
        total = 0.0
        for j, token in enumerate(label_ids):
            row = scores[len(prompt_ids) - 1 + j]
            total += row[token] - row.max() - np.log(np.exp(row - row.max()).sum())
        logprobs.append(total)
    p = np.exp(np.array(logprobs) - max(logprobs))
    return p / p.sum()


def token_ids(reference, text: str) -> list[int]:
    return reference.tokenize(text.encode(), add_bos=False, special=False)


# -- classify --------------------------------------------------------------------------


@pytest.mark.parametrize(("labels", "template"), [
    pytest.param((" positive", " negative"), "Review: {}\nSentiment:", id="leading-space"),
    pytest.param(("positive", "negative"), None, id="no-space-after-chat-template"),
    pytest.param((" very good", " very bad", " okay"), "Review: {}\nThe product is",
                 id="multi-token-with-colliding-first-tokens"),
    pytest.param(("Positive", "Negative", "Neutral"), None, id="capitalised-three-way"),
])
def test_label_probabilities_equal_full_sequence_scoring_by_llama_cpp_python(
        model, reference, labels, template):
    texts = list(REVIEWS)[:4]  # the reference scores every label by a full evaluation
    prompts = [template.format(text) if template else chat(model, text) for text in texts]
    for prompt in prompts:
        [result] = model.classify([prompt], GenerateOptions(labels=labels))
        expected = reference_label_probs(reference, prompt, labels)
        got = np.array([result.label_probs[label] for label in labels])
        assert np.abs(got - expected).max() < 1e-5, (prompt, got, expected)
        assert result.label == labels[int(np.argmax(expected))]


def test_the_multi_token_labels_really_share_their_first_token(reference):
    good, bad = token_ids(reference, " very good"), token_ids(reference, " very bad")
    assert len(good) == 2 and len(bad) == 2 and good[0] == bad[0]


def test_a_leading_space_is_its_own_token_and_changes_the_probabilities(model, reference):
    assert token_ids(reference, " positive") != token_ids(reference, "positive")
    prompt = "Review: Best coffee maker I have ever owned.\nSentiment:"
    spaced = model.classify([prompt], GenerateOptions(labels=(" positive", " negative")))[0]
    bare = model.classify([prompt], GenerateOptions(labels=("positive", "negative")))[0]
    assert spaced.label == " positive"
    assert abs(spaced.label_probs[" positive"] - bare.label_probs["positive"]) > 1e-3


def test_chat_rendered_reviews_are_labelled_right_far_above_chance(model):
    with open(REVIEWS_CSV, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    results = model.classify([chat(model, row["text"]) for row in rows],
                             GenerateOptions(labels=("positive", "negative")))
    right = sum(r.label == row["label"] for r, row in zip(results, rows, strict=True))
    # Measured 100/120 here; random weights or a mangled template score about 60.
    assert right >= 94, right
    assert {r.label for r in results} == {"positive", "negative"}


def clear(probs: dict[str, float]) -> bool:
    return abs(probs["positive"] - probs["negative"]) > CLEAR_MARGIN


def test_batched_classify_equals_one_at_a_time_within_the_tolerance(model):
    prompts = [chat(model, text) for text in REVIEWS]
    labels = GenerateOptions(labels=("positive", "negative"))
    together = model.classify(prompts, labels)
    for prompt, batched in zip(prompts, together, strict=True):
        alone = model.classify([prompt], labels)[0]
        for label, p in alone.label_probs.items():
            assert abs(batched.label_probs[label] - p) < TOLERANCE
        if clear(alone.label_probs):
            assert batched.label == alone.label


def test_a_prompts_result_depends_on_its_batch_shape_not_on_its_neighbours(model):
    """Neighbours of the same length leave a prompt's logits bit-identical: no leaks."""
    target = chat(model, "Best coffee maker I have ever owned.")
    opts = GenerateOptions(logits=True)
    with_a = model.classify([target, chat(model, "Great value for the price.")], opts)[0]
    with_b = model.classify([target, chat(model, "Awful value for the price.")], opts)[0]
    assert with_a.logits == with_b.logits


def test_shared_prefix_reuse_changes_no_clear_label(model, monkeypatch):
    """The system prompt is a shared prefix: decoded once, its KV cells copied."""
    from inference.backends import _llama_model

    prompts = [chat(model, text) for text in REVIEWS]
    opts = GenerateOptions(labels=("positive", "negative"))
    shared = model.classify(prompts, opts)
    assert model.reused_prefix_tokens >= 20 * (len(prompts) - 1)
    monkeypatch.setattr(_llama_model, "MIN_SHARED_PREFIX", 10**9)
    anew = model.classify(prompts, opts)
    assert model.reused_prefix_tokens == 0
    for a, b in zip(shared, anew, strict=True):
        assert abs(a.label_probs["positive"] - b.label_probs["positive"]) < TOLERANCE
        if clear(b.label_probs):
            assert a.label == b.label


# -- chat templates --------------------------------------------------------------------


def test_chat_rendering_matches_the_models_own_template_with_system_and_several_turns(
        model, reference):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    messages = [Message("system", "You are terse."), Message("user", "Hi"),
                Message("assistant", "Hello."), Message("user", "Name a colour.")]
    ours = model.render_chat(messages)
    theirs = Jinja2ChatFormatter(
        template=reference.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
        bos_token="<|im_start|>", add_generation_prompt=True,
    )(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
    assert ours == theirs
    assert ours == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi"
                    "<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n"
                    "Name a colour.<|im_end|>\n<|im_start|>assistant\n")


def test_chat_without_a_system_message_gets_the_templates_default_system_prompt(model):
    rendered = model.render_chat([Message("user", "Hi")])
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


# -- generation ------------------------------------------------------------------------

QUESTIONS = ["What is 2 plus 2?", "Write a haiku about the sea.",
             "Name three primary colours.", "How many days are in a week?"]
BRIEF = "You are a helpful assistant. Answer briefly."


def ask(model, question: str, system: str | None = None) -> str:
    return model.render_chat(([Message("system", system)] if system else [])
                             + [Message("user", question)])


def greedy(model, prompt: str, max_tokens: int = 16) -> list:
    return list(model.generate(prompt, GenerateOptions(max_tokens=max_tokens)))


def test_greedy_generate_equals_llama_cpp_pythons_own_greedy_output(model, reference):
    for question in QUESTIONS:
        prompt = ask(model, question)
        ours = "".join(t.text for t in greedy(model, prompt, 24))
        theirs = reference.create_completion(
            prompt, max_tokens=24, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
            repeat_penalty=1.0)["choices"][0]["text"]
        assert ours == theirs


@pytest.mark.parametrize(("question", "system", "answer"), [
    ("What is 2 plus 2?", None, "4"),
    ("How many days are in a week?", BRIEF, "7"),
    ("Which planet is the largest in our solar system?", BRIEF, "Jupiter"),
])
def test_greedy_answers_are_coherent(model, question, system, answer):
    text = "".join(t.text for t in greedy(model, ask(model, question, system)))
    assert answer in text, text


def test_a_stop_string_ends_generation_before_it_is_returned(model):
    prompt = ask(model, "How many days are in a week?", BRIEF)
    full = "".join(t.text for t in greedy(model, prompt))
    assert "7" in full
    [stopped] = model.batch_generate([prompt], GenerateOptions(max_tokens=16,
                                                               stop_strings=("7",)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == full[:full.index("7")]


def test_a_seed_makes_sampling_repeatable_and_another_seed_changes_it(model):
    prompt = ask(model, "Tell me a short story about a cat.")

    def sample(seed: int) -> str:
        opts = GenerateOptions(max_tokens=24, temperature=1.0, seed=seed)
        return "".join(t.text for t in model.generate(prompt, opts))

    first = sample(7)
    assert sample(7) == first
    assert sample(8) != first


def test_batch_generate_equals_one_at_a_time_up_to_a_close_call(model):
    """Where the two differ, the token one-at-a-time chose was a near tie."""
    prompts = [ask(model, q) for q in QUESTIONS]
    together = model.batch_generate(prompts, GenerateOptions(max_tokens=16))
    identical = 0
    for prompt, batched in zip(prompts, together, strict=True):
        alone = greedy(model, prompt)
        ids = [t.id for t in batched.tokens]
        k = next((i for i, t in enumerate(alone) if i >= len(ids) or ids[i] != t.id), None)
        if k is None and len(ids) == len(alone):
            identical += 1
            continue
        assert k is not None
        before = prompt + "".join(t.text for t in alone[:k])
        [at] = model.classify([before], GenerateOptions(logits=True))
        top2 = sorted(at.logits)[-2:]
        assert top2[1] - top2[0] < CLOSE_LOGITS, (prompt, k, top2)
    assert identical >= len(prompts) // 2


# -- through inferq run and a queued job -----------------------------------------------


def write_reviews(path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(REVIEWS):
            body = {"messages": [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": text}]}
            f.write(json.dumps({"custom_id": f"r{i}", "url": "/v1/chat/completions",
                                "body": body}) + "\n")


def check_against_the_api(model, results: Path) -> None:
    """Every row's label and probabilities as the public API gives them for its prompt."""
    table = ds.dataset(results / "results", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(REVIEWS)
    assert table.column("error_code").null_count == table.num_rows
    rows = {row["custom_id"]: row for row in table.to_pylist()}
    api = model.classify([chat(model, text) for text in REVIEWS],
                         GenerateOptions(labels=("positive", "negative")))
    for i, expected in enumerate(api):
        row = rows[f"r{i}"]
        probs = {p["label"]: p["prob"] for p in row["label_probs"]}
        assert abs(probs["positive"] - expected.label_probs["positive"]) < TOLERANCE
        if clear(expected.label_probs):
            assert row["label"] == expected.label


def test_inferq_run_labels_real_reviews_like_the_public_api(model, tmp_path, smollm2_path):
    write_reviews(tmp_path / "in.jsonl")
    out = subprocess.run([INFERQ, "--results", str(tmp_path / "out"), "run", "classify",
                          str(tmp_path / "in.jsonl"), "--model", "smollm2-135m-instruct",
                          "--model-root", str(smollm2_path.parent), "--labels",
                          "positive,negative", "--chunk-size", "3", "--json"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    check_against_the_api(model, tmp_path / "out")


def test_a_queued_job_labels_real_reviews_like_the_public_api(model, redis_url, tmp_path,
                                                               smollm2_path, start_worker):
    write_reviews(tmp_path / "in.jsonl")
    results = tmp_path / "results"
    start_worker("w-real", str(results), model_roots=str(smollm2_path.parent),
                 backends="llama_cpp")
    out = subprocess.run([INFERQ, "--broker-url", redis_url, "--results", str(results),
                          "submit", "classify", str(tmp_path / "in.jsonl"), "--model",
                          "smollm2-135m-instruct", "--labels", "positive,negative",
                          "--chunk-size", "3", "--wait", "--json"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["request_counts"] == {"total": 8, "completed": 8, "failed": 0}
    check_against_the_api(model, results)
