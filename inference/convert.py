"""`convert_gguf`: a llama GGUF file -> a Hugging Face directory that MLX serves as the same model.

A llama.cpp host serves ``NAME.gguf``; a Mac serves ``NAME/`` with MLX. Both are
model id ``NAME`` (a GGUF's id is its file name without ``.gguf``, a directory's id
is its name), so one source file gives the same model on both kinds of worker:

    from inference.convert import convert_gguf
    convert_gguf("models/smollm2.gguf", "mlx-models/smollm2")

What the directory holds:

- ``model.safetensors`` (or shards of at most ``shard_bytes`` and an index): every
  tensor dequantised by ``gguf.quants.dequantize`` (F32, F16, BF16, the legacy, K and
  I quantisations), renamed to transformers' llama names, with llama.cpp's rotary
  row permutation of ``attn_q`` / ``attn_k`` undone. ``float16`` by default: the
  dequantised values of a 4- to 8-bit file lose nothing that matters in it (float16
  keeps 11 significant bits, the scales themselves are float16), it halves the size,
  and it is what MLX runs fastest on Apple GPUs; ``float32`` keeps every dequantised
  value exactly (for comparisons, or CPUs without fast float16).
- ``config.json`` (``LlamaForCausalLM``) and ``generation_config.json`` from the GGUF
  metadata; ``eos_token_id`` lists every token llama.cpp ends generation at, so both
  engines stop at the same tokens.
- the tokenizer from the file's own vocabulary and chat template (`_gguf_vocab`).

The directory is written under a temporary name next to ``dest`` and renamed into
place at the end, so a failed conversion leaves nothing behind. Every problem is a
`ConversionError` naming the file: an architecture other than llama, a quantisation
or vocabulary that cannot be converted, a truncated or corrupt file, a destination
that exists and is not empty.

Needs numpy, gguf, safetensors and tokenizers, imported when a file is converted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference._gguf_vocab import GGUFVocab, write_tokenizer
from inference.errors import ConversionError, ModelLoadError
from inference.gguf_header import read_gguf_header

__all__ = ["ARCHITECTURES", "DTYPES", "convert_gguf"]

ARCHITECTURES = ("llama",)
DTYPES = ("float16", "float32")
DEFAULT_SHARD_BYTES = 2 << 30

_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                 "output": "lm_head"}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


@dataclass(frozen=True, slots=True)
class _Tensor:
    """One GGUF tensor and where it goes."""

    source: Any          #: gguf.ReaderTensor
    name: str            #: the transformers name
    shape: tuple[int, ...]  #: numpy order (rows, columns)
    heads: int           #: rotary heads to un-permute over; 0 = none


def convert_gguf(src: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 dtype: str = "float16", shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write the llama GGUF ``src`` as a Hugging Face / MLX directory ``dest``; returns it.

    ``dest`` must not exist or be an empty directory. ``dtype`` is "float16" or
    "float32". Raises `ConversionError` (a `ModelLoadError`) naming the file and the
    problem, `ModuleNotFoundError` when a package it needs is missing (``tokenizers``
    comes with the ``mlx`` extra).
    """
    source, target = Path(src), Path(dest)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    for package in ("numpy", "gguf", "safetensors", "tokenizers"):
        if importlib.util.find_spec(package) is None:
            raise ModuleNotFoundError(f"converting a GGUF needs the {package!r} package: "
                                      f"pip install 'inferq[mlx]' (or {package})", name=package)
    _check_destination(target)
    reader = _open(source)
    meta = _Metadata(reader, str(source))
    tensors = _plan(reader, meta)
    config = meta.hf_config(tied="lm_head.weight" not in {t.name for t in tensors}, dtype=dtype)
    vocab = meta.vocab()
    if (why := vocab.unsupported()) is not None:
        raise ConversionError(str(source), why)
    if eog := vocab.eog_ids():
        config["eos_token_id"] = eog[0] if len(eog) == 1 else eog
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.converting-{os.getpid()}")
    try:
        tmp.mkdir()
        _write_weights(tensors, tmp, dtype=dtype, shard_bytes=shard_bytes, source=source)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", {
            k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config})
        write_tokenizer(vocab, tmp)
        if target.exists():
            target.rmdir()
        tmp.rename(target)
    except ConversionError:
        raise
    except OSError as exc:
        raise ConversionError(str(target), f"cannot write it: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_destination(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise ConversionError(str(target), "the destination exists and is not a directory")
    if any(target.iterdir()):
        raise ConversionError(str(target), "the destination exists and is not empty; "
                                           "name a new directory or empty this one")


def _open(source: Path) -> Any:
    """A `gguf.GGUFReader` over ``source``, after the bounded header check."""
    try:
        header = read_gguf_header(str(source))
    except ModelLoadError as exc:
        raise ConversionError(str(source), exc.reason) from exc
    if header.architecture not in ARCHITECTURES:
        raise ConversionError(str(source), f"architecture {header.architecture!r} is not "
                              f"supported; only {', '.join(ARCHITECTURES)} GGUF files convert")
    import gguf

    try:
        return gguf.GGUFReader(str(source), "r")
    except (ValueError, IndexError, KeyError, OverflowError) as exc:
        size = source.stat().st_size
        raise ConversionError(str(source), f"the file is truncated or corrupt ({size:,} bytes; "
                                           f"gguf: {exc})") from exc


class _Metadata:
    """Typed access to a GGUF's key-value metadata."""

    def __init__(self, reader: Any, path: str) -> None:
        self._fields = reader.fields
        self.path = path
        self.arch = str(self.get("general.architecture"))

    def get(self, key: str, default: Any = None) -> Any:
        field = self._fields.get(key)
        return default if field is None else field.contents()

    def need(self, key: str) -> int:
        value = self.get(f"{self.arch}.{key}")
        if not isinstance(value, int):
            raise ConversionError(self.path, f"metadata {self.arch}.{key} is missing")
        return value

    def hf_config(self, *, tied: bool, dtype: str) -> dict[str, Any]:
        """transformers' ``LlamaConfig`` for this file, as config.json holds it."""
        import numpy as np

        arch = self.arch
        hidden, heads = self.need("embedding_length"), self.need("attention.head_count")
        kv_heads = int(self.get(f"{arch}.attention.head_count_kv", heads))
        head_dim = int(self.get(f"{arch}.attention.key_length", hidden // heads))
        rope_dims = int(self.get(f"{arch}.rope.dimension_count", head_dim))
        if rope_dims != head_dim:
            raise ConversionError(self.path, f"partial rotary embeddings ({rope_dims} of "
                                             f"{head_dim} dimensions) are not supported")
        if int(self.get(f"{arch}.expert_count", 0) or 0):
            raise ConversionError(self.path, "mixture-of-experts llama files are not supported")
        tokens = self.get("tokenizer.ggml.tokens") or []
        config: dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": hidden, "intermediate_size": self.need("feed_forward_length"),
            "num_hidden_layers": self.need("block_count"), "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": head_dim, "hidden_act": "silu",
            "rms_norm_eps": float(str(np.float32(  # 1e-05, not 9.999999747378752e-06
                self.need_float("attention.layer_norm_rms_epsilon")))),
            "rope_theta": float(self.get(f"{arch}.rope.freq_base", 10000.0)),
            "max_position_embeddings": int(self.get(f"{arch}.context_length", 4096)),
            "vocab_size": int(self.get(f"{arch}.vocab_size", len(tokens))),
            "tie_word_embeddings": tied, "attention_bias": False, "mlp_bias": False,
            "torch_dtype": dtype,
        }
        if (scaling := self.rope_scaling()) is not None:
            config["rope_scaling"] = scaling
        for key, name in (("bos_token_id", "bos"), ("pad_token_id", "padding")):
            value = self.get(f"tokenizer.ggml.{name}_token_id")
            if isinstance(value, int):
                config[key] = value
        return config

    def need_float(self, key: str) -> float:
        value = self.get(f"{self.arch}.{key}")
        if not isinstance(value, float | int):
            raise ConversionError(self.path, f"metadata {self.arch}.{key} is missing")
        return float(value)

    def rope_scaling(self) -> dict[str, Any] | None:
        kind = self.get(f"{self.arch}.rope.scaling.type", "none")
        factor = float(self.get(f"{self.arch}.rope.scaling.factor", 1.0) or 1.0)
        if kind in ("none", "") or factor == 1.0:
            return None
        if kind == "linear":
            return {"rope_type": "linear", "factor": factor}
        raise ConversionError(self.path, f"rope scaling {kind!r} is not supported "
                                         "(only linear)")

    def vocab(self) -> GGUFVocab:
        def token_id(name: str) -> int | None:
            value = self.get(f"tokenizer.ggml.{name}_token_id")
            return value if isinstance(value, int) else None

        add_bos = self.get("tokenizer.ggml.add_bos_token")
        template = self.get("tokenizer.chat_template")
        return GGUFVocab(
            model=str(self.get("tokenizer.ggml.model", "")),
            pre=str(self.get("tokenizer.ggml.pre", "")),
            tokens=list(self.get("tokenizer.ggml.tokens") or []),
            token_types=[int(t) for t in self.get("tokenizer.ggml.token_type") or []],
            merges=list(self.get("tokenizer.ggml.merges") or []),
            bos_id=token_id("bos"), eos_id=token_id("eos"), unk_id=token_id("unknown"),
            pad_id=token_id("padding"),
            extra_eog_ids=tuple(i for i in (token_id("eot"), token_id("eom")) if i is not None),
            add_bos=bool(add_bos) if add_bos is not None else None,
            add_eos=bool(self.get("tokenizer.ggml.add_eos_token", False)),
            chat_template=template if isinstance(template, str) else None,
            context_len=int(self.get(f"{self.arch}.context_length", 0)),
        )


def _plan(reader: Any, meta: _Metadata) -> list[_Tensor]:
    """Every tensor's transformers name and shape; refuses what cannot convert."""
    heads = meta.need("attention.head_count")
    kv_heads = int(meta.get(f"{meta.arch}.attention.head_count_kv", heads))
    plan: list[_Tensor] = []
    readable: dict[Any, bool] = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type
        if kind not in readable:
            readable[kind] = _dequantizable(kind)
        if not readable[kind]:
            raise ConversionError(meta.path, (
                f"tensor {tensor.name} is {tensor.tensor_type.name}, a type the gguf package "
                "cannot dequantise"))
        shape = tuple(int(n) for n in reversed([int(d) for d in tensor.shape]))
        name, rotary = _hf_name(tensor.name, heads, kv_heads)
        if name is None:
            why = ("llama 3.1-style rope frequency factors are not supported"
                   if tensor.name == "rope_freqs.weight" else
                   "it has no counterpart in transformers' llama")
            raise ConversionError(meta.path, f"tensor {tensor.name}: {why}")
        if rotary and shape[0] % (2 * rotary):
            raise ConversionError(meta.path, f"tensor {tensor.name} has {shape[0]} rows, not a "
                                             f"multiple of 2 x {rotary} heads")
        plan.append(_Tensor(tensor, name, shape, rotary))
    if not any(t.name == "model.embed_tokens.weight" for t in plan):
        raise ConversionError(meta.path, "the file has no token_embd.weight tensor")
    return plan


def _hf_name(gguf_name: str, heads: int, kv_heads: int) -> tuple[str | None, int]:
    """transformers' name for a GGUF tensor and the heads to un-permute it over."""
    stem = gguf_name.removesuffix(".weight")
    if stem in _GLOBAL_NAMES and gguf_name.endswith(".weight"):
        return f"{_GLOBAL_NAMES[stem]}.weight", 0
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        return None, 0
    layer, part = match.group(1), match.group(2)
    rotary = {"attn_q": heads, "attn_k": kv_heads}.get(part, 0)
    return f"model.layers.{layer}.{_LAYER_NAMES[part]}.weight", rotary


def _dequantizable(qtype: Any) -> bool:
    """Whether ``gguf.quants.dequantize`` handles ``qtype`` (asked with one zero block)."""
    import gguf
    import numpy as np

    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return True
    block = gguf.GGML_QUANT_SIZES.get(qtype)
    if block is None:
        return False
    try:
        gguf.quants.dequantize(np.zeros((1, block[1]), dtype=np.uint8), qtype)
    except (NotImplementedError, ValueError, TypeError):
        return False
    return True


def _load(tensor: _Tensor, path: str) -> Any:
    """The tensor as float32 in transformers' layout."""
    import gguf
    import numpy as np

    try:
        weights = gguf.quants.dequantize(tensor.source.data, tensor.source.tensor_type)
        weights = weights.reshape(tensor.shape)
    except (ValueError, IndexError) as exc:
        raise ConversionError(path, f"tensor {tensor.source.name} is corrupt: {exc}") from exc
    if not np.isfinite(weights).all():
        raise ConversionError(path, f"tensor {tensor.source.name} is corrupt: it holds "
                                    "NaN or infinite values")
    if tensor.heads:  # llama.cpp interleaves each head's rotary halves; put them back
        half = tensor.shape[0] // tensor.heads // 2
        weights = (weights.reshape(tensor.heads, half, 2, *tensor.shape[1:])
                   .swapaxes(1, 2).reshape(tensor.shape))
    return weights


def _write_weights(tensors: list[_Tensor], directory: Path, *, dtype: str, shard_bytes: int,
                   source: Path) -> None:
    """Dequantise shard by shard, so memory holds one shard at a time."""
    import numpy as np
    from safetensors.numpy import save_file

    itemsize = np.dtype(dtype).itemsize
    shards: list[list[_Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        nbytes = int(np.prod(tensor.shape)) * itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += nbytes
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    weight_map: dict[str, str] = {}
    for shard, name in zip(shards, names, strict=True):
        arrays = {t.name: np.ascontiguousarray(_load(t, str(source)).astype(dtype))
                  for t in shard}
        save_file(arrays, str(directory / name), metadata={"format": "pt",
                                                           "source": source.name})
        weight_map.update(dict.fromkeys(arrays, name))
        del arrays
    if len(shards) > 1:
        total = sum(int(np.prod(t.shape)) * itemsize for t in tensors)
        _write_json(directory / "model.safetensors.index.json",
                    {"metadata": {"total_size": total}, "weight_map": weight_map})


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
