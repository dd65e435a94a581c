"""Checks and reads a Hugging Face style model directory before mlx-lm sees it.

mlx-lm treats a path that does not exist as a Hugging Face Hub repository and
tries to download it, and its errors for a broken directory are raw
tracebacks; checking first turns both into a `ModelLoadError` that says what
is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.errors import ModelLoadError
from inference.types import ModelInfo

#: Context length for a config without max_position_embeddings.
DEFAULT_CONTEXT_LEN = 4096


def read_model_dir(path: str) -> dict[str, Any]:
    """The directory's ``config.json``, after checking the directory holds a model."""
    root = Path(path)
    if not root.exists():
        raise ModelLoadError(path, "no such directory")
    if not root.is_dir():
        raise ModelLoadError(path, "not a directory; the MLX backends load a Hugging Face "
                                   "style directory (config.json and *.safetensors)")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(path, "no config.json in the directory")
    if not any(root.glob("*.safetensors")):
        raise ModelLoadError(path, "no *.safetensors weights in the directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(path, f"config.json is unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(path, "config.json does not hold a JSON object")
    return config


def config_int(config: dict[str, Any], key: str, default: int = 0) -> int:
    """An integer from the config, or from its ``text_config`` (multimodal models)."""
    for source in (config, config.get("text_config")):
        if isinstance(source, dict) and isinstance(source.get(key), int):
            return int(source[key])
    return default


def model_info(config: dict[str, Any], context_len: int) -> ModelInfo:
    """`ModelInfo` from a Hugging Face config."""
    quant = config.get("quantization") or config.get("quantization_config") or {}
    if not isinstance(quant, dict):
        quant = {}
    return ModelInfo(
        architecture=str(config.get("model_type", "")),
        vocab_size=config_int(config, "vocab_size"),
        num_layers=config_int(config, "num_hidden_layers"),
        hidden_size=config_int(config, "hidden_size"),
        quant_bits=int(quant.get("bits", 0) or 0),
        quant_group=int(quant.get("group_size", 0) or 0),
        context_len=context_len,
    )
