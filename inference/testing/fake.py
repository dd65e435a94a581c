"""A fake backend for testing code that drives models: the queue, workers, faults.

Answers are deterministic functions of the prompt, computed without an engine,
so tests and benchmarks of the machinery run fast. Markers in a prompt inject
faults, the way a real engine fails:

- ``@@crash@@``: the process dies at once (``os._exit``), as a segfault would;
- ``@@hang@@``: the call sleeps for an hour;
- ``@@slow:<seconds>@@``: the call sleeps that long, then answers;
- ``@@error@@``: the call raises `GenerationError`.

A model path of the form ``fake://<anything>`` loads; ``fake://fail-load`` does not.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator, Sequence

from inference._base import BaseTextModel, label_distribution, options_or_default
from inference.errors import GenerationError, ModelLoadError, PromptError
from inference.options import GenerateOptions, LoadOptions
from inference.types import BatchResult, ClassifyResult, GenerateMetrics, ModelInfo, Token

_SLOW = re.compile(r"@@slow:([0-9.]+)@@")
CONTEXT_LEN = 4096


def _faults(prompt: str) -> None:
    if "@@crash@@" in prompt:
        os._exit(70)
    if "@@hang@@" in prompt:
        time.sleep(3600)
    slow = _SLOW.search(prompt)
    if slow:
        time.sleep(float(slow.group(1)))
    if "@@error@@" in prompt:
        raise GenerationError("fake engine error (@@error@@ marker)")


def _inferq_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("inferq")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return ""


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class FakeModel(BaseTextModel):
    """Deterministic answers: labels by hash, generated text from the prompt's hash."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    @property
    def model_type(self) -> str:
        return "fake"

    def engine(self) -> tuple[str, str]:
        """`EngineReporter`: the fake engine is as old as the inferq it ships in."""
        return "inferq-fake", _inferq_version()

    def info(self) -> ModelInfo:
        return ModelInfo(architecture="fake", vocab_size=256, num_layers=0, hidden_size=0,
                         context_len=CONTEXT_LEN)

    def _check(self, index: int, prompt: str) -> PromptError | None:
        if not prompt:
            return PromptError("empty_prompt", "prompt is empty", index=index)
        if len(prompt.encode()) > CONTEXT_LEN:
            return PromptError("prompt_too_long", f"prompt is {len(prompt.encode()):,} tokens, "
                               f"context is {CONTEXT_LEN:,}", index=index)
        return None

    def classify(self, prompts: Sequence[str],
                 options: GenerateOptions | None = None) -> list[ClassifyResult]:
        self._check_open()
        opts = options_or_default(options)
        started = time.perf_counter()
        out = []
        for i, prompt in enumerate(prompts):
            error = self._check(i, prompt)
            if error:
                out.append(ClassifyResult(error=error))
                continue
            _faults(prompt)
            digest = _digest(prompt)
            label, probs = None, None
            if opts.labels:
                label, probs = label_distribution(
                    {lab: -float((digest[0] + 37 * k) % 11) for k, lab in enumerate(opts.labels)})
            out.append(ClassifyResult(token=Token(digest[1], chr(digest[1] % 26 + 97)),
                                      label=label, label_probs=probs,
                                      prompt_tokens=len(prompt.encode()) + 1))
        self._finish(sum(r.prompt_tokens for r in out), 0, started)
        return out

    def _tokens(self, prompt: str, max_tokens: int) -> tuple[Token, ...]:
        digest = _digest(prompt) * (max_tokens // 16 + 1)
        return tuple(Token(b, chr(b % 26 + 97)) for b in digest[:max_tokens])

    def generate(self, prompt: str, options: GenerateOptions | None = None) -> Iterator[Token]:
        self._check_open()
        error = self._check(0, prompt)
        if error:
            raise error
        opts = options_or_default(options)
        _faults(prompt)
        started = time.perf_counter()
        tokens = self._tokens(prompt, opts.max_tokens)
        self._finish(len(prompt.encode()) + 1, len(tokens), started)
        return iter(tokens)

    def batch_generate(self, prompts: Sequence[str],
                       options: GenerateOptions | None = None) -> list[BatchResult]:
        self._check_open()
        opts = options_or_default(options)
        started = time.perf_counter()
        out = []
        for i, prompt in enumerate(prompts):
            error = self._check(i, prompt)
            if error:
                out.append(BatchResult(error=error, finish_reason="error"))
                continue
            _faults(prompt)
            out.append(BatchResult(tokens=self._tokens(prompt, opts.max_tokens),
                                   finish_reason="length",
                                   prompt_tokens=len(prompt.encode()) + 1))
        self._finish(sum(r.prompt_tokens for r in out), sum(len(r.tokens) for r in out), started)
        return out

    def _finish(self, prompt_tokens: int, generated: int, started: float) -> None:
        from inference._memory import current_rss_bytes, peak_rss_bytes

        seconds = max(time.perf_counter() - started, 1e-9)
        self._metrics = GenerateMetrics(
            prompt_tokens=prompt_tokens, generated_tokens=generated,
            prefill_seconds=seconds / 2 if prompt_tokens else 0.0,
            decode_seconds=seconds / 2 if generated else 0.0, total_seconds=seconds,
            peak_memory_bytes=peak_rss_bytes(), active_memory_bytes=current_rss_bytes())

    def _close(self) -> None:
        pass


class FakeBackend:
    """The ``fake`` backend: always available, loads ``fake://`` paths."""

    name = "fake"

    def available(self) -> bool:
        return True

    def load_model(self, path: str, options: LoadOptions | None = None) -> FakeModel:
        if not path.startswith("fake://"):
            raise ModelLoadError(path, "the fake backend loads fake://<name> paths only")
        if path == "fake://fail-load":
            raise ModelLoadError(path, "this fake model refuses to load")
        return FakeModel(path)
