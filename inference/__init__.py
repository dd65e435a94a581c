"""inference: the go-inference contract in Python, with llama.cpp, MLX and HTTP backends.

    import inference

    with inference.load_model("models/tiny.gguf") as model:
        for token in model.generate("Once upon a time", inference.GenerateOptions(max_tokens=32)):
            print(token.text, end="")
        results = model.classify(["I loved it", "I hated it"],
                                 inference.GenerateOptions(labels=("positive", "negative")))

Importing this package imports no engine and no third-party package; the built-in
backends register themselves and load their engine on first use.
"""

from inference.backends import register_builtin as _register_builtin
from inference.discover import discover
from inference.errors import (
    BackendNotFound,
    BackendUnavailable,
    ConversionError,
    GenerationError,
    InferenceError,
    ModelLoadError,
    NoBackendAvailable,
    NoBackendRegistered,
    PromptError,
    UnsupportedOperation,
)
from inference.model import Backend, TextModel
from inference.options import GenerateOptions, LoadOptions
from inference.registry import (
    PREFERENCE,
    Registry,
    default,
    get,
    load_model,
    names,
    register,
    registry,
)
from inference.types import (
    BatchResult,
    ClassifyResult,
    DiscoveredModel,
    GenerateMetrics,
    Message,
    ModelInfo,
    Token,
)

_register_builtin(registry())

__all__ = [
    "PREFERENCE",
    "Backend",
    "BackendNotFound",
    "BackendUnavailable",
    "BatchResult",
    "ClassifyResult",
    "ConversionError",
    "DiscoveredModel",
    "GenerateMetrics",
    "GenerateOptions",
    "GenerationError",
    "InferenceError",
    "LoadOptions",
    "Message",
    "ModelInfo",
    "ModelLoadError",
    "NoBackendAvailable",
    "NoBackendRegistered",
    "PromptError",
    "Registry",
    "TextModel",
    "Token",
    "UnsupportedOperation",
    "default",
    "discover",
    "get",
    "load_model",
    "names",
    "register",
    "registry",
]
