"""The llama.cpp backend against the real engine, on the tiny generated model."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

import inference
from inference import GenerateOptions, LoadOptions, ModelLoadError, PromptError
from inference._label_trie import LabelTrie
from inference.testing import encode

pytestmark = pytest.mark.llama

PROMPTS = ["The quick brown fox", "Hi", "A somewhat longer prompt, with punctuation!",
           "naïve café ünïcödé", "12345"]
# Batched and single runs differ by float rounding (f16 KV cache, other reduction order).
PREFIX = "Classify the sentiment of the following review as positive or negative. Review: "


@pytest.fixture(scope="module")
def model(tiny_model):
    with inference.load_model(str(tiny_model.gguf_path), LoadOptions(backend="llama_cpp")) as m:
        yield m


@pytest.fixture(scope="module")
def reference(tiny_model):
    """llama-cpp-python's high-level API on the same file: the independent reference."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(tiny_model.gguf_path), n_ctx=1024, logits_all=True,
                verbose=False, n_threads=2)
    yield llm
    llm.close()


def reference_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[len(ids) - 1], dtype=np.float32)


def test_batched_classify_matches_one_prompt_at_a_time(model):
    batched = model.classify(PROMPTS, GenerateOptions(logits=True))
    for prompt, together in zip(PROMPTS, batched, strict=True):
        alone = model.classify([prompt], GenerateOptions(logits=True))[0]
        assert together.token == alone.token
        np.testing.assert_allclose(together.logits, alone.logits, atol=1e-2)


def test_classify_logits_match_the_engines_high_level_api(model, reference):
    results = model.classify(PROMPTS, GenerateOptions(logits=True))
    for prompt, result in zip(PROMPTS, results, strict=True):
        expected = reference_logits(reference, encode(prompt))
        np.testing.assert_allclose(result.logits, expected, atol=1e-2)
        assert result.token.id == int(np.argmax(expected))
        assert result.prompt_tokens == len(encode(prompt))


def test_shared_prefix_is_computed_once_and_changes_no_result(tiny_model):
    prompts = [PREFIX + s for s in ("great film", "awful", "meh, fine", "loved it!!", "no")]
    # The prefix cache off: nothing is kept from one call to the next.
    with inference.load_model(str(tiny_model.gguf_path),
                              LoadOptions(backend="llama_cpp", prefix_cache_tokens=-1)) as model:
        shared = model.classify(prompts, GenerateOptions(logits=True))
        reused = model.reused_prefix_tokens
        assert reused == len(encode(PREFIX)) * (len(prompts) - 1)
        singles = [model.classify([p], GenerateOptions(logits=True))[0] for p in prompts]
        assert model.reused_prefix_tokens == 0
    for result, alone in zip(shared, singles, strict=True):
        assert result.token == alone.token
        np.testing.assert_allclose(result.logits, alone.logits, atol=1e-2)


def reference_label_probs(reference, prompt: str, labels: tuple[str, ...]) -> dict[str, float]:
    """P(label | prompt) by evaluating prompt + label in full, one label at a time."""
    n = len(encode(prompt))
    logprobs = {}
    for label in labels:
        ids = encode(prompt) + encode(label, bos=False)
        reference.reset()
        reference.eval(ids)
        total = 0.0
        for k, token in enumerate(ids[n:]):
            row = np.array(reference.scores[n - 1 + k], dtype=np.float64)
            total += row[token] - row.max() - np.log(np.exp(row - row.max()).sum())
        logprobs[label] = total
    top = max(logprobs.values())
    norm = sum(np.exp(v - top) for v in logprobs.values())
    return {label: float(np.exp(v - top) / norm) for label, v in logprobs.items()}


def test_label_probabilities_cover_every_token_of_multi_token_labels(model, reference):
    labels = ("yes please", "no thanks", "maybe", "x")
    prompts = [PREFIX + "great film", "Tell me: ", "Hi"]
    results = model.classify(prompts, GenerateOptions(labels=labels))
    for prompt, result in zip(prompts, results, strict=True):
        expected = reference_label_probs(reference, prompt, labels)
        for label in labels:
            assert result.label_probs[label] == pytest.approx(expected[label], abs=1e-3)
        assert sum(result.label_probs.values()) == pytest.approx(1.0)
        assert result.label == max(expected, key=expected.get)


#: Labels whose tokens (bytes, on the tiny model) share prefixes at several depths.
TRIE_LABELS = ("yes please", "yes sir", "no thanks", "no way", "very good", "very bad",
               "very very good", "maybe", "x")


