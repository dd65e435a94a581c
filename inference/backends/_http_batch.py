"""Batches over HTTP: classify and generate for prompts and conversations, concurrently.

Each item (a prompt text, or a conversation sent as ``messages`` to
``/chat/completions``) is its own request, run on up to ``slots`` threads.
Every item gets its own result: a refused request (4xx) becomes that item's
``prompt_too_long`` / ``engine_error``; a server that cannot be reached or
answers something that is not an OpenAI-style answer gives every item it
touched a ``server_error`` naming the URL and what was wrong. Once the server
is unreachable, the batch's remaining items fail at once with the same error
instead of each waiting out its retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from inference._base import label_distribution
from inference.backends import _http_labels as labels_api
from inference.backends import _http_openai as api
from inference.backends._http_client import (
    HttpStatusError,
    JsonClient,
    JsonObject,
    ServerUnreachable,
)
from inference.backends._http_labels import LabelTokens
from inference.backends._http_metrics import Ledger
from inference.errors import GenerationError, PromptError
from inference.options import GenerateOptions
from inference.types import BatchResult, ClassifyResult, GenerateMetrics, Token

_T = TypeVar("_T")
_R = TypeVar("_R")


class _BadAnswer(GenerationError):
    """The server answered 200 with something that is not a usable answer."""


class Batcher:
    """Runs batches for one served model. Safe to share between threads."""

    def __init__(self, client: JsonClient, root: JsonClient, model: str, slots: int,
                 url: str) -> None:
        self._client = client
        self._root = root
        self._model = model
        self._slots = slots
        self._url = url
        self._label_cache: dict[str, LabelTokens] = {}
        self._top = labels_api.TOP  #: lowered once for a server that refuses so many
        self._lock = threading.Lock()
        self.requests = 0  #: requests sent by the last batch

    # -- generate -------------------------------------------------------------------

    def generate(self, items: Sequence[api.Item],
                 options: GenerateOptions) -> tuple[list[BatchResult], GenerateMetrics]:
        body = api.sampling_body(options)
        ledger = Ledger()

        def one(index: int, item: api.Item) -> BatchResult:
            if _empty(item):
                return BatchResult(finish_reason="error", error=PromptError(
                    "empty_prompt", "prompt is empty", index=index))
            path, part = api.request_for(item)
            answer = self._post(path, {**body, **part})
            ledger.count(answer, generated=api.generated_tokens(answer, options.stop_strings))
            choice = api.first_choice(answer)
            text = api.answer_text(choice)
            if text is None:
                raise _BadAnswer(f"{self._client.url(path)}: the answer has no "
                                 f"{'message content' if api.is_chat(item) else 'text'}: "
                                 f"{str(answer)[:200]}")
            prompt_tokens = api.usage(answer)[0]
            generated = api.generated_tokens(answer, options.stop_strings)
            ids = api.token_ids(choice)
            tokens = api.tokens_of(text, ids, generated) if text or ids or generated else []
            reason = "length" if choice.get("finish_reason") == "length" else "stop"
            return BatchResult(tokens=tuple(tokens), finish_reason=reason,
                               prompt_tokens=prompt_tokens)

        def failed(index: int, error: PromptError) -> BatchResult:
            return BatchResult(finish_reason="error", error=error)

        start = time.perf_counter()
        results = self._run(items, one, failed, ledger)
        return results, ledger.metrics(time.perf_counter() - start, classify=False)

    # -- classify -------------------------------------------------------------------

    def classify(self, items: Sequence[api.Item],
                 options: GenerateOptions) -> tuple[list[ClassifyResult], GenerateMetrics]:
        ledger = Ledger()
        start = time.perf_counter()
        tokens: list[LabelTokens] = []
        if options.labels and any(not _empty(item) for item in items):
            try:
                tokens = self._label_tokens(options.labels)
            except PromptError as exc:
                return ([ClassifyResult(error=PromptError(exc.code, str(exc), index=i))
                         for i in range(len(items))],
                        ledger.metrics(time.perf_counter() - start, classify=True))

        def one(index: int, item: api.Item) -> ClassifyResult:
            if _empty(item):
                return ClassifyResult(error=PromptError("empty_prompt", "prompt is empty",
                                                        index=index))
            return self._classify_one(index, item, tokens, ledger)

        def failed(index: int, error: PromptError) -> ClassifyResult:
            return ClassifyResult(error=error)

        results = self._run(items, one, failed, ledger)
        return results, ledger.metrics(time.perf_counter() - start, classify=True)

    def _classify_one(self, index: int, item: api.Item, tokens: list[LabelTokens],
                      ledger: Ledger) -> ClassifyResult:
        path, body = labels_api.first_token_body(item, self._top if tokens else 0)
        try:
            answer = self._post(path, body)
        except HttpStatusError as exc:
            if not (tokens and exc.status == 400 and "logprob" in exc.detail.lower()
                    and self._top > labels_api.SMALL_TOP):
                raise
            self._top = labels_api.SMALL_TOP
            path, body = labels_api.first_token_body(item, self._top)
            answer = self._post(path, body)
        ledger.count(answer)
        choice = api.first_choice(answer)
        text = api.answer_text(choice)
        if text is None:
            raise _BadAnswer(f"{self._client.url(path)}: the answer has no text: "
                             f"{str(answer)[:200]}")
        steps = api.logprob_steps(choice)
        ids = api.token_ids(choice)
        token_id = ids[0] if ids else (steps[0].token.id if steps else None)
        token = Token(token_id if token_id is not None else -1, text)
        prompt_tokens = api.usage(answer)[0]
        if not tokens:
            return ClassifyResult(token=token, prompt_tokens=prompt_tokens)
        if not steps:
            return ClassifyResult(prompt_tokens=prompt_tokens, error=PromptError(
                "unsupported", f"{self._url} returned no log-probabilities for the generated "
                "token, so labels cannot be scored", index=index))
        scores: dict[str, float] = {}
        for label in tokens:
            score = labels_api.from_top(steps[0], label)
            if score is None:
                forced, extra = labels_api.forced(self._post, item, label, index, self._url)
                if extra is not None:
                    ledger.count(extra, tokens=False)
                if isinstance(forced, PromptError):
                    return ClassifyResult(error=forced, prompt_tokens=prompt_tokens)
                score = forced
            scores[label.label] = score
        winner, probs = label_distribution(scores)
        return ClassifyResult(token=token, label=winner, label_probs=probs,
                              prompt_tokens=prompt_tokens)

    def _label_tokens(self, labels: Sequence[str]) -> list[LabelTokens]:
        with self._lock:
            missing = [label for label in labels if label not in self._label_cache]
            if missing:
                try:
                    found = labels_api.tokenize_labels(self._root, self._model, missing)
                except GenerationError as exc:
                    raise PromptError("server_error",
                                      f"{self._url}: cannot tokenize the labels: {exc}"
                                      ) from exc
                self._label_cache.update((t.label, t) for t in found)
            return [self._label_cache[label] for label in labels]

    # -- plumbing -------------------------------------------------------------------

    def _post(self, path: str, body: JsonObject) -> JsonObject:
        return self._client.post(path, {"model": self._model, **body})

    def _run(self, items: Sequence[api.Item], one: Callable[[int, api.Item], _R],
             failed: Callable[[int, PromptError], _R], ledger: Ledger) -> list[_R]:
        """``one`` for every item on the thread pool, each failure its item's error."""
        down: list[str] = []

        def guarded(index: int) -> _R:
            if down:
                return failed(index, PromptError("server_error", down[0], index=index))
            try:
                return one(index, items[index])
            except HttpStatusError as exc:
                if api.is_prompt_error(exc):
                    return failed(index, api.prompt_error(exc, index))
                return failed(index, PromptError("server_error", str(exc), index=index))
            except ServerUnreachable as exc:
                down.append(str(exc))
                return failed(index, PromptError("server_error", str(exc), index=index))
            except GenerationError as exc:
                return failed(index, PromptError("server_error", str(exc), index=index))

        results = _map(guarded, range(len(items)), self._slots)
        self.requests = ledger.requests
        return results


def _empty(item: api.Item) -> bool:
    return not item


def _map(fn: Callable[[_T], _R], items: Sequence[_T], slots: int) -> list[_R]:
    """``fn`` over ``items`` on up to ``slots`` threads; results in order."""
    if len(items) <= 1 or slots <= 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(slots, len(items)),
                              thread_name_prefix="inferq-http")
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
