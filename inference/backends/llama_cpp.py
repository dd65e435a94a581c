"""llama.cpp through llama-cpp-python: ``llama_cpp`` everywhere, ``rocm`` / ``cuda`` for GPU builds.

This module only decides availability; the engine is imported by
`inference.backends._llama_model` when a model is loaded.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from inference.errors import BackendUnavailable
from inference.model import TextModel
from inference.options import LoadOptions

# Library files that a llama-cpp-python GPU build installs, and the device node
# that says such a GPU is present.
_GPU_BUILDS = {
    "rocm": (("libggml-hip.so", "ggml-hip.dll"), ("/dev/kfd",)),
    "cuda": (("libggml-cuda.so", "ggml-cuda.dll"), ("/dev/nvidiactl", "/dev/nvidia0")),
}


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def llama_gpu_kind() -> str | None:
    """``"rocm"`` or ``"cuda"`` when the installed build offloads to that GPU kind."""
    package = _package_dir()
    if package is None:
        return None
    for kind, (libraries, _) in _GPU_BUILDS.items():
        if any((package / "lib" / lib).exists() for lib in libraries):
            return kind
    return None


class LlamaCppBackend:
    """Loads GGUF files with llama.cpp."""

    def __init__(self, name: str = "llama_cpp") -> None:
        if name not in ("llama_cpp", *_GPU_BUILDS):
            raise ValueError(f"name={name!r}: use llama_cpp, rocm or cuda")
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def available(self) -> bool:
        if _package_dir() is None:
            return False
        if self._name == "llama_cpp":
            return True
        _, devices = _GPU_BUILDS[self._name]
        return llama_gpu_kind() == self._name and any(os.path.exists(d) for d in devices)

    def load_model(self, path: str, options: LoadOptions | None = None) -> TextModel:
        if not self.available():
            raise BackendUnavailable(self._name, "llama-cpp-python is not installed "
                                     "(pip install 'inferq[llama]') or the GPU is absent")
        from inference.backends._llama_model import LlamaModel

        return LlamaModel.load(path, options or LoadOptions(), backend=self._name)

    def __repr__(self) -> str:
        return f"LlamaCppBackend({self._name!r})"

