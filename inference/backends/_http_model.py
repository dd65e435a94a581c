"""`HttpModel`: a model served by an OpenAI-compatible server, as a `TextModel`.

What differs from a local engine, by method:

- ``generate`` and ``chat`` stream (server-sent events). Tokens carry the
  server's ids when it sends them, else id -1. ``stop_tokens`` are honoured
  client-side from those ids; a server that sends no ids (llama.cpp's and
  llama-cpp-python's servers) cannot honour them, and the stream raises
  `UnsupportedOperation` at its first token. ``chat`` lets the server apply
  the model's chat template.
- ``classify`` asks for one greedy token per prompt. Labels are scored over
  their full token sequence from the server's echoed prompt log-probabilities
  (``echo`` with ``logprobs``: llama-cpp-python's server and vLLM have it); on a
  server without them, or where a token straddles the prompt/label boundary,
  the prompt's result carries ``PromptError("unsupported", ...)``: no
  first-token approximation is substituted. Whole-vocabulary logits are not
  available over HTTP (`UnsupportedOperation`).
- ``batch_generate`` sends non-streaming requests; each result holds the whole
  completion as one token (id -1, or the server's ids with the text on the
  first). ``stop_tokens`` raise `UnsupportedOperation` there.
- Prompts go out concurrently (``LoadOptions.parallel_slots``, default 4); a
  4xx answer becomes that prompt's error (``prompt_too_long`` when the server
  says the context is exceeded, else ``engine_error``), while an unreachable
  or failing server (5xx, timeouts, after retries) raises `GenerationError`.
- Metrics: token counts from the server's ``usage`` (generated tokens counted
  client-side when a stream has none); prefill is the time to the first
  token, decode the rest. Memory fields stay 0: the memory is the server's.
  ``info()`` has the sizes the server's ``/models`` lists (llama.cpp's
  ``meta``, vLLM's ``max_model_len``), 0 for the rest.

llama-cpp-python's server (0.3.36), as measured: streams carry no ``usage``
and no token ids; streamed text drops some multi-byte characters that the
non-streamed answer keeps; ``max_tokens`` can be overshot by a few tokens
around incomplete UTF-8; an over-long prompt in a stream yields an empty 200
(raised here as `GenerationError`); a request failing validation answers 500
(so it is retried); ``/models`` lists ids only; and unless started with
``--interrupt_requests False`` it cuts a stream short when another request
arrives (raised here, never returned as a short answer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from inference._base import BaseTextModel, label_distribution, options_or_default
from inference.backends import _http_openai as api
from inference.backends._http_client import HttpStatusError, JsonClient, JsonObject
from inference.errors import GenerationError, ModelLoadError, PromptError, UnsupportedOperation
from inference.options import GenerateOptions, LoadOptions
from inference.types import (
    BatchResult,
    ClassifyResult,
    GenerateMetrics,
    Message,
    ModelInfo,
    Token,
)

#: Environment variable holding the server's API key, sent as a bearer token.
API_KEY_ENV = "INFERQ_HTTP_API_KEY"
DEFAULT_SLOTS = 4

_T = TypeVar("_T")
_R = TypeVar("_R")


class HttpModel(BaseTextModel):
    """One model on an OpenAI-compatible server. Safe to share between threads."""

    def __init__(self, client: JsonClient, entry: JsonObject, *, slots: int = DEFAULT_SLOTS,
                 url: str = "") -> None:
        super().__init__()
        self._client = client
        self._entry = entry
        self._id = str(entry["id"])
        self._slots = slots
        self.url = url or client.url("")

    @classmethod
    def connect(
        cls,
        url: str,
        options: LoadOptions,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> HttpModel:
        """Connect to the server at ``url`` (``http://host:port/v1``, ``#model`` optional).

        ``timeout`` bounds each wait for the server's answer, ``connect_timeout``
        the connection; a request is tried ``attempts`` times, waiting
        ``backoff`` seconds before the first retry and doubling.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelLoadError(url, "give an http:// or https:// server URL, "
                                 "such as http://127.0.0.1:8080/v1")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise ModelLoadError(url, str(exc)) from None
        if options.adapter_path:
            raise ModelLoadError(url, "adapters are chosen by the server, not by the client")
        client = JsonClient(parts._replace(query="", fragment=""),
                            api_key=os.environ.get(API_KEY_ENV, ""), timeout=timeout,
                            connect_timeout=connect_timeout, attempts=attempts, backoff=backoff)
        try:
            listing = client.get("/models")
        except GenerationError as exc:
            raise ModelLoadError(url, f"cannot list the served models: {exc}") from exc
        data = listing.get("data")
        entries = [e for e in data if isinstance(e, dict) and "id" in e] if isinstance(
            data, list) else []
        served = [str(e["id"]) for e in entries]
        wanted = unquote(parts.fragment)
        if wanted:
            chosen = [e for e in entries if str(e["id"]) == wanted]
            if not chosen:
                raise ModelLoadError(url, f"the server does not serve {wanted!r}; "
                                     f"served: {', '.join(served) or 'none'}")
            entry = chosen[0]
        elif len(entries) == 1:
            entry = entries[0]
        elif not entries:
            raise ModelLoadError(url, "the server lists no model at /models")
        else:
            raise ModelLoadError(url, f"the server serves several models ({', '.join(served)});"
                                 f" name one as the URL fragment: {url}#{served[0]}")
        return cls(client, entry, slots=options.parallel_slots or DEFAULT_SLOTS, url=url)

    @property
    def model_type(self) -> str:
        return "remote"

    @property
    def model_id(self) -> str:
        """The served model's name, sent with every request."""
        return self._id

    # -- streaming ------------------------------------------------------------------

    def generate(self, prompt: str, options: GenerateOptions | None = None) -> Iterator[Token]:
        options = options_or_default(options)
        body = {"model": self._id, "prompt": prompt, **api.sampling_body(options)}
        return self._stream("/completions", body, options, lambda c: c.get("text"))

    def chat(
        self, messages: Sequence[Message], options: GenerateOptions | None = None
    ) -> Iterator[Token]:
        """Stream the reply; the server renders ``messages`` with its own template."""
        options = options_or_default(options)
        body = {"model": self._id, **api.sampling_body(options),
                "messages": [{"role": m.role, "content": m.content} for m in messages]}

        def text(choice: JsonObject) -> object:
            delta = choice.get("delta")
            return delta.get("content") if isinstance(delta, dict) else None

        return self._stream("/chat/completions", body, options, text)

    def _stream(self, path: str, body: JsonObject, options: GenerateOptions,
                text_of: Callable[[JsonObject], object]) -> Iterator[Token]:
        """Stream ``body``'s answer. A chunk is a token when it carries ids, or text
        (``""`` too: llama-cpp-python's server sends that for a token inside a
        multi-byte character); role-only and closing chunks are not."""
        self._check_open()
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        first = 0.0
        count, prompt_tokens, generated, finished = 0, 0, 0, False
        events = self._client.stream(path, body)
        try:
            for event in events:
                p, g = api.usage(event)
                prompt_tokens, generated = p or prompt_tokens, g or generated
                choice = api.first_choice(event)
                done = choice.get("finish_reason") is not None
                finished = finished or done
                ids, text = api.token_ids(choice), text_of(choice)
                if ids is None and (not isinstance(text, str) or (done and not text)):
                    continue
                tokens = api.tokens_of(str(text or ""), ids)
                if options.stop_tokens and tokens and ids is None:
                    raise UnsupportedOperation(
                        f"{self.url} sends no token ids, so stop_tokens cannot be honoured; "
                        "use stop_strings")
                if any(t.id in options.stop_tokens for t in tokens):
                    finished = True
                    break
                for token in tokens:
                    first = first or time.perf_counter()
                    count += 1
                    yield token
        finally:
            events.close()
        if not finished:
            raise GenerationError(
                f"{self._client.url(path)} ended the stream without a finish reason: the "
                "server failed mid-stream (llama-cpp-python's server reports an over-long "
                "prompt this way, and cuts a stream short when another request arrives "
                "unless started with --interrupt_requests False)")
        end = time.perf_counter()
        first = first or end
        self._metrics = GenerateMetrics(
            prompt_tokens=prompt_tokens, generated_tokens=generated or count,
            prefill_seconds=first - start, decode_seconds=end - first,
            total_seconds=end - start)

    # -- batches --------------------------------------------------------------------

    def classify(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]:
        self._check_open()
        options = options_or_default(options)
        if options.logits:
            raise UnsupportedOperation(
                "an OpenAI-compatible server does not return whole-vocabulary logits")
        start = time.perf_counter()
        results = self._map(lambda i: self._classify_one(i, prompts[i], options.labels),
                            range(len(prompts)))
        total = time.perf_counter() - start
        self._metrics = GenerateMetrics(prompt_tokens=sum(r.prompt_tokens for r in results),
                                        prefill_seconds=total, total_seconds=total)
        return results

    def _classify_one(self, index: int, prompt: str, labels: tuple[str, ...]) -> ClassifyResult:
        if not prompt:
            return ClassifyResult(error=PromptError("empty_prompt", "prompt is empty",
                                                    index=index))
        try:
            answer = self._complete(api.greedy_body(prompt))
        except HttpStatusError as exc:
            if not api.is_prompt_error(exc):
                raise
            return ClassifyResult(error=api.prompt_error(exc, index))
        choice = api.first_choice(answer)
        tokens = api.tokens_of(str(choice.get("text") or ""), api.token_ids(choice))
        result = ClassifyResult(token=tokens[0],
                                prompt_tokens=api.usage(answer)[0])
        if not labels:
            return result
        scores: dict[str, float] = {}
        for label in labels:
            score = self._score_label(index, prompt, label)
            if isinstance(score, PromptError):
                return ClassifyResult(error=score, prompt_tokens=result.prompt_tokens)
            scores[label] = score
        winner, probs = label_distribution(scores)
        return ClassifyResult(token=result.token, label=winner, label_probs=probs,
                              prompt_tokens=result.prompt_tokens)

    def _score_label(self, index: int, prompt: str, label: str) -> float | PromptError:
        body = {**api.greedy_body(prompt + label), "echo": True, "logprobs": 0}
        try:
            answer = self._complete(body)
        except HttpStatusError as exc:
            if not api.is_prompt_error(exc):
                raise
            error = api.prompt_error(exc, index, label=label)
            if error.code == "label_too_long":
                return error
            return PromptError("unsupported", f"{self.url} cannot score labels: {exc.message}",
                               index=index)
        score = api.label_logprob(api.first_choice(answer), prompt, label)
        if isinstance(score, str):
            return PromptError("unsupported", f"{self.url} cannot score labels: {score}",
                               index=index)
        return score

    def batch_generate(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[BatchResult]:
        self._check_open()
        options = options_or_default(options)
        if options.stop_tokens:
            raise UnsupportedOperation(
                "batch_generate over HTTP cannot stop at token ids; use stop_strings")
        body = {"model": self._id, **api.sampling_body(options)}
        counts: list[int] = [0] * len(prompts)

        def one(index: int) -> BatchResult:
            if not prompts[index]:
                return BatchResult(finish_reason="error", error=PromptError(
                    "empty_prompt", "prompt is empty", index=index))
            try:
                answer = self._complete({**body, "prompt": prompts[index]})
            except HttpStatusError as exc:
                if not api.is_prompt_error(exc):
                    raise
                return BatchResult(finish_reason="error", error=api.prompt_error(exc, index))
            choice = api.first_choice(answer)
            text, ids = str(choice.get("text") or ""), api.token_ids(choice)
            tokens = api.tokens_of(text, ids) if text or ids else []
            prompt_tokens, counts[index] = api.usage(answer)
            reason = "length" if choice.get("finish_reason") == "length" else "stop"
            return BatchResult(tokens=tuple(tokens), finish_reason=reason,
                               prompt_tokens=prompt_tokens)

        start = time.perf_counter()
        results = self._map(one, range(len(prompts)))
        self._metrics = GenerateMetrics(
            prompt_tokens=sum(r.prompt_tokens for r in results), generated_tokens=sum(counts),
            total_seconds=time.perf_counter() - start)
        return results

    def _complete(self, body: JsonObject) -> JsonObject:
        return self._client.post("/completions", {"model": self._id, **body})

    def _map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``fn`` over ``items`` on the thread pool; results in order."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        pool = ThreadPoolExecutor(max_workers=min(self._slots, len(items)),
                                  thread_name_prefix="inferq-http")
        try:
            return list(pool.map(fn, items))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- description ------------------------------------------------------------------

    def info(self) -> ModelInfo:
        meta = self._entry.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        context = (api.as_int(meta.get("n_ctx")) or api.as_int(meta.get("n_ctx_train"))
                   or api.as_int(self._entry.get("max_model_len")))
        return ModelInfo(architecture="remote", vocab_size=api.as_int(meta.get("n_vocab")),
                         num_layers=0, hidden_size=api.as_int(meta.get("n_embd")),
                         context_len=context)

    def _close(self) -> None:
        """Nothing to free: every request opened and closed its own connection."""

    def __repr__(self) -> str:
        return f"HttpModel({self.url!r}, model={self._id!r})"