def test_labels_sharing_prefixes_decode_each_shared_prefix_once(model, reference):
    ids = [encode(label, bos=False) for label in TRIE_LABELS]
    trie = LabelTrie.build(ids)
    [result] = model.classify(["Tell me: "], GenerateOptions(labels=TRIE_LABELS))
    assert model.label_tokens_decoded == len(trie.nodes)
    assert len(trie.nodes) < sum(len(label) - 1 for label in ids)  # what one decode each costs
    expected = reference_label_probs(reference, "Tell me: ", TRIE_LABELS)
    for label in TRIE_LABELS:
        assert result.label_probs[label] == pytest.approx(expected[label], abs=1e-3)


def test_many_labels_over_several_decode_calls_score_like_full_evaluation(
        tiny_model, reference):
    # 4 sequences for 3 prompts: most branches wait for a later call, some go to the spare
    prompts = [PREFIX + "great film", "Tell me: ", "Hi"]
    with inference.load_model(str(tiny_model.gguf_path),
                              LoadOptions(backend="llama_cpp", parallel_slots=4)) as small:
        results = small.classify(prompts, GenerateOptions(labels=TRIE_LABELS))
        trie = LabelTrie.build([encode(label, bos=False) for label in TRIE_LABELS])
        assert small.label_tokens_decoded > len(trie.nodes) * len(prompts)  # several calls
    for prompt, result in zip(prompts, results, strict=True):
        expected = reference_label_probs(reference, prompt, TRIE_LABELS)
        for label in TRIE_LABELS:
            assert result.label_probs[label] == pytest.approx(expected[label], abs=1e-3)
        assert result.label == max(expected, key=expected.get)


def test_batch_generate_greedy_equals_sequential_generate(model):
    options = GenerateOptions(max_tokens=16)
    batched = model.batch_generate(PROMPTS, options)
    for prompt, result in zip(PROMPTS, batched, strict=True):
        alone = list(model.generate(prompt, options))
        assert result.tokens == tuple(alone)
        assert result.finish_reason == "length"
        assert len(result.tokens) == 16


def test_batch_generate_with_more_prompts_than_slots_keeps_order(tiny_model):
    path = str(tiny_model.gguf_path)
    with inference.load_model(path, LoadOptions(parallel_slots=2, context_len=256)) as small:
        prompts = [f"prompt number {i}" for i in range(7)]
        batched = small.batch_generate(prompts, GenerateOptions(max_tokens=6))
        for prompt, result in zip(prompts, batched, strict=True):
            assert result.text == "".join(t.text for t in small.generate(
                prompt, GenerateOptions(max_tokens=6)))


def test_greedy_generation_matches_the_high_level_api(model, reference):
    reference.reset()
    expected = []
    for token in reference.generate(encode("Once upon"), top_k=1, top_p=1.0, min_p=0.0,
                                    temp=0.0, repeat_penalty=1.0):
        expected.append(token)
        if len(expected) == 12:
            break
    ours = [t.id for t in model.generate("Once upon", GenerateOptions(max_tokens=12))]
    assert ours == expected


def test_max_tokens_and_stop_tokens_are_honoured(model):
    full = list(model.generate("stop test", GenerateOptions(max_tokens=10)))
    assert len(full) == 10
    stop_at = next(i for i, t in enumerate(full) if t.id not in {u.id for u in full[:i]} and i)
    stopped = list(model.generate(
        "stop test", GenerateOptions(max_tokens=10, stop_tokens=(full[stop_at].id,))))
    assert [t.id for t in stopped] == [t.id for t in full[:stop_at]]
    result = model.batch_generate(
        ["stop test"], GenerateOptions(max_tokens=10, stop_tokens=(full[stop_at].id,)))[0]
    assert result.finish_reason == "stop"
    assert result.tokens == tuple(stopped)
    assert result.text == bytes(t.id for t in stopped).decode("utf-8", errors="replace")


