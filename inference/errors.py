"""Errors raised by the inference contract and its backends.

Hierarchy::

    InferenceError                       root: catch this for anything from inference
    ├── BackendNotFound (LookupError)    a backend name that is not registered
    ├── NoBackendRegistered (LookupError) the registry is empty
    ├── NoBackendAvailable (RuntimeError) backends are registered, none runs here
    ├── BackendUnavailable (RuntimeError) a named backend cannot run on this machine
    ├── ModelLoadError (OSError)         a model file is missing, unreadable or corrupt
    │   └── ConversionError              a GGUF file `inference.convert` cannot convert
    │                                    (architecture, quantisation, truncated), or a
    │                                    destination already in use
    ├── PromptError (ValueError)         one prompt cannot run (empty, too long);
    │                                    carried on that prompt's result, not raised
    │                                    for the whole batch
    ├── GenerationError (RuntimeError)   the engine failed while running
    └── UnsupportedOperation (NotImplementedError) a backend lacks a capability
"""

from __future__ import annotations

from collections.abc import Iterable


class InferenceError(Exception):
    """Root of every error raised by `inference`."""


class BackendNotFound(InferenceError, LookupError):
    """A backend name that is not registered."""

    def __init__(self, name: str, registered: Iterable[str]) -> None:
        self.name = name
        self.registered = sorted(registered)
        listed = ", ".join(self.registered) or "none"
        super().__init__(f"backend {name!r} is not registered; registered: {listed}")


class NoBackendRegistered(InferenceError, LookupError):
    """The registry holds no backend at all."""

    def __init__(self) -> None:
        super().__init__(
            "no inference backend is registered; "
            "install an engine extra (pip install 'inferq[llama]' or 'inferq[mlx]')"
        )


class NoBackendAvailable(InferenceError, RuntimeError):
    """Backends are registered, but none can run on this machine."""

    def __init__(self, registered: Iterable[str]) -> None:
        self.registered = sorted(registered)
        super().__init__(
            "no registered backend is available on this machine "
            f"(registered: {', '.join(self.registered)}); "
            "install an engine extra such as 'inferq[llama]'"
        )


class BackendUnavailable(InferenceError, RuntimeError):
    """A backend asked for by name cannot run on this machine."""

    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        detail = f": {reason}" if reason else ""
        super().__init__(f"backend {name!r} is not available on this machine{detail}")


class ModelLoadError(InferenceError, OSError):
    """A model that is missing, unreadable or corrupt."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot load model {path!r}: {reason}")


class ConversionError(ModelLoadError):
    """A model file that cannot be converted, or a destination that is in the way.

    ``path`` is the file or directory at fault.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.args = (f"cannot convert {path!r}: {reason}",)


class PromptError(InferenceError, ValueError):
    """One prompt of a batch cannot run; the rest of the batch still does.

    ``code`` is stable for scripts (``empty_prompt``, ``prompt_too_long``,
    ``label_too_long``, ``engine_error``); the message names the lengths.
    """

    def __init__(self, code: str, message: str, *, index: int | None = None) -> None:
        self.code = code
        self.index = index
        where = f"prompt {index}: " if index is not None else ""
        super().__init__(f"{where}{message}")


class GenerationError(InferenceError, RuntimeError):
    """The engine failed while running a prompt or a batch."""


class UnsupportedOperation(InferenceError, NotImplementedError):
    """A backend does not offer the capability asked for."""
