"""MLX through mlx-lm: ``metal`` on Apple GPUs, ``mlx`` elsewhere (Linux CPU, CUDA).

This module only decides availability; the engine is imported by
`inference.backends._mlx_model` when a model is loaded.
"""

from __future__ import annotations

import importlib.util
import platform
import sys

from inference.errors import BackendUnavailable
from inference.model import TextModel
from inference.options import LoadOptions


def on_apple_gpu() -> bool:
    """True on Apple silicon, where MLX runs on Metal."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def mlx_backend_name() -> str:
    """``"metal"`` on Apple silicon, ``"mlx"`` elsewhere."""
    return "metal" if on_apple_gpu() else "mlx"


class MlxBackend:
    """Loads Hugging Face style safetensors directories with mlx-lm."""

    def __init__(self, name: str | None = None) -> None:
        self._name = name or mlx_backend_name()
        if self._name not in ("metal", "mlx"):
            raise ValueError(f"name={self._name!r}: use metal or mlx")

    @property
    def name(self) -> str:
        return self._name

    def available(self) -> bool:
        if self._name == "metal" and not on_apple_gpu():
            return False
        return all(importlib.util.find_spec(m) is not None for m in ("mlx", "mlx_lm"))

    def load_model(self, path: str, options: LoadOptions | None = None) -> TextModel:
        if not self.available():
            raise BackendUnavailable(self._name, "mlx-lm is not installed "
                                     "(pip install 'inferq[mlx]') or this is not Apple silicon")
        from inference.backends._mlx_model import MlxModel

        return MlxModel.load(path, options or LoadOptions(), backend=self._name)

    def __repr__(self) -> str:
        return f"MlxBackend({self._name!r})"
