"""Find models on disk: GGUF files and Hugging Face style safetensors directories."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from inference.errors import InferenceError
from inference.gguf_header import read_gguf_header
from inference.types import DiscoveredModel

DEFAULT_MAX_DEPTH = 4


def discover(
    root: str | os.PathLike[str], *, max_depth: int = DEFAULT_MAX_DEPTH
) -> list[DiscoveredModel]:
    """Models under ``root``, sorted by path.

    Scans nested directories down to ``max_depth`` levels below ``root``
    (0 = ``root`` only), skipping hidden entries and not following directory
    symlinks. A directory with ``config.json`` and ``*.safetensors`` is one
    model and is not searched further; every ``*.gguf`` file is one model
    (split files ``-00001-of-0000N.gguf`` count once, by their first part).
    A missing root raises `FileNotFoundError`; a model whose metadata cannot be
    read is still listed, with an empty ``model_type``.
    """
    base = Path(root)
    if not base.is_dir():
        if base.exists():
            raise NotADirectoryError(f"model root {str(base)!r} is not a directory")
        raise FileNotFoundError(f"model root {str(base)!r} does not exist")
    found: list[DiscoveredModel] = []
    _scan(base, 0, max_depth, found)
    return sorted(found, key=lambda m: m.path)


def _scan(directory: Path, depth: int, max_depth: int, found: list[DiscoveredModel]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    model = _safetensors_model(directory, entries)
    if model is not None:
        found.append(model)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.endswith(".gguf") and _is_first_split(entry.name):
            found.append(_gguf_model(Path(entry.path)))
        elif entry.is_dir(follow_symlinks=False) and depth < max_depth:
            _scan(Path(entry.path), depth + 1, max_depth, found)


_SPLIT = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")


def _is_first_split(name: str) -> bool:
    match = _SPLIT.search(name)
    return match is None or match.group(1) == "00001"


def _gguf_model(path: Path) -> DiscoveredModel:
    try:
        header = read_gguf_header(str(path))
        architecture, bits = header.architecture, header.quant_bits
    except InferenceError:
        architecture, bits = "", 0
    return DiscoveredModel(path=str(path), format="gguf", model_type=architecture,
                           quant_bits=bits, num_files=1, size_bytes=path.stat().st_size)


def _safetensors_model(directory: Path, entries: list[os.DirEntry[str]]) -> DiscoveredModel | None:
    names = {e.name for e in entries}
    weights = [e for e in entries if e.name.endswith(".safetensors") and e.is_file()]
    if "config.json" not in names or not weights:
        return None
    model_type, bits, group = "", 0, 0
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict):
        model_type = str(config.get("model_type", ""))
        quant = config.get("quantization") or config.get("quantization_config")
        if isinstance(quant, dict):
            bits = _int(quant.get("bits"))
            group = _int(quant.get("group_size"))
    return DiscoveredModel(path=str(directory), format="safetensors", model_type=model_type,
                           quant_bits=bits, quant_group=group, num_files=len(weights),
                           size_bytes=sum(e.stat().st_size for e in weights))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