def test_stop_strings_end_generation_before_the_stop_text(model):
    text = "".join(t.text for t in model.generate("Hello", GenerateOptions(max_tokens=12)))
    stop = text[5:7]
    cut = text.index(stop)
    out = model.batch_generate(["Hello"], GenerateOptions(max_tokens=12, stop_strings=(stop,)))
    assert out[0].text == text[:cut]
    assert out[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(model):
    sampled = GenerateOptions(max_tokens=24, temperature=1.0, seed=7)
    first = [t.id for t in model.generate("Seed", sampled)]
    again = [t.id for t in model.generate("Seed", sampled)]
    other = [t.id for t in model.generate("Seed", dataclasses.replace(sampled, seed=8))]
    greedy = [t.id for t in model.generate("Seed", GenerateOptions(max_tokens=24))]
    assert first == again
    assert first != other
    assert first != greedy
    batched = model.batch_generate(["Seed", "Seed"], sampled)
    assert [t.id for t in batched[0].tokens] == first == [t.id for t in batched[1].tokens]


def test_top_k_one_sampling_is_greedy(model):
    greedy = list(model.generate("top k", GenerateOptions(max_tokens=12)))
    top1 = list(model.generate("top k", GenerateOptions(max_tokens=12, temperature=0.9,
                                                        top_k=1, seed=3)))
    assert top1 == greedy


def test_repeat_penalty_changes_greedy_output(model):
    plain = [t.id for t in model.generate("repeat", GenerateOptions(max_tokens=24))]
    assert len(set(plain)) < len(plain), "the tiny model repeats itself without a penalty"
    penalised = [t.id for t in model.generate(
        "repeat", GenerateOptions(max_tokens=24, repeat_penalty=3.0))]
    assert len(set(penalised)) > len(set(plain))


def test_bad_prompts_become_error_results_and_the_rest_complete(model):
    too_long = "x" * 1100
    prompts = ["fine", "", too_long, "also fine"]
    classified = model.classify(prompts)
    generated = model.batch_generate(prompts, GenerateOptions(max_tokens=4))
    for results in (classified, generated):
        assert [r.ok for r in results] == [True, False, False, True]
        assert results[1].error.code == "empty_prompt"
        assert results[2].error.code == "prompt_too_long"
        assert "1,101 tokens" in str(results[2].error) and "1,024" in str(results[2].error)
    assert generated[2].finish_reason == "error"
    with pytest.raises(PromptError, match="empty"):
        list(model.generate(""))


def test_metrics_are_non_zero_and_add_up(model):
    results = model.batch_generate(PROMPTS, GenerateOptions(max_tokens=8))
    m = model.metrics()
    assert m.prompt_tokens == sum(len(encode(p)) for p in PROMPTS)
    assert m.generated_tokens == sum(len(r.tokens) for r in results) == 8 * len(PROMPTS)
    assert m.prefill_seconds > 0 and m.decode_seconds > 0
    assert m.total_seconds >= m.prefill_seconds + m.decode_seconds
    assert m.prefill_tokens_per_sec > 0 and m.decode_tokens_per_sec > 0
    assert m.peak_memory_bytes >= m.active_memory_bytes > 0
    model.classify(PROMPTS)
    c = model.metrics()
    assert c.prompt_tokens == m.prompt_tokens and c.generated_tokens == 0
    assert c.total_seconds >= c.prefill_seconds > 0


def test_chat_uses_the_models_own_template(model, tiny_model):
    from inference.testing.tiny_llama import CHAT_TEMPLATE

    assert model.chat_template() == CHAT_TEMPLATE
    messages = [inference.Message("user", "hello")]
    chatted = list(model.chat(messages, GenerateOptions(max_tokens=6)))
    assert chatted == list(model.generate("<|user|>hello\n<|assistant|>",
                                          GenerateOptions(max_tokens=6)))


def test_info_describes_the_model(model, tiny_model):
    info = model.info()
    cfg = tiny_model.config
    assert (info.architecture, info.num_layers, info.hidden_size) == (
        "llama", cfg.num_layers, cfg.hidden_size)
    assert info.vocab_size == 260 and info.quant_bits == 32
    assert model.model_type == "llama"


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no such file"),
    (b"PK\x03\x04 not a gguf", "not a GGUF file"),
    (b"GGUF\x03\x00\x00\x00", "truncated"),
    (b"GGUF\x03\x00\x00\x00" + (2**40).to_bytes(8, "little") + bytes(8), "tensors"),
])
def test_missing_or_corrupt_files_give_a_clear_load_error(tmp_path, content, reason):
    path = tmp_path / "bad.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=reason) as info:
        inference.load_model(str(path), LoadOptions(backend="llama_cpp"))
    assert str(path) in str(info.value)


def test_a_gguf_with_missing_tensors_fails_with_the_engines_reason(tmp_path, tiny_model):
    data = tiny_model.gguf_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"llama\.cpp refused it"):
        inference.load_model(str(cut), LoadOptions(backend="llama_cpp"))


def test_closed_model_refuses_work(tiny_model):
    m = inference.load_model(str(tiny_model.gguf_path))
    with m:
        assert m.classify(["a"])[0].ok
    with pytest.raises(inference.GenerationError, match="closed"):
        m.classify(["a"])
    m.close()  # idempotent


def test_a_file_that_crashes_the_parser_fails_cleanly_without_taking_this_process(
        tmp_path, tiny_model, monkeypatch):
    from inference.backends import _llama_probe

    crash = tmp_path / "segfault.py"
    crash.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(_llama_probe, "PROBE_COMMAND", [sys.executable, str(crash)])
    with pytest.raises(ModelLoadError, match=r"crashed \(SIGSEGV\).*not loaded"):
        inference.load_model(str(tiny_model.gguf_path), LoadOptions(backend="llama_cpp"))


def test_the_parse_probe_accepts_a_good_file_and_reports_the_engines_refusal(tmp_path,
                                                                             tiny_model):
    from inference.backends._llama_probe import probe

    probe(str(tiny_model.gguf_path))
    data = tiny_model.gguf_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match=r"llama\.cpp refused it"):
        probe(str(cut))
