"""The llama.cpp backend keeps shared prompt prefixes' KV cells between classify calls.

Tiny generated model (byte-level: one token per byte, plus BOS), real engine. A
model with the cache off (``prefix_cache_tokens=-1``) is the reference: a call whose
prefix comes whole from the cache gives bit-identical logits; a call that decodes
only part of a prompt after kept cells (a longer prefix, a lone prompt) changes the
batch shape, which moves f32 logits by float rounding only (``ATOL``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

import inference
from inference import GenerateOptions, LoadOptions
from inference.backends._llama_prefix import DEFAULT_ENTRIES
from inference.testing import TinyLlama, encode

pytestmark = pytest.mark.llama

PREFIX = "Classify the sentiment of the following review as positive or negative. Review: "
P = len(encode(PREFIX))  #: tokens of PREFIX, BOS included
#: Reviews whose first bytes differ, so a chunk shares exactly PREFIX.
CHUNKS = (("great film", "awful", "meh, fine", "loved it!!", "no"),
          ("terrible acting", "superb", "boring plot", "wonderful cast"),
          ("yes", "hated it", "quite good", "dull", "excellent", "fine"))
LOGITS = GenerateOptions(logits=True)
ATOL = 1e-2  #: the f16 KV cache and another reduction order (batch shape), as elsewhere


def chunk(k: int, prefix: str = PREFIX) -> list[str]:
    return [prefix + review for review in CHUNKS[k]]


def load(tiny_model: TinyLlama, **options: int) -> inference.TextModel:
    return inference.load_model(str(tiny_model.gguf_path),
                                LoadOptions(backend="llama_cpp", **options))


@pytest.fixture
def cached(tiny_model: TinyLlama) -> Iterator[inference.TextModel]:
    with load(tiny_model) as m:
        yield m


@pytest.fixture(scope="module")
def plain(tiny_model: TinyLlama) -> Iterator[inference.TextModel]:
    with load(tiny_model, prefix_cache_tokens=-1) as m:
        yield m


def logits(results: list[inference.ClassifyResult]) -> np.ndarray:
    return np.array([r.logits for r in results], dtype=np.float32)


def test_a_second_call_with_the_same_prefix_takes_its_cells_from_the_cache(cached):
    cached.classify(chunk(0))
    assert cached.cached_prefix_tokens == 0
    assert cached.reused_prefix_tokens == P * (len(CHUNKS[0]) - 1)
    assert cached.cached_prefixes() == [encode(PREFIX)]
    cached.classify(chunk(1))
    assert cached.cached_prefix_tokens == cached.reused_prefix_tokens == P * len(CHUNKS[1])


def test_results_with_the_kept_prefix_are_bit_identical_to_computing_it(cached, plain):
    for k in range(len(CHUNKS)):
        ours, theirs = cached.classify(chunk(k), LOGITS), plain.classify(chunk(k), LOGITS)
        assert (cached.cached_prefix_tokens > 0) == (k > 0)
        assert np.array_equal(logits(ours), logits(theirs))
        assert [r.token for r in ours] == [r.token for r in theirs]


def test_a_lone_prompt_after_the_kept_prefix_matches_within_rounding(cached, plain):
    cached.classify(chunk(0))
    prompt = PREFIX + "a lone review"
    ours, theirs = cached.classify([prompt], LOGITS), plain.classify([prompt], LOGITS)
    assert cached.cached_prefix_tokens == P
    np.testing.assert_allclose(logits(ours), logits(theirs), atol=ATOL)
    assert ours[0].token == theirs[0].token


def test_a_longer_shared_prefix_extends_the_kept_one(cached, plain):
    cached.classify(chunk(0))
    longer = [PREFIX + "The " + review for review in CHUNKS[1]]
    ours, theirs = cached.classify(longer, LOGITS), plain.classify(longer, LOGITS)
    assert cached.cached_prefix_tokens == P * len(longer)
    assert cached.cached_prefixes() == [encode(PREFIX + "The ")]
    np.testing.assert_allclose(logits(ours), logits(theirs), atol=ATOL)
    cached.classify([PREFIX + "The " + review for review in CHUNKS[2]])
    assert cached.cached_prefix_tokens == (P + 4) * len(CHUNKS[2])


def test_a_different_prefix_is_kept_beside_it_and_the_oldest_goes_first(cached):
    prefixes = [f"Instruction {k}: label this text as positive or negative. Text: "
                for k in range(DEFAULT_ENTRIES + 1)]
    for prefix in prefixes:
        cached.classify(chunk(0, prefix))
        assert cached.cached_prefix_tokens == 0
    assert cached.cached_prefixes() == [encode(p) for p in prefixes[1:]]
    cached.classify(chunk(1, prefixes[1]))
    assert cached.cached_prefix_tokens == len(encode(prefixes[1])) * len(CHUNKS[1])
    cached.classify(chunk(1, prefixes[0]))
    assert cached.cached_prefix_tokens == 0


def test_kept_prefixes_never_hold_more_cells_than_the_setting(tiny_model):
    with load(tiny_model, prefix_cache_tokens=P + 20) as m:
        m.classify(chunk(0))
        other = "Say whether the following review is positive or negative. Review: "
        m.classify(chunk(1, other))
        assert m.cached_prefixes() == [encode(other)]
        m.classify(chunk(2, PREFIX * 2))  # longer than the setting: not kept
        assert m.cached_prefixes() == [encode(other)]
        assert sum(map(len, m.cached_prefixes())) <= P + 20


def test_prompts_that_need_every_cell_evict_the_kept_prefixes_and_still_run(tiny_model):
    options = {"context_len": 256, "prefix_cache_tokens": 200}
    long_prefix = PREFIX + "Answer with one word only, and think about it carefully first. "
    many = [long_prefix + f"{k} " + CHUNKS[k % 3][k % 4] for k in range(30)]
    full = [f"{k}" + "x" * 230 for k in range(3)]  # 231-232 tokens: one to a decode call
    with load(tiny_model, **options) as m, load(tiny_model, context_len=256,
                                                prefix_cache_tokens=-1) as ref:
        m.classify(chunk(0, long_prefix))
        assert m.cached_prefixes() == [encode(long_prefix)]
        ours, theirs = m.classify(many, LOGITS), ref.classify(many, LOGITS)
        assert all(r.ok for r in ours) and m.cached_prefix_tokens > 0
        np.testing.assert_allclose(logits(ours), logits(theirs), atol=ATOL)
        ours, theirs = m.classify(full, LOGITS), ref.classify(full, LOGITS)
        assert all(r.ok for r in ours)
        assert m.cached_prefixes() == []
        assert np.array_equal(logits(ours), logits(theirs))


def test_closing_the_model_drops_the_kept_prefixes(tiny_model):
    with load(tiny_model) as m:
        m.classify(chunk(0))
        assert m.cached_prefixes()
    with load(tiny_model) as again:
        assert again.cached_prefixes() == []
        again.classify(chunk(1))
        assert again.cached_prefix_tokens == 0


def test_with_the_cache_off_nothing_is_kept(plain):
    plain.classify(chunk(0))
    plain.classify(chunk(1))
    assert plain.cached_prefixes() == []
    assert plain.cached_prefix_tokens == 0
    assert plain.reused_prefix_tokens == P * (len(CHUNKS[1]) - 1)


def test_generation_starts_after_a_kept_prefix_and_changes_no_greedy_token(cached, plain):
    cached.classify(chunk(0))
    options = GenerateOptions(max_tokens=8)
    assert cached.batch_generate(chunk(1), options) == plain.batch_generate(chunk(1), options)
    assert cached.cached_prefix_tokens == P * len(CHUNKS[1])
    assert cached.metrics().prompt_tokens == plain.metrics().prompt_tokens
    assert cached.cached_prefixes() == [encode(PREFIX)]
    ours, theirs = cached.classify(chunk(2), LOGITS), plain.classify(chunk(2), LOGITS)
    np.testing.assert_allclose(logits(ours), logits(theirs), atol=ATOL)


# -- a real quantised model --------------------------------------------------------------

SYSTEM = ("You label customer reviews for a shop. Read the whole review, then answer with "
          "exactly one word: positive or negative. Mixed reviews are labelled by their "
          "conclusion; sarcasm counts as what it means.")
REVIEWS = ("The kettle boils fast and looks great.", "Broke after a week.",
           "Arrived late but works perfectly.", "Flimsy and noisy, sent it back.",
           "Best headset I have owned.", "Nothing like the photos.")


@pytest.mark.real_model
@pytest.mark.slow
def test_a_real_models_chunks_are_bit_identical_with_the_kept_prefix(smollm2_path):
    """SmolLM2 (Q4_1): batch shape moves its numbers, yet a prefix taken whole from the
    cache leaves every logit as computing it would; a lone prompt after it (another
    batch shape) stays within 0.05 in label probability (measured: under 0.01)."""
    labels = GenerateOptions(labels=("positive", "negative"), logits=True)
    with inference.load_model(str(smollm2_path), LoadOptions(backend="llama_cpp")) as m, \
            inference.load_model(str(smollm2_path),
                                 LoadOptions(backend="llama_cpp", prefix_cache_tokens=-1)) as ref:
        def prompt(text: str) -> str:
            rendered: str = m.render_chat([inference.Message("system", SYSTEM),
                                           inference.Message("user", f"Review: {text}")])
            return rendered

        for k in range(3):
            chunk = [prompt(f"{text} (order {k})") for text in REVIEWS]
            ours, theirs = m.classify(chunk, labels), ref.classify(chunk, labels)
            assert (m.cached_prefix_tokens > 0) == (k > 0)
            assert np.array_equal(logits(ours), logits(theirs))
            assert [r.label_probs for r in ours] == [r.label_probs for r in theirs]
        lone = [prompt("Works as described.")]
        ours, theirs = m.classify(lone, labels), ref.classify(lone, labels)
        assert m.cached_prefix_tokens > 0
        assert ours[0].label_probs["positive"] == pytest.approx(
            theirs[0].label_probs["positive"], abs=0.05)
