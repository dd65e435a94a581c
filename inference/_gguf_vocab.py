"""A GGUF's own vocabulary, written as a Hugging Face tokenizer that splits text as llama.cpp does.

`convert` reads the vocabulary into a `GGUFVocab`; `write_tokenizer` writes
``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``,
which transformers (and so mlx-lm) load as ``PreTrainedTokenizerFast``, without torch.

Byte-level BPE vocabularies (``tokenizer.ggml.model = "gpt2"``) only. The merges and
token ids are the file's; the pre-tokenizer is llama.cpp's for the file's
``tokenizer.ggml.pre`` (its regular expressions, applied in turn, as in llama.cpp's
``llm_tokenizer_bpe``), so a text splits into the same words before the merges run.
Control and user-defined tokens are added tokens, matched whole; BOS is added when
the file says so (``add_bos_token``, else llama.cpp's default for that pre-tokenizer).

Needs the ``tokenizers`` package (a dependency of transformers), imported when a
tokenizer is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
           r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

#: ``tokenizer.ggml.pre`` -> llama.cpp's regular expressions for it (src/llama-vocab.cpp).
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"),
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"), (_GPT2,)),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                     "minerva-7b"), (r"\p{N}", _GPT2)),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx",
                     "smaug-bpe"), (_LLAMA3,)),
    **dict.fromkeys(("qwen2", "stablelm2", "megrez", "deepseek-r1-qwen"), (_QWEN2,)),
}
#: Pre-tokenizers for which llama.cpp takes a word found whole in the vocabulary as is.
_IGNORE_MERGES = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})
#: Pre-tokenizers for which llama.cpp adds BOS when the file does not say.
_ADDS_BOS = _IGNORE_MERGES

#: Token texts llama.cpp ends generation on (its ``special_eog_ids`` heuristic).
EOG_TEXTS = frozenset({"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                       "<|eom_id|>", "<EOT>", "<|end_of_text|>", "<end_of_utterance>"})

_CONTROL, _USER_DEFINED = 3, 4


@dataclass(frozen=True, slots=True, kw_only=True)
class GGUFVocab:
    """The ``tokenizer.*`` metadata of a GGUF file."""

    model: str                   #: ``tokenizer.ggml.model`` ("gpt2" = byte-level BPE)
    pre: str                     #: ``tokenizer.ggml.pre``; "" = not given (llama.cpp: default)
    tokens: list[str]
    token_types: list[int]       #: empty = all normal
    merges: list[str]            #: "left right" pairs, best first
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    extra_eog_ids: tuple[int, ...] = ()   #: EOT / EOM ids the file names
    add_bos: bool | None = None  #: None = not given
    add_eos: bool = False
    chat_template: str | None = None
    context_len: int = 0

    def unsupported(self) -> str | None:
        """Why this vocabulary cannot be written, or None."""
        if self.model != "gpt2":
            return (f"tokenizer model {self.model!r} is not supported; only byte-level BPE "
                    "('gpt2') vocabularies are converted")
        if (self.pre or "default") not in PRE_TOKENIZERS:
            return (f"pre-tokenizer {self.pre!r} is not supported; supported: "
                    f"{', '.join(sorted(PRE_TOKENIZERS))}")
        if not self.merges:
            return "the byte-level vocabulary has no merges"
        return None

    @property
    def adds_bos(self) -> bool:
        return self.add_bos if self.add_bos is not None else self.pre in _ADDS_BOS

    def text(self, token_id: int | None) -> str | None:
        if token_id is None or not 0 <= token_id < len(self.tokens):
            return None
        return self.tokens[token_id]

    def eog_ids(self) -> list[int]:
        """The ids llama.cpp stops generating at: EOS first, then EOT / EOM and the
        control tokens whose text says end of turn."""
        ids = [i for i in (self.eos_id, *self.extra_eog_ids) if self.text(i) is not None]
        for i, token in enumerate(self.tokens):
            kind = self.token_types[i] if i < len(self.token_types) else 1
            if token in EOG_TEXTS and kind in (_CONTROL, _USER_DEFINED):
                ids.append(i)
        return [int(i) for i in dict.fromkeys(ids) if i is not None]


def build_tokenizer(vocab: GGUFVocab) -> Any:
    """The `tokenizers.Tokenizer` for ``vocab`` (checked with `GGUFVocab.unsupported`)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    ids: dict[str, int] = {}
    for i, token in enumerate(vocab.tokens):
        ids.setdefault(token, i)
    merges = [(left, right) for left, _, right in (m.partition(" ") for m in vocab.merges)]
    tokenizer = Tokenizer(models.BPE(vocab=ids, merges=merges, fuse_unk=False,
                                     byte_fallback=False,
                                     ignore_merges=vocab.pre in _IGNORE_MERGES))
    splits = [pre_tokenizers.Split(Regex(expr), behavior="isolated")
              for expr in PRE_TOKENIZERS[vocab.pre or "default"]]
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    kinds = vocab.token_types
    control = [t for i, t in enumerate(vocab.tokens) if i < len(kinds) and kinds[i] == _CONTROL]
    user = [t for i, t in enumerate(vocab.tokens) if i < len(kinds) and kinds[i] == _USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in control])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    bos = vocab.text(vocab.bos_id) if vocab.adds_bos else None
    eos = vocab.text(vocab.eos_id) if vocab.add_eos else None
    if bos or eos:
        first, last = ([f"{bos}:0"] if bos else []), ([f"{eos}:0"] if eos else [])
        tokenizer.post_processor = processors.TemplateProcessing(
            single=[*first, "$A:0", *last], pair=[*first, "$A:0", "$B:1", *last],
            special_tokens=[(t, ids[t]) for t in dict.fromkeys((bos, eos)) if t])
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def write_tokenizer(vocab: GGUFVocab, directory: Path) -> None:
    """Write the tokenizer files for ``vocab`` into ``directory``."""
    build_tokenizer(vocab).save(str(directory / "tokenizer.json"))
    specials = {name: vocab.text(i) for name, i in (
        ("bos_token", vocab.bos_id), ("eos_token", vocab.eos_id), ("unk_token", vocab.unk_id),
        ("pad_token", vocab.pad_id))}
    specials = {name: text for name, text in specials.items() if text is not None}
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast", **specials,
        "add_bos_token": vocab.adds_bos, "add_eos_token": vocab.add_eos,
        "clean_up_tokenization_spaces": False,
    }
    if vocab.context_len:
        config["model_max_length"] = vocab.context_len
    if vocab.chat_template:
        config["chat_template"] = vocab.chat_template
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", specials)


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
