"""Shared fixtures: the tiny generated model, built once and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference.testing import TinyLlama, build_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("INFERQ_TEST_CACHE", ROOT / ".cache" / "test-models"))


@pytest.fixture(scope="session")
def tiny_model() -> TinyLlama:
    """The 0.2M-parameter byte-level llama, as a GGUF file and an HF directory."""
    return build_tiny_llama(MODEL_CACHE)
