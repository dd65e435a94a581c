"""Text in and out of an mlx-lm tokenizer: prompt ids, and the raw bytes of each token.

`TokenStream` wants the bytes each generated token adds. mlx-lm's streaming
detokenizers give text instead, and trim the leading space of a reply's first
token (" Paris" comes out as "Paris"), so they are not used for output. Bytes
come from the vocabulary, in the tokenizer family that mlx-lm itself detects
from ``tokenizer.json``'s decoder:

- byte-level BPE (GPT-2, Llama 3, Qwen): each character of the token string
  stands for one byte under GPT-2's byte-to-unicode table;
- SentencePiece (Llama 2, Mistral, Gemma): ``▁`` is a space and ``<0xNN>``
  byte-fallback tokens are the byte ``NN``;
- anything else: the token decoded on its own, which is right for whole
  characters but cannot represent a character split across tokens.

Added tokens (``<s>``, ``<|im_end|>``) are their own text in every family.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's stand-in character -> byte value (the inverse of bytes_to_unicode)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    decoder = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            decoder[chr(256 + extra)] = b
            extra += 1
    return decoder


def _vocab_kind(tokenizer: Any) -> str:
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, SPMStreamingDetokenizer

    detokenizer = tokenizer.detokenizer
    if isinstance(detokenizer, BPEStreamingDetokenizer):
        return "bpe"
    if isinstance(detokenizer, SPMStreamingDetokenizer):
        return "spm"
    return "decode"


class TokenBytes:
    """The bytes a token id adds to the output; looked up lazily and cached."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._kind = _vocab_kind(tokenizer)
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self._cache: dict[int, bytes] = {
            int(i): str(token).encode("utf-8") for i, token in added.items()
        }

    @property
    def kind(self) -> str:
        """``"bpe"``, ``"spm"`` or ``"decode"``: how bytes are read from the vocabulary."""
        return self._kind

    def __call__(self, token_id: int) -> bytes:
        piece = self._cache.get(token_id)
        if piece is None:
            piece = self._cache[token_id] = self._lookup(token_id)
        return piece

    def _lookup(self, token_id: int) -> bytes:
        if self._kind == "decode":
            return str(self._tokenizer.decode([token_id])).encode("utf-8")
        token = self._tokenizer.convert_ids_to_tokens(token_id)
        if token is None:  # an id past the tokenizer's vocabulary (padded head)
            return b""
        if self._kind == "spm":
            byte = _BYTE_TOKEN.fullmatch(token)
            if byte:
                return bytes([int(byte.group(1), 16)])
            return str(token).replace("▁", " ").encode("utf-8")
        table = _gpt2_byte_decoder()
        out = bytearray()
        for char in token:
            value = table.get(char)
            if value is None:
                out += char.encode("utf-8")
            else:
                out.append(value)
        return bytes(out)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as a prompt: with the tokenizer's BOS, unless the
    text already starts with the BOS text (a rendered chat template). An empty
    text has no ids, BOS or not, so that it is reported as an empty prompt."""
    if not text:
        return []
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=add_special)]


def encode_label(tokenizer: Any, label: str) -> list[int]:
    """Token ids of ``label`` as a continuation: no BOS, no special tokens added."""
    return [int(i) for i in tokenizer.encode(label, add_special_tokens=False)]
