"""The OpenAI-compatible API's dialect: request bodies, answers, log-probabilities, errors.

Servers differ in details; what is sent here works with llama.cpp's
``llama-server`` and llama-cpp-python's server (both tested), and is meant
for vLLM and Ollama too:

- Every sampling option is sent explicitly, since server defaults differ from
  ours (llama-cpp-python's server: ``top_k=40, top_p=0.95, min_p=0.05,
  repeat_penalty=1.1``). "Off" values: ``top_p`` 1.0, ``min_p`` 0.0,
  ``top_k`` 0 (off in llama.cpp, llama-cpp-python and recent vLLM;
  llama-cpp-python's server rejects -1, which older vLLM wants), the repeat
  penalty 1.0 under both of its names (``repeat_penalty``: llama.cpp;
  ``repetition_penalty``: vLLM).
- Token ids are asked for with extension fields that servers ignore when
  unknown (``return_token_ids``: vLLM; ``return_tokens``: llama.cpp). When an
  answer carries none, tokens have id -1.
- A prompt is a text (``/completions``, ``prompt``) or a conversation
  (``/chat/completions``, ``messages``, rendered by the server's own template).
- Log-probabilities come in two shapes: the legacy completions one
  (``tokens``, ``token_logprobs``, ``top_logprobs`` as text-keyed dicts:
  llama-cpp-python, vLLM) and the chat one (``content``: a list of
  ``{token, logprob, top_logprobs}``, with ``id`` on llama.cpp's server, which
  uses it for completions too). `logprob_steps` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inference.backends._http_client import HttpStatusError, JsonObject
from inference.errors import PromptError
from inference.options import GenerateOptions
from inference.types import Message, Token

#: A prompt text, or a conversation for the server to render with its own template.
Item = str | Sequence[Message]

#: Words that servers use when a prompt does not fit the context.
_CONTEXT_WORDS = ("context length", "context window", "context size", "maximum context",
                  "context_length_exceeded", "exceed_context_size", "exceeds the available")


def sampling_body(options: GenerateOptions) -> JsonObject:
    """Request fields for ``options``, every one explicit."""
    body: JsonObject = {
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p or 1.0,
        "min_p": options.min_p,
        "repeat_penalty": options.repeat_penalty or 1.0,
        "repetition_penalty": options.repeat_penalty or 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "stop": list(options.stop_strings),
        "return_token_ids": True,
        "return_tokens": True,
    }
    if options.seed is not None:
        body["seed"] = options.seed
    return body


def is_chat(item: Item) -> bool:
    return not isinstance(item, str)


def request_for(item: Item) -> tuple[str, JsonObject]:
    """The endpoint and the prompt part of the body for ``item``."""
    if isinstance(item, str):
        return "/completions", {"prompt": item}
    return "/chat/completions", {
        "messages": [{"role": m.role, "content": m.content} for m in item]}


def logprobs_fields(chat: bool, top: int) -> JsonObject:
    """Ask for each generated token's log-probability and the ``top`` most likely."""
    if chat:
        return {"logprobs": True, "top_logprobs": top}
    return {"logprobs": top}


def first_choice(answer: JsonObject) -> JsonObject:
    """The answer's first choice; ``{}`` when there is none (a usage-only chunk)."""
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def answer_text(choice: JsonObject) -> str | None:
    """A non-streamed choice's text (completions) or message content (chat)."""
    message = choice.get("message")
    if isinstance(message, dict):
        content = message.get("content")
        return content if isinstance(content, str) else ("" if content is None else None)
    text = choice.get("text")
    return text if isinstance(text, str) else None


def token_ids(choice: JsonObject) -> list[int] | None:
    """The token ids a choice carries, or None when the server sent none."""
    for key in ("token_ids", "tokens"):
        value = choice.get(key)
        if isinstance(value, list) and value and all(isinstance(i, int) for i in value):
            return value
    return None


def tokens_of(text: str, ids: list[int] | None, count: int = 1) -> list[Token]:
    """``text`` as tokens: one per id (the first carries the text, the others ``""``).

    Without ids, ``count`` tokens of id -1 (the server's own count of generated
    tokens, from ``usage``), the first carrying the text: the boundaries between
    tokens are not known, their number is.
    """
    if ids:
        return [Token(ids[0], text), *(Token(i, "") for i in ids[1:])]
    return [Token(-1, text), *(Token(-1, "") for _ in range(count - 1))]


