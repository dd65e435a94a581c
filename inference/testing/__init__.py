"""Helpers for testing code that uses inference: a tiny generated model."""

from inference.testing.fake import FakeBackend, FakeModel
from inference.testing.tiny_llama import (
    BENCH_CONFIG,
    BOS_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    TinyLlama,
    TinyLlamaConfig,
    build_tiny_llama,
    encode,
)

__all__ = [
    "BENCH_CONFIG",
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "VOCAB_SIZE",
    "FakeBackend",
    "FakeModel",
    "TinyLlama",
    "TinyLlamaConfig",
    "build_tiny_llama",
    "encode",
]
