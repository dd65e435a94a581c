"""The backend registry, with platform preference.

``default()`` picks the first available backend in `PREFERENCE` order, then any
other available backend in name order, so the choice never depends on the
order in which backends were registered (go-inference iterated a map here).
"""

from __future__ import annotations

import threading

from inference.errors import (
    BackendNotFound,
    BackendUnavailable,
    NoBackendAvailable,
    NoBackendRegistered,
)
from inference.model import Backend, TextModel
from inference.options import LoadOptions

#: metal = MLX on an Apple GPU; rocm / cuda = llama.cpp built for that GPU;
#: llama_cpp = llama.cpp on any device; mlx = MLX off Metal (Linux CPU, CUDA).
PREFERENCE: tuple[str, ...] = ("metal", "rocm", "cuda", "llama_cpp", "mlx")


class Registry:
    """A set of named backends. The module functions use one shared instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backends: dict[str, Backend] = {}

    def register(self, backend: Backend, *, replace: bool = False) -> None:
        """Add ``backend`` under its name; `ValueError` if that name is taken, unless
        ``replace`` (then the new backend takes the name)."""
        with self._lock:
            taken = self._backends.get(backend.name)
            if taken is not None and not replace:
                raise ValueError(
                    f"backend {backend.name!r} is already registered ({type(taken).__name__});"
                    " pass replace=True to replace it")
            self._backends[backend.name] = backend

    def get(self, name: str) -> Backend:
        """The backend called ``name``; `BackendNotFound` lists the registered ones."""
        with self._lock:
            try:
                return self._backends[name]
            except KeyError:
                raise BackendNotFound(name, self._backends) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        with self._lock:
            return sorted(self._backends)

    def preference_order(self) -> list[str]:
        """Registered names in the order `default` tries them."""
        names = self.names()
        preferred = [n for n in PREFERENCE if n in names]
        return preferred + [n for n in names if n not in PREFERENCE]

    def available(self) -> list[str]:
        """Names of the backends that can run here, in preference order."""
        return [n for n in self.preference_order() if self.get(n).available()]

    def default(self) -> Backend:
        """The most preferred available backend."""
        order = self.preference_order()
        if not order:
            raise NoBackendRegistered()
        for name in order:
            backend = self.get(name)
            if backend.available():
                return backend
        raise NoBackendAvailable(order)

    def load_model(self, path: str, options: LoadOptions | None = None) -> TextModel:
        """Load ``path`` with ``options.backend``, or with the default backend."""
        options = options or LoadOptions()
        if options.backend:
            backend = self.get(options.backend)
            if not backend.available():
                raise BackendUnavailable(options.backend)
        else:
            backend = self.default()
        return backend.load_model(path, options)


_registry = Registry()


def registry() -> Registry:
    """The shared registry that the module functions use."""
    return _registry


def register(backend: Backend, *, replace: bool = False) -> None:
    """Add ``backend`` to the shared registry; see `Registry.register`."""
    _registry.register(backend, replace=replace)


def get(name: str) -> Backend:
    """The registered backend called ``name``."""
    return _registry.get(name)


def names() -> list[str]:
    """Registered backend names, sorted."""
    return _registry.names()


def default() -> Backend:
    """The most preferred backend that can run on this machine."""
    return _registry.default()


def load_model(path: str, options: LoadOptions | None = None) -> TextModel:
    """Load a model with the chosen or the default backend."""
    return _registry.load_model(path, options)
