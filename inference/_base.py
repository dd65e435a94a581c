"""Shared machinery for backends: lifecycle, options, chat, label scoring."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Self

from inference._chat import render_chat
from inference.errors import GenerationError, PromptError
from inference.options import GenerateOptions
from inference.types import (
    BatchResult,
    ClassifyResult,
    GenerateMetrics,
    Message,
    ModelInfo,
    Token,
)


class BaseTextModel(ABC):
    """A `TextModel` skeleton: subclasses supply the engine calls."""

    def __init__(self) -> None:
        self._closed = False
        self._metrics = GenerateMetrics()

    # -- the engine-specific part -------------------------------------------------

    @property
    @abstractmethod
    def model_type(self) -> str: ...

    @abstractmethod
    def generate(self, prompt: str, options: GenerateOptions | None = None) -> Iterator[Token]: ...

    @abstractmethod
    def classify(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]: ...

    @abstractmethod
    def batch_generate(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[BatchResult]: ...

    @abstractmethod
    def info(self) -> ModelInfo: ...

    @abstractmethod
    def _close(self) -> None:
        """Free the engine's resources; called once."""

    def chat_template(self) -> str | None:
        """The model's own chat template; None = use the fallback."""
        return None

    def special_tokens(self) -> tuple[str, str]:
        """The BOS and EOS texts handed to the chat template."""
        return "", ""

    # -- shared behaviour -----------------------------------------------------------

    def render_chat(self, messages: Sequence[Message]) -> str:
        """``messages`` under the model's template (or the fallback), as prompt text."""
        bos, eos = self.special_tokens()
        return render_chat(self.chat_template(), messages, bos_token=bos, eos_token=eos)

    def chat(
        self, messages: Sequence[Message], options: GenerateOptions | None = None
    ) -> Iterator[Token]:
        """Render ``messages`` with the model's template, then generate."""
        return self.generate(self.render_chat(messages), options)

    def metrics(self) -> GenerateMetrics:
        return self._metrics

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise GenerationError(f"{type(self).__name__} is closed")


def options_or_default(options: GenerateOptions | None) -> GenerateOptions:
    return options if options is not None else GenerateOptions()


def check_prompt_length(index: int, n_tokens: int, context_len: int, reserve: int = 0) -> None:
    """Raise `PromptError` for an empty prompt or one that leaves no room.

    ``reserve`` is what must fit after the prompt (label tokens, or at least
    one generated token).
    """
    if n_tokens == 0:
        raise PromptError("empty_prompt", "prompt is empty", index=index)
    if n_tokens + reserve > context_len:
        need = f" + {reserve:,} to generate" if reserve else ""
        raise PromptError(
            "prompt_too_long",
            f"prompt is {n_tokens:,} tokens{need}, context is {context_len:,}",
            index=index,
        )


def ambiguous_labels(labels: Sequence[str], token_ids: Sequence[Sequence[int]]) -> str | None:
    """Why a label set cannot be scored apart, or None.

    Two labels that tokenize identically get the same probability; a label whose tokens
    begin another's is scored as that prefix, a probability that includes every longer
    answer starting with it. Both make the winner meaningless, so they are refused.
    """
    seen: dict[tuple[int, ...], str] = {}
    for label, ids in zip(labels, token_ids, strict=True):
        key = tuple(ids)
        if key in seen:
            return (f"labels {seen[key]!r} and {label!r} are the same tokens {list(key)} to "
                    "this model; make them differ")
        seen[key] = label
    begun: dict[tuple[int, ...], str] = {}  # proper prefix -> the first label it begins
    for key, label in seen.items():
        for j in range(1, len(key)):
            begun.setdefault(key[:j], label)
    for short_key, short in seen.items():  # linear in the labels' tokens: 5,000 labels pass
        if short_key in begun:
            long = begun[short_key]
            return (f"label {short!r} is the first tokens of label {long!r} to this "
                    "model, so its probability would include every answer starting "
                    f"with {long!r}; make one not begin the other")
    return None


def label_distribution(logprobs: Mapping[str, float]) -> tuple[str, dict[str, float]]:
    """The winning label and every label's probability, normalised over the labels.

    ``logprobs`` maps a label to the log-probability of its whole token
    sequence after the prompt (the sum over its tokens).
    """
    top = max(logprobs.values())
    weights = {label: math.exp(lp - top) for label, lp in logprobs.items()}
    total = sum(weights.values())
    probs = {label: w / total for label, w in weights.items()}
    winner = max(probs, key=lambda label: probs[label])
    return winner, probs