def usage(answer: JsonObject) -> tuple[int, int]:
    """(prompt tokens, completion tokens) from the answer's ``usage``; 0 when absent."""
    value = answer.get("usage")
    if not isinstance(value, dict):
        return 0, 0
    return as_int(value.get("prompt_tokens")), as_int(value.get("completion_tokens"))


def generated_tokens(answer: JsonObject, stop_strings: Sequence[str]) -> int:
    """Tokens generated, as the local engines count them: the end-of-generation token not.

    llama.cpp's server (recognised by its ``timings``) counts in
    ``usage.completion_tokens`` the end-of-generation token it sampled, whose
    text it does not return; that one is taken off when the answer stopped
    without stop strings. With stop strings its count keeps the stop string's
    tokens, and is returned as it is.
    """
    generated = usage(answer)[1]
    stopped = first_choice(answer).get("finish_reason") == "stop"
    if generated and stopped and not stop_strings and timings(answer) is not None:
        return generated - 1
    return generated


def timings(answer: JsonObject) -> tuple[float, float] | None:
    """(prompt seconds, generation seconds) from llama.cpp's ``timings``; None when absent."""
    value = answer.get("timings")
    if not isinstance(value, dict):
        return None
    prompt_ms, predicted_ms = value.get("prompt_ms"), value.get("predicted_ms")
    if not isinstance(prompt_ms, (int, float)) or not isinstance(predicted_ms, (int, float)):
        return None
    return float(prompt_ms) / 1000, float(predicted_ms) / 1000


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A token the server listed, with its log-probability. ``id`` None = not sent."""

    text: str
    id: int | None
    logprob: float


@dataclass(frozen=True, slots=True)
class Step:
    """One generated token with its log-probability and the most likely alternatives."""

    token: Candidate
    top: tuple[Candidate, ...]


def logprob_steps(choice: JsonObject) -> list[Step] | None:
    """The choice's per-token log-probabilities, in either shape; None when absent."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    steps: list[Step | None] | None
    if isinstance(content, list):
        steps = [_content_step(entry) for entry in content]
    else:
        steps = _legacy_steps(logprobs)
    return None if steps is None or any(s is None for s in steps) else [
        s for s in steps if s is not None]


def _candidate(entry: object) -> Candidate | None:
    if not isinstance(entry, dict):
        return None
    text, value = entry.get("token"), entry.get("logprob")
    if not isinstance(text, str) or not isinstance(value, (int, float)):
        return None
    token_id = entry.get("id")
    return Candidate(text, token_id if isinstance(token_id, int) else None, float(value))


def _content_step(entry: object) -> Step | None:
    token = _candidate(entry)
    if token is None or not isinstance(entry, dict):
        return None
    top = entry.get("top_logprobs")
    candidates = [_candidate(c) for c in top] if isinstance(top, list) else []
    return Step(token, tuple(c for c in candidates if c is not None))


def _legacy_steps(logprobs: JsonObject) -> list[Step | None] | None:
    texts, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    tops = logprobs.get("top_logprobs")
    if not isinstance(texts, list) or not isinstance(values, list):
        return None
    tops = tops if isinstance(tops, list) else [None] * len(texts)
    steps: list[Step | None] = []
    for text, value, top in zip(texts, values, tops, strict=False):
        if not isinstance(text, str) or not isinstance(value, (int, float)):
            steps.append(None)
            continue
        pairs = top.items() if isinstance(top, dict) else ()
        steps.append(Step(Candidate(text, None, float(value)), tuple(
            Candidate(str(t), None, float(v)) for t, v in pairs if isinstance(v, (int, float)))))
    return steps


def grammar_literal(text: str) -> str:
    """A GBNF grammar that accepts exactly ``text``."""
    return "root ::= " + json.dumps(text, ensure_ascii=False)


def is_prompt_error(exc: HttpStatusError) -> bool:
    """True when the server refused this one request (4xx) rather than being unusable.

    401/403 (credentials), 404 (wrong URL or model) and 429 (overload, already
    retried) say nothing about the prompt.
    """
    return 400 <= exc.status < 500 and exc.status not in (401, 403, 404, 429)


def prompt_error(exc: HttpStatusError, index: int, *, label: str = "") -> PromptError:
    """The `PromptError` for a refused request: too long, or the server's message."""
    if any(word in exc.detail.lower() for word in _CONTEXT_WORDS):
        code = "label_too_long" if label else "prompt_too_long"
        what = f"prompt with label {label!r}" if label else "prompt"
        return PromptError(code, f"{what} does not fit the context: {exc.message}", index=index)
    return PromptError("engine_error", f"HTTP {exc.status}: {exc.message}", index=index)
