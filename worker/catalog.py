"""A worker's model catalog: model ids (the same on every host) -> this host's files.

Built from discovery under the model roots (a GGUF file's id is its file name
without ``.gguf``; a safetensors directory's id is its name) and from an
explicit catalog file, which wins::

    [models.gemma3-1b]
    gguf = "/models/gemma-3-1b-it-Q8_0.gguf"     # served by rocm / cuda / llama_cpp
    mlx = "/models/gemma-3-1b-it-4bit"           # served by metal / mlx
    http = "http://127.0.0.1:8080/v1#gemma3"     # served by http

A job names an id; a worker only ever loads a path from its own catalog. A
discovered model is served only while its files resolve inside its model root: a
symlink that leads out of the root is skipped (checked at discovery and again at
lookup). A file outside the roots is served only when the catalog file names it.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import inference
from jobs.spec import NAME

log = logging.getLogger("inferq.catalog")

#: Which backends can load each format, in preference order.
FORMAT_BACKENDS = {
    "gguf": ("rocm", "cuda", "llama_cpp"),
    "safetensors": ("metal", "mlx"),
    "http": ("http",),
    "fake": ("fake",),
}
_FILE_KEYS = {"gguf": "gguf", "mlx": "safetensors", "safetensors": "safetensors",
              "http": "http", "fake": "fake"}


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    model_id: str
    format: str
    path: str
    #: The model root it was discovered under; "" = named explicitly (catalog file, tests).
    root: str = ""


_SPLIT = re.compile(r"-00001-of-(\d{5})\.gguf$")


def outside_root(entry: CatalogEntry) -> str | None:
    """The first of a discovered entry's files that resolves outside its root, if any.

    A GGUF file counts with its split siblings; a safetensors directory with every
    file in it (config, tokenizer, weights).
    """
    if not entry.root:
        return None
    root = Path(entry.root).resolve()
    path = Path(entry.path)
    files = [path]
    if path.is_dir() and not path.is_symlink():
        files += [Path(e.path) for e in os.scandir(path) if not e.name.startswith(".")]
    elif (split := _SPLIT.search(path.name)) is not None:
        stem = path.name[:split.start()]
        files += [path.with_name(f"{stem}-{i:05d}-of-{split.group(1)}.gguf")
                  for i in range(2, int(split.group(1)) + 1)]
    for file in files:
        if not file.resolve().is_relative_to(root):
            return str(file)
    return None


def model_id_for(name: str) -> str:
    """A discovered file or directory name as a model id."""
    stem = name[:-5] if name.endswith(".gguf") else name
    stem = re.sub(r"-00001-of-\d{5}$", "", stem)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.").lower()[:128]


class Catalog:
    """Model ids and the files this host has for them."""

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self._entries: dict[tuple[str, str], CatalogEntry] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: CatalogEntry) -> None:
        if not NAME.match(entry.model_id) or ".." in entry.model_id:
            log.warning("skipping model %r: not a valid model id", entry.model_id)
            return
        if not self._confined(entry):
            return
        self._entries[(entry.model_id, entry.format)] = entry

    @staticmethod
    def _confined(entry: CatalogEntry) -> bool:
        escaped = outside_root(entry)
        if escaped is not None:
            log.warning("not serving model %r: %s resolves outside its model root %s (name "
                        "the file in the catalog file to serve it)", entry.model_id, escaped,
                        entry.root)
        return escaped is None

    @classmethod
    def build(cls, *, roots: Iterable[str] = (), catalog_file: str = "",
              fake_models: Iterable[str] = ()) -> Catalog:
        catalog = cls()
        for root in roots:
            for found in inference.discover(root):
                catalog.add(CatalogEntry(model_id_for(Path(found.path).name), found.format,
                                         found.path, root))
        if catalog_file:
            catalog.load_file(catalog_file)
        for model_id in fake_models:
            catalog.add(CatalogEntry(model_id, "fake", f"fake://{model_id}"))
        return catalog

    def load_file(self, path: str) -> None:
        base = Path(path).resolve().parent
        with open(path, "rb") as f:
            data = tomllib.load(f)
        for model_id, files in data.get("models", {}).items():
            if not isinstance(files, dict):
                raise ValueError(f"{path}: [models.{model_id}] must be a table")
            for key, location in files.items():
                fmt = _FILE_KEYS.get(key)
                if fmt is None:
                    raise ValueError(f"{path}: [models.{model_id}] {key!r} is not one of "
                                     f"{', '.join(sorted(_FILE_KEYS))}")
                if fmt in ("gguf", "safetensors"):
                    location = str((base / location).resolve())
                self.add(CatalogEntry(model_id, fmt, str(location)))

    def model_ids(self) -> list[str]:
        return sorted({m for m, _ in self._entries})

    def served(self, backends: Iterable[str]) -> dict[str, list[str]]:
        """Model id -> the given backends that can serve it here, in preference order."""
        usable = set(backends)
        served: dict[str, list[str]] = {}
        for (model_id, fmt) in sorted(self._entries):
            for backend in FORMAT_BACKENDS.get(fmt, ()):
                if backend in usable:
                    served.setdefault(model_id, []).append(backend)
        return served

    def entry_for(self, model_id: str, backend: str) -> CatalogEntry | None:
        """The entry ``backend`` loads for ``model_id``; None if none, or if its files
        have since been swapped for links out of its root."""
        for fmt, backends in FORMAT_BACKENDS.items():
            if backend in backends and (model_id, fmt) in self._entries:
                entry = self._entries[(model_id, fmt)]
                return entry if self._confined(entry) else None
        return None
