"""The two interfaces of the contract: a loaded `TextModel` and a `Backend` that loads one.

New capabilities arrive as new small protocols, never as changed signatures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from inference.options import GenerateOptions, LoadOptions
from inference.types import BatchResult, ClassifyResult, GenerateMetrics, Message, ModelInfo, Token


@runtime_checkable
class TextModel(Protocol):
    """A loaded language model. Not thread-safe: one caller at a time."""

    @property
    def model_type(self) -> str:
        """The architecture family, such as ``"llama"``, ``"gemma3"``, ``"qwen3"``."""
        ...

    def generate(self, prompt: str, options: GenerateOptions | None = None) -> Iterator[Token]:
        """Stream the tokens generated after ``prompt``; raises on failure."""
        ...

    def chat(
        self, messages: Sequence[Message], options: GenerateOptions | None = None
    ) -> Iterator[Token]:
        """Stream the reply to ``messages``, rendered with the model's own chat template."""
        ...

    def classify(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]:
        """Prefill only: one forward pass per prompt, the token at its last position.

        With ``options.labels``, every label is scored over its full token
        sequence. A prompt that cannot run gets an error on its own result.
        """
        ...

    def batch_generate(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[BatchResult]:
        """Generate for all prompts together; one result per prompt, in order."""
        ...

    def info(self) -> ModelInfo:
        """What the model is: architecture, sizes, quantisation."""
        ...

    def metrics(self) -> GenerateMetrics:
        """Performance of the last generate, chat, classify or batch_generate."""
        ...

    def close(self) -> None:
        """Free the model's memory; the model is unusable afterwards. Idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class ChatRenderer(Protocol):
    """Optional: a model that can turn chat messages into its prompt text."""

    def render_chat(self, messages: Sequence[Message]) -> str:
        """``messages`` under the model's own chat template, ready for the prompt."""
        ...


@runtime_checkable
class ChatNative(Protocol):
    """Optional: a model that takes conversations as they are (a server applies its template).

    Each item is a prompt text or a conversation (a sequence of `Message`),
    mixed in any order; a conversation is answered by the assistant's reply to
    it. Callers holding chat messages prefer these methods to `ChatRenderer`.
    """

    def classify_chat(
        self, items: Sequence[str | Sequence[Message]], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]:
        """`TextModel.classify` for prompts and conversations; one result per item, in order."""
        ...

    def batch_chat(
        self, items: Sequence[str | Sequence[Message]], options: GenerateOptions | None = None
    ) -> list[BatchResult]:
        """`TextModel.batch_generate` for prompts and conversations; one result per item."""
        ...


@runtime_checkable
class EngineReporter(Protocol):
    """Optional: a model that names the engine running it, for the provenance of results."""

    def engine(self) -> tuple[str, str]:
        """(engine name, its version), such as ``("llama-cpp-python", "0.3.36")``; a
        version the engine does not report is ``""``."""
        ...


@runtime_checkable
class Backend(Protocol):
    """An engine that loads models, under one registry name.

    Built in: ``llama_cpp``, ``rocm``, ``cuda``, ``metal``, ``mlx``, ``http``.
    """

    @property
    def name(self) -> str:
        """The registry name."""
        ...

    def available(self) -> bool:
        """True when the engine can run here. Cheap; never imports the engine."""
        ...

    def load_model(self, path: str, options: LoadOptions | None = None) -> TextModel:
        """Load the model at ``path`` (a file, a directory or a URL, by backend)."""
        ...
