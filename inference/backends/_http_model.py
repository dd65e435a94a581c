"""`HttpModel`: a model served by an OpenAI-compatible server, as a `TextModel`.

Tested against llama.cpp's own ``llama-server`` and llama-cpp-python's server
(``python -m llama_cpp.server``), each compared row by row with the local
llama.cpp backend on the same GGUF. What differs from a local engine:

- Conversations go to ``/chat/completions`` as ``messages``: the server
  renders them with the model's own chat template. ``chat`` streams the reply;
  ``classify_chat`` and ``batch_chat`` (the `ChatNative` capability) take
  prompts and conversations mixed. ``render_chat`` is refused, so that no
  conversation is ever rendered here with a fallback template. Prompt texts go
  to ``/completions``.
- ``generate`` and ``chat`` stream (server-sent events). Tokens carry the
  server's ids when it sends them, else id -1. ``stop_tokens`` are honoured
  client-side from those ids; a server that sends no ids (llama.cpp's and
  llama-cpp-python's servers) cannot honour them, and the stream raises
  `UnsupportedOperation` at its first token.
- ``batch_generate`` / ``batch_chat`` send non-streaming requests; a result's
  tokens are the server's ids when it sends them, else as many id -1 tokens as
  ``usage.completion_tokens`` says, the whole text on the first. ``stop_tokens``
  raise `UnsupportedOperation` there.
- ``classify`` asks for one greedy token per item; labels are scored over
  their full token sequence from generated-token log-probabilities, one request
  per item plus one per label that the first answer's top tokens do not cover
  (see `_http_labels`). Whole-vocabulary logits are not available
  (`UnsupportedOperation`).
- Items go out concurrently (``LoadOptions.parallel_slots``, default 4; start
  llama-server with ``-np`` at least that). Every item gets its own result:
  4xx becomes ``prompt_too_long`` or ``engine_error``; an unreachable server,
  5xx after retries, or an answer that is not OpenAI-shaped becomes
  ``server_error`` naming the URL and the fault (see `_http_batch`). Streams
  raise `GenerationError` instead.
- Metrics: see `_http_metrics` (token counts from ``usage``; llama.cpp's
  ``timings`` split the wall time into prefill and decode). Streams: prefill is
  the time to the first token, decode the rest, generated tokens from ``usage``
  or counted client-side. Memory fields stay 0: the memory is the server's.
  ``info()`` has the sizes the server's ``/models`` lists (llama.cpp's
  ``meta``, vLLM's ``max_model_len``), 0 for the rest. ``engine()`` names the server
  and its version, asked once (see `_http_version`).

llama-cpp-python's server (0.3.36), as measured: streams carry no ``usage``
and no token ids; streamed text drops some multi-byte characters that the
non-streamed answer keeps; ``max_tokens`` can be overshot by a few tokens
around incomplete UTF-8; an over-long prompt in a stream yields an empty 200
(raised here as `GenerationError`); a request failing validation answers 500
(so it is retried); ``/models`` lists ids only; its echoed prompt
log-probabilities are off by one position on models without BOS (not used
here); no ``timings``; and unless started with ``--interrupt_requests False``
it cuts a stream short when another request arrives (raised here, never
returned as a short answer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import unquote, urlsplit

from inference._base import BaseTextModel, options_or_default
from inference.backends import _http_openai as api
from inference.backends._http_batch import Batcher
from inference.backends._http_client import JsonClient, JsonObject
from inference.backends._http_version import server_engine
from inference.errors import GenerationError, ModelLoadError, UnsupportedOperation
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
        base = urlsplit(client.url("")).path.rstrip("/")
        root = client.below(base[:-3] if base.endswith("/v1") else base)
        self._root = root
        self._engine: tuple[str, str] | None = None
        self._batcher = Batcher(client, root, self._id, slots, self.url)

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
        timed = stopped = False
        events = self._client.stream(path, body)
        try:
            for event in events:
                p, g = api.usage(event)
                prompt_tokens, generated = p or prompt_tokens, g or generated
                timed = timed or api.timings(event) is not None
                choice = api.first_choice(event)
                stopped = stopped or choice.get("finish_reason") == "stop"
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
        if generated and timed and stopped and not options.stop_strings:
            generated -= 1  # llama.cpp's server counts its end-of-generation token
        self._metrics = GenerateMetrics(
            prompt_tokens=prompt_tokens, generated_tokens=generated or count,
            prefill_seconds=first - start, decode_seconds=end - first,
            total_seconds=end - start)

    # -- batches --------------------------------------------------------------------

    def render_chat(self, messages: Sequence[Message]) -> str:
        """Refused: the server renders conversations with the model's own template.

        Send them as they are with `classify_chat` / `batch_chat` (or `chat`).
        """
        raise UnsupportedOperation(
            f"{self.url} renders chat messages with the model's own template: send them "
            "with classify_chat or batch_chat, not as text rendered here")

    def classify(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]:
        return self.classify_chat(prompts, options)

    def classify_chat(
        self, items: Sequence[str | Sequence[Message]], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]:
        """`classify` for prompts and conversations (sent to ``/chat/completions``)."""
        self._check_open()
        options = options_or_default(options)
        if options.logits:
            raise UnsupportedOperation(
                "an OpenAI-compatible server does not return whole-vocabulary logits")
        results, self._metrics = self._batcher.classify(items, options)
        return results

    def batch_generate(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[BatchResult]:
        return self.batch_chat(prompts, options)

    def batch_chat(
        self, items: Sequence[str | Sequence[Message]], options: GenerateOptions | None = None
    ) -> list[BatchResult]:
        """`batch_generate` for prompts and conversations (sent to ``/chat/completions``)."""
        self._check_open()
        options = options_or_default(options)
        if options.stop_tokens:
            raise UnsupportedOperation(
                "batch_generate over HTTP cannot stop at token ids; use stop_strings")
        results, self._metrics = self._batcher.generate(items, options)
        return results

    @property
    def last_requests(self) -> int:
        """Requests answered during the last classify or batch (label scoring included)."""
        return self._batcher.requests

    # -- description ------------------------------------------------------------------

    def info(self) -> ModelInfo:
        meta = self._entry.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        context = (api.as_int(meta.get("n_ctx")) or api.as_int(meta.get("n_ctx_train"))
                   or api.as_int(self._entry.get("max_model_len")))
        return ModelInfo(architecture="remote", vocab_size=api.as_int(meta.get("n_vocab")),
                         num_layers=0, hidden_size=api.as_int(meta.get("n_embd")),
                         context_len=context)

    def engine(self) -> tuple[str, str]:
        """The server's engine and version (`EngineReporter`), asked once (`_http_version`)."""
        if self._engine is None:
            self._engine = server_engine(self._root)
        return self._engine

    def _close(self) -> None:
        """Nothing to free: every request opened and closed its own connection."""

    def __repr__(self) -> str:
        return f"HttpModel({self.url!r}, model={self._id!r})"
