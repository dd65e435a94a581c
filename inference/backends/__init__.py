"""The built-in backends. Importing this package imports no engine."""

from __future__ import annotations

from inference.backends.http import HttpBackend
from inference.backends.llama_cpp import LlamaCppBackend, llama_gpu_kind
from inference.backends.mlx import MlxBackend, mlx_backend_name
from inference.registry import Registry


def register_builtin(registry: Registry) -> None:
    """Register llama_cpp (and rocm or cuda for a GPU build), metal or mlx, and http."""
    registry.register(LlamaCppBackend("llama_cpp"))
    gpu = llama_gpu_kind()
    if gpu is not None:
        registry.register(LlamaCppBackend(gpu))
    registry.register(MlxBackend(mlx_backend_name()))
    registry.register(HttpBackend())


__all__ = ["HttpBackend", "LlamaCppBackend", "MlxBackend", "register_builtin"]
