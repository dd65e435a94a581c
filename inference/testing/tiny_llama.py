"""A deterministic tiny llama, written twice from the same weights.

One Hugging Face directory (``config.json``, ``model.safetensors``,
``tokenizer.json``) for MLX, and one GGUF file for llama.cpp. The vocabulary is
byte-level (token id = byte value for the 256 bytes, then ``<s>``, ``</s>``,
``<pad>``), so both engines tokenize any text identically, and the same
weights give comparable logits.

The weights are random: the model's output is noise, but deterministic noise
with clear logit margins (``logit_scale``), which is what tests and benchmarks
need. The end-of-sequence row of the output head is zero, so greedy decoding
practically never stops early by itself.

Needs numpy, safetensors and gguf (imported when a model is built).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
SPECIALS = ("<s>", "</s>", "<pad>")
#: 256 bytes, the specials, and one merge (two NUL bytes into one token, the last id),
#: because GGUF's BPE vocabulary needs at least one; NUL never appears in real
#: prompts, so tokenization stays bytes.
VOCAB_SIZE = 260

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message.role }}|>{{ message.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TinyLlamaConfig:
    """Shape of the generated model. The defaults make a 0.2M-parameter test model."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 176
    context_len: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    logit_scale: float = 4.0   #: standard deviation of the logits
    dtype: str = "f32"         #: "f32" or "f16"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError("hidden_size must split into an even head size per head")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.dtype not in ("f32", "f16"):
            raise ValueError(f"dtype={self.dtype!r}: use 'f32' or 'f16'")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def parameter_count(self) -> int:
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * self.intermediate_size + 2 * h
        return self.num_layers * per_layer + 2 * VOCAB_SIZE * h + h

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


#: About 75M parameters, f32: the benchmark model.
BENCH_CONFIG = TinyLlamaConfig(hidden_size=768, num_layers=10, num_heads=12, num_kv_heads=12,
                               intermediate_size=2048, context_len=2048)


@dataclass(frozen=True, slots=True)
class TinyLlama:
    """Where the two copies of one generated model live."""

    hf_dir: Path
    gguf_path: Path
    config: TinyLlamaConfig


def encode(text: str, *, bos: bool = True) -> list[int]:
    """Token ids of ``text`` under the byte-level vocabulary (as both engines give)."""
    ids = list(text.encode("utf-8"))
    return [BOS_ID, *ids] if bos else ids


def build_tiny_llama(out_dir: str | os.PathLike[str],
                     config: TinyLlamaConfig | None = None) -> TinyLlama:
    """Write the model under ``out_dir/tiny-llama-<digest>``, or reuse it if complete."""
    config = config or TinyLlamaConfig()
    root = Path(out_dir) / f"tiny-llama-{config.digest()}"
    model = TinyLlama(hf_dir=root / "hf", gguf_path=root / "tiny-llama.gguf", config=config)
    done = root / "COMPLETE"
    if done.exists():
        return model
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    (tmp / "hf").mkdir(parents=True, exist_ok=True)
    weights = _weights(config)
    _write_hf(tmp / "hf", config, weights)
    _write_gguf(tmp / "tiny-llama.gguf", config, weights)
    (tmp / "COMPLETE").write_text(json.dumps(asdict(config)), encoding="utf-8")
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return model


def _weights(config: TinyLlamaConfig) -> dict[str, Any]:
    """Hugging Face names -> float32 arrays, [out, in] like torch Linear."""
    import numpy as np

    rng = np.random.default_rng(config.seed)
    h, kv, ff = config.hidden_size, config.num_kv_heads * config.head_dim, config.intermediate_size

    def linear(out: int, inp: int) -> Any:
        return rng.normal(0.0, 1.0 / np.sqrt(inp), size=(out, inp)).astype(np.float32)

    def norm() -> Any:
        return (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    w: dict[str, Any] = {"model.embed_tokens.weight":
                         rng.standard_normal((VOCAB_SIZE, h)).astype(np.float32)}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = linear(h, h)
        w[p + "self_attn.k_proj.weight"] = linear(kv, h)
        w[p + "self_attn.v_proj.weight"] = linear(kv, h)
        # Residual branches scaled down so the stream stays well conditioned.
        w[p + "self_attn.o_proj.weight"] = linear(h, h) * 0.5
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = linear(ff, h)
        w[p + "mlp.up_proj.weight"] = linear(ff, h)
        w[p + "mlp.down_proj.weight"] = linear(h, ff) * 0.5
    w["model.norm.weight"] = norm()
    head = rng.normal(0.0, config.logit_scale / np.sqrt(h), size=(VOCAB_SIZE, h))
    head[EOS_ID] = 0.0  # EOS logit is 0: far below the top logit, never greedy
    head[PAD_ID] = 0.0
    w["lm_head.weight"] = head.astype(np.float32)
    if config.dtype == "f16":
        w = {k: v.astype(np.float16) for k, v in w.items()}
    return w


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in character for each byte value (byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _vocab_tokens() -> list[str]:
    byte_chars = _byte_chars()
    return [*byte_chars, *SPECIALS, byte_chars[0] * 2]


def _write_hf(directory: Path, config: TinyLlamaConfig, weights: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf_config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "intermediate_size": config.intermediate_size, "vocab_size": VOCAB_SIZE,
        "rms_norm_eps": config.rms_norm_eps, "rope_theta": config.rope_theta,
        "max_position_embeddings": config.context_len, "tie_word_embeddings": False,
        "head_dim": config.head_dim, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
        "torch_dtype": "float32" if config.dtype == "f32" else "float16",
    }
    _write_json(directory / "config.json", hf_config)
    tokens = _vocab_tokens()
    vocab = {tok: i for i, tok in enumerate(tokens)}
    specials = [{"id": BOS_ID + i, "content": s, "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False, "special": True}
                for i, s in enumerate(SPECIALS)]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                          "use_regex": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS_ID], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[tokens[0], tokens[0]]]},
    }
    _write_json(directory / "tokenizer.json", tokenizer)
    _write_json(directory / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False,
        "model_max_length": config.context_len, "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    })
    _write_json(directory / "special_tokens_map.json",
                {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
    _write_json(directory / "generation_config.json",
                {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID})


def _permute_rope(w: Any, n_head: int) -> Any:
    """Hugging Face's rotate-half q/k layout -> GGUF llama's interleaved layout."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


_GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _write_gguf(path: Path, config: TinyLlamaConfig, weights: dict[str, Any]) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("inferq tiny llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if config.dtype == "f32"
                         else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(config.context_len)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(VOCAB_SIZE)

    tokens = _vocab_tokens()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    control = int(gguf.TokenType.CONTROL)
    normal = int(gguf.TokenType.NORMAL)
    writer.add_token_types([control if BOS_ID <= i <= PAD_ID else normal
                            for i in range(VOCAB_SIZE)])
    writer.add_token_merges([f"{tokens[0]} {tokens[0]}"])
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for name, array in weights.items():
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        elif name == "lm_head.weight":
            gguf_name = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            gguf_name = f"blk.{layer}.{_GGUF_NAMES[rest]}"
            if rest == "self_attn.q_proj.weight":
                array = _permute_rope(array, config.num_heads)
            elif rest == "self_attn.k_proj.weight":
                array = _permute_rope(array, config.num_kv_heads)
        if array.ndim == 1:  # norms stay f32, as llama.cpp's converter writes them
            array = array.astype(np.float32)
        writer.add_tensor(gguf_name, np.ascontiguousarray(array))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
