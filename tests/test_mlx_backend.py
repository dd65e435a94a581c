"""The MLX backend on the tiny generated llama, with the real mlx-lm engine (CPU here)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

mlx_lm = pytest.importorskip("mlx_lm")

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

import inference  # noqa: E402
from inference import (  # noqa: E402
    GenerateOptions,
    GenerationError,
    LoadOptions,
    Message,
    ModelLoadError,
    PromptError,
)
from inference._chat import render_chat  # noqa: E402
from inference.backends._mlx_model import MlxModel  # noqa: E402
from inference.backends._mlx_text import TokenBytes  # noqa: E402
from inference.testing import BOS_ID, TinyLlama, encode  # noqa: E402
from inference.testing.tiny_llama import CHAT_TEMPLATE  # noqa: E402

pytestmark = pytest.mark.mlx

PROMPTS = ("hello", "a much longer prompt, padded against the short ones", "x",
           "The quick brown fox", "héllo wörld")
GREEDY = GenerateOptions(max_tokens=12)


@pytest.fixture(scope="module")
def model(tiny_model: TinyLlama) -> Iterator[MlxModel]:
    with MlxModel.load(str(tiny_model.hf_dir), LoadOptions(backend="mlx")) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def narrow_model(tiny_model: TinyLlama) -> Iterator[MlxModel]:
    """Two slots and a 4-token prefill step: many groups, chunked prefill, sequences
    joining a decode batch that is already running."""
    options = LoadOptions(backend="mlx", parallel_slots=2, batch_tokens=4)
    with MlxModel.load(str(tiny_model.hf_dir), options) as loaded:
        yield loaded


def _ids(tokens: Any) -> list[int]:
    return [t.id for t in tokens]


def _reference_label_logprob(raw_model: Any, prompt: str, label: str) -> float:
    """log p(label | prompt): the full sequence through the raw mlx-lm model, no padding."""
    prompt_ids, label_ids = encode(prompt), encode(label, bos=False)
    logits = raw_model(mx.array([prompt_ids + label_ids]))[0].astype(mx.float32)
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    start = len(prompt_ids) - 1
    return float(sum(logprobs[start + t, tok] for t, tok in enumerate(label_ids)))


# -- classify -----------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["model", "narrow_model"])
def test_batched_classify_matches_classifying_one_prompt_at_a_time(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    loaded: MlxModel = request.getfixturevalue(fixture)
    options = GenerateOptions(logits=True)
    batched = loaded.classify(PROMPTS, options)
    for prompt, result in zip(PROMPTS, batched, strict=True):
        alone = loaded.classify([prompt], options)[0]
        assert result.token == alone.token
        assert result.prompt_tokens == len(encode(prompt))
        assert np.allclose(result.logits, alone.logits, atol=1e-4)


def test_classify_token_is_the_argmax_of_the_logits(model: MlxModel) -> None:
    for result in model.classify(PROMPTS, GenerateOptions(logits=True)):
        assert result.ok and result.logits is not None and result.token is not None
        assert len(result.logits) == 260
        assert result.token.id == int(np.argmax(result.logits))


def test_classify_without_logits_option_returns_no_logits(model: MlxModel) -> None:
    result = model.classify(["hello"])[0]
    assert result.logits is None and result.token is not None and result.label is None


@pytest.mark.parametrize("labels", [
    pytest.param(("yes please", "no thanks", "maybe", "x"), id="distinct-prefixes"),
    # bytes on the tiny model: prefixes shared at several depths, one row per trie branch
    pytest.param(("yes please", "yes sir", "no thanks", "no way", "very good", "very bad",
                  "very very good", "maybe", "x"), id="shared-prefixes"),
])
def test_labels_are_scored_over_their_full_token_sequences(
    model: MlxModel, tiny_model: TinyLlama, labels: tuple[str, ...]
) -> None:
    raw_model, _ = mlx_lm.load(str(tiny_model.hf_dir))
    results = model.classify(PROMPTS, GenerateOptions(labels=labels))
    for prompt, result in zip(PROMPTS, results, strict=True):
        probs = result.label_probs
        assert probs is not None and set(probs) == set(labels)
        assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9)
        assert result.label == max(probs, key=lambda label: probs[label])
        reference = {label: _reference_label_logprob(raw_model, prompt, label)
                     for label in labels}
        # Compare log-odds against the first label: probabilities here are very skewed.
        for label in labels[1:]:
            ours = math.log(probs[label]) - math.log(probs[labels[0]])
            theirs = reference[label] - reference[labels[0]]
            assert ours == pytest.approx(theirs, abs=1e-3), (prompt, label)


def test_labels_give_the_same_scores_in_narrow_batches(
    model: MlxModel, narrow_model: MlxModel
) -> None:
    options = GenerateOptions(labels=("yes please", "no thanks", "maybe"))
    wide, narrow = model.classify(PROMPTS, options), narrow_model.classify(PROMPTS, options)
    for a, b in zip(wide, narrow, strict=True):
        assert a.label == b.label and a.label_probs is not None and b.label_probs is not None
        for label, p in a.label_probs.items():
            assert math.log(p) == pytest.approx(math.log(b.label_probs[label]), abs=1e-3)


def test_load_model_through_the_registry_gives_a_working_mlx_model(
    tiny_model: TinyLlama,
) -> None:
    with inference.load_model(str(tiny_model.hf_dir), LoadOptions(backend="mlx")) as loaded:
        assert isinstance(loaded, inference.TextModel)
        assert loaded.model_type == "llama"
        info = loaded.info()
        assert (info.architecture, info.vocab_size, info.num_layers, info.hidden_size,
                info.quant_bits, info.context_len) == ("llama", 260, 2, 64, 0, 1024)
        assert loaded.classify(["hello"])[0].ok


# -- generation ---------------------------------------------------------------------------


def test_labels_one_of_which_begins_another_are_refused_on_every_row(model: MlxModel) -> None:
    results = model.classify(PROMPTS[:2], GenerateOptions(labels=("yes please", "y")))
    assert [r.error.code if r.error else None for r in results] == ["ambiguous_labels"] * 2
    assert "label 'y' is the first tokens of label 'yes please'" in str(results[0].error)


@pytest.mark.parametrize("fixture", ["model", "narrow_model"])
def test_batch_generate_greedy_equals_sequential_generate(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    loaded: MlxModel = request.getfixturevalue(fixture)
    batched = loaded.batch_generate(PROMPTS, GREEDY)
    for prompt, result in zip(PROMPTS, batched, strict=True):
        assert result.ok and result.finish_reason == "length"
        assert list(result.tokens) == list(loaded.generate(prompt, GREEDY))
    # Prompts that stop early free their slot for the next one mid-decode.
    stopping = GenerateOptions(max_tokens=12, stop_strings=("\x0e6",))
    batched = loaded.batch_generate(PROMPTS, stopping)
    assert {r.finish_reason for r in batched} == {"stop", "length"}
    for prompt, result in zip(PROMPTS, batched, strict=True):
        assert list(result.tokens) == list(loaded.generate(prompt, stopping))


def test_logprobs_are_the_models_next_token_distribution_batched_or_streamed(
        model: MlxModel) -> None:
    options = GenerateOptions(max_tokens=5, logprobs=True, top_logprobs=3)
    [scored] = model.classify(["hello"], GenerateOptions(logits=True))
    logits = np.array(scored.logits, dtype=np.float64)
    expected = logits - logits.max() - math.log(np.exp(logits - logits.max()).sum())
    streamed = list(model.generate("hello", options))
    [batched] = model.batch_generate(["hello"], options)
    first = batched.tokens[0]
    assert first.id == scored.token.id
    assert first.logprob == pytest.approx(expected[first.id], abs=1e-3)
    for a, b in zip(streamed, batched.tokens, strict=True):
        assert a.id == b.id and a.logprob == pytest.approx(b.logprob, abs=1e-3)
        assert len(b.top_logprobs) == 3
        assert b.top_logprobs[0][1] == pytest.approx(b.logprob)  # greedy: the likeliest
    assert all(t.logprob is None for t in model.batch_generate(["hello"], GREEDY)[0].tokens)


def test_max_tokens_gives_exactly_that_many_tokens(model: MlxModel) -> None:
    options = GenerateOptions(max_tokens=7)
    assert len(list(model.generate("hello", options))) == 7
    for result in model.batch_generate(PROMPTS, options):
        assert len(result.tokens) == 7 and result.finish_reason == "length"


def test_stop_token_ends_generation_before_it(model: MlxModel) -> None:
    greedy = _ids(model.generate("hello", GREEDY))
    stop = greedy[2]
    expected = greedy[: greedy.index(stop)]
    options = GenerateOptions(max_tokens=12, stop_tokens=(stop,))
    assert _ids(model.generate("hello", options)) == expected
    result = model.batch_generate(["hello"], options)[0]
    assert _ids(result.tokens) == expected and result.finish_reason == "stop"


def test_stop_string_ends_generation_and_is_not_returned(model: MlxModel) -> None:
    full = "".join(t.text for t in model.generate("hello", GREEDY))
    stop = full[2:4]  # two tokens: the stop string spans them
    expected = full[: full.index(stop)]
    assert expected and len(expected) < len(full) - 2
    options = GenerateOptions(max_tokens=12, stop_strings=("never", stop))
    assert "".join(t.text for t in model.generate("hello", options)) == expected
    results = model.batch_generate(["hello", *PROMPTS], options)
    assert results[0].text == expected and results[0].finish_reason == "stop"
    for prompt, result in zip(PROMPTS, results[1:], strict=True):
        assert list(result.tokens) == list(model.generate(prompt, options))
    assert {r.finish_reason for r in results[1:]} == {"stop", "length"}


def test_text_held_for_a_possible_stop_string_is_released(model: MlxModel) -> None:
    full = "".join(t.text for t in model.generate("hello", GREEDY))
    options = GenerateOptions(max_tokens=12, stop_strings=(full[-1] + "\x7f\x7f",))
    assert "".join(t.text for t in model.generate("hello", options)) == full
    assert model.batch_generate(["hello"], options)[0].text == full


def test_seeded_sampling_is_reproducible_and_depends_on_the_seed(model: MlxModel) -> None:
    def sample(seed: int) -> list[int]:
        return _ids(model.generate("hello", GenerateOptions(max_tokens=12, temperature=1.0,
                                                           seed=seed)))

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (8, 9, 10))
    batch = GenerateOptions(max_tokens=12, temperature=1.0, seed=7)
    assert model.batch_generate(PROMPTS, batch) == model.batch_generate(PROMPTS, batch)


def test_top_k_one_sampling_equals_greedy(model: MlxModel) -> None:
    options = GenerateOptions(max_tokens=12, temperature=1.0, top_k=1, seed=3)
    assert list(model.generate("hello", options)) == list(model.generate("hello", GREEDY))


def test_repeat_penalty_changes_a_repetitive_greedy_output(model: MlxModel) -> None:
    plain = _ids(model.generate("hello", GREEDY))
    assert len(set(plain)) < len(plain)  # the tiny model repeats itself
    penalised = GenerateOptions(max_tokens=12, repeat_penalty=1.5)
    assert _ids(model.generate("hello", penalised)) != plain


def test_token_texts_carry_whole_characters(model: MlxModel) -> None:
    tokens = list(model.generate("héllo wörld", GenerateOptions(max_tokens=40)))
    raw = bytes(t.id for t in tokens if t.id < 256)
    text = "".join(t.text for t in tokens)
    assert raw.decode("utf-8", errors="replace") == text
    assert any(t.text == "" for t in tokens)  # split characters were seen and joined


def test_token_bytes_follow_the_byte_level_vocabulary(tiny_model: TinyLlama) -> None:
    _, tokenizer = mlx_lm.load(str(tiny_model.hf_dir))
    pieces = TokenBytes(tokenizer)
    assert pieces.kind == "bpe"
    assert all(pieces(i) == bytes([i]) for i in range(256))
    assert (pieces(BOS_ID), pieces(259)) == (b"<s>", b"\x00\x00")


def test_prompt_starting_with_the_bos_text_gets_no_second_bos(model: MlxModel) -> None:
    list(model.generate("<s>hi", GenerateOptions(max_tokens=1)))
    assert model.metrics().prompt_tokens == 3
    list(model.generate("hi", GenerateOptions(max_tokens=1)))
    assert model.metrics().prompt_tokens == 3


def test_chat_renders_the_model_template_then_generates(model: MlxModel) -> None:
    assert model.chat_template() == CHAT_TEMPLATE
    assert model.special_tokens() == ("<s>", "</s>")
    messages = [Message("system", "be brief"), Message("user", "hi there")]
    rendered = render_chat(CHAT_TEMPLATE, messages, bos_token="<s>", eos_token="</s>")
    assert rendered.endswith("<|assistant|>")
    assert list(model.chat(messages, GREEDY)) == list(model.generate(rendered, GREEDY))


# -- bad prompts ----------------------------------------------------------------------------

LONG = "z" * 1100  # 1,101 tokens with BOS; the context is 1,024


def test_bad_prompts_in_classify_get_errors_while_the_rest_complete(model: MlxModel) -> None:
    prompts = ["hello", "", LONG, "x" * 1020, "world"]
    results = model.classify(prompts, GenerateOptions(labels=("yes please", "no")))
    assert [r.ok for r in results] == [True, False, False, False, True]
    codes = [r.error.code for r in results if r.error is not None]
    assert codes == ["empty_prompt", "prompt_too_long", "label_too_long"]
    assert "1,101 tokens" in str(results[2].error) and "1,024" in str(results[2].error)
    assert str(results[2].error).startswith("prompt 2:")
    assert "1,021 tokens" in str(results[3].error) and "'yes please'" in str(results[3].error)
    assert results[4].label in ("yes please", "no")
    alone = model.classify(["world"], GenerateOptions(labels=("yes please", "no")))[0]
    assert results[4].label_probs == pytest.approx(alone.label_probs, rel=1e-3)


def test_bad_prompts_in_batch_generate_get_errors_while_the_rest_complete(
    model: MlxModel,
) -> None:
    results = model.batch_generate(["hello", "", LONG, "world"], GREEDY)
    assert [r.finish_reason for r in results] == ["length", "error", "error", "length"]
    assert results[1].error is not None and results[1].error.code == "empty_prompt"
    assert results[2].error is not None and results[2].error.code == "prompt_too_long"
    assert "1,101 tokens" in str(results[2].error) and "1,024" in str(results[2].error)
    assert list(results[3].tokens) == list(model.generate("world", GREEDY))


@pytest.mark.parametrize("prompt", ["", LONG])
def test_generate_raises_prompt_error_for_a_bad_prompt(model: MlxModel, prompt: str) -> None:
    with pytest.raises(PromptError) as caught:
        model.generate(prompt)
    assert caught.value.code in ("empty_prompt", "prompt_too_long")


def test_generation_stops_at_the_context_length(tiny_model: TinyLlama) -> None:
    options = LoadOptions(backend="mlx", context_len=10)
    with MlxModel.load(str(tiny_model.hf_dir), options) as small:
        assert len(list(small.generate("hello", GREEDY))) == 4  # 6 prompt tokens + 4 = 10
        assert len(small.batch_generate(["hello"], GREEDY)[0].tokens) == 4


# -- metrics --------------------------------------------------------------------------------


def _check_metrics(loaded: MlxModel, prompt_tokens: int, generated: int) -> None:
    m = loaded.metrics()
    assert m.prompt_tokens == prompt_tokens and m.generated_tokens == generated
    assert m.prefill_seconds > 0 and m.total_seconds > 0
    assert (m.decode_seconds > 0) == (generated > 0)
    assert m.total_seconds >= (m.prefill_seconds + m.decode_seconds) * 0.99
    assert m.peak_memory_bytes > 0 and m.active_memory_bytes > 0


def test_metrics_are_non_zero_and_add_up(model: MlxModel) -> None:
    prompt_tokens = sum(len(encode(p)) for p in PROMPTS)
    results = model.batch_generate(PROMPTS, GREEDY)
    _check_metrics(model, prompt_tokens, sum(len(r.tokens) for r in results))
    tokens = list(model.generate("hello", GREEDY))
    _check_metrics(model, len(encode("hello")), len(tokens))
    model.classify(PROMPTS)
    _check_metrics(model, prompt_tokens, 0)


# -- loading and closing ----------------------------------------------------------------------


def _copy_model(tiny_model: TinyLlama, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model.hf_dir, target)
    return target


def test_missing_directory_is_a_load_error(tmp_path: Path) -> None:
    path = str(tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="no such directory") as caught:
        MlxModel.load(path)
    assert path in str(caught.value)


def test_directory_without_weights_is_a_load_error(tiny_model: TinyLlama, tmp_path: Path) -> None:
    path = _copy_model(tiny_model, tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors") as caught:
        MlxModel.load(str(path))
    assert str(path) in str(caught.value)


def test_gguf_file_is_a_load_error_that_names_the_expected_layout(tiny_model: TinyLlama) -> None:
    with pytest.raises(ModelLoadError, match="not a directory"):
        MlxModel.load(str(tiny_model.gguf_path))


def test_unreadable_config_is_a_load_error(tiny_model: TinyLlama, tmp_path: Path) -> None:
    path = _copy_model(tiny_model, tmp_path)
    (path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"config\.json is unreadable"):
        MlxModel.load(str(path))


def test_corrupt_safetensors_is_a_load_error(tiny_model: TinyLlama, tmp_path: Path) -> None:
    path = _copy_model(tiny_model, tmp_path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="mlx-lm could not load it") as caught:
        MlxModel.load(str(path))
    assert str(path) in str(caught.value)


def test_unknown_architecture_is_a_load_error(tiny_model: TinyLlama, tmp_path: Path) -> None:
    path = _copy_model(tiny_model, tmp_path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = "no_such_architecture"
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="mlx-lm could not load it"):
        MlxModel.load(str(path))


def test_context_manager_closes_the_model(tiny_model: TinyLlama) -> None:
    with MlxModel.load(str(tiny_model.hf_dir)) as loaded:
        assert loaded.classify(["hi"])[0].ok
    with pytest.raises(GenerationError, match="closed"):
        loaded.generate("hi")
    with pytest.raises(GenerationError):
        loaded.classify(["hi"])
    with pytest.raises(GenerationError):
        loaded.batch_generate(["hi"])
    loaded.close()  # idempotent
