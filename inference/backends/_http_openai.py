"""The OpenAI-compatible API's dialect: request bodies, answers, label spans, error kinds.

Servers differ in details; what is sent here works with llama.cpp's server,
llama-cpp-python's server, vLLM and Ollama:

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
"""

from __future__ import annotations

from typing import Any

from inference.backends._http_client import HttpStatusError, JsonObject
from inference.errors import PromptError
from inference.options import GenerateOptions
from inference.types import Token

#: Words that servers use when a prompt does not fit the context.
_CONTEXT_WORDS = ("context length", "context window", "context size", "maximum context",
                  "context_length_exceeded", "exceed_context_size")


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


def greedy_body(prompt: str) -> JsonObject:
    """One greedy token after ``prompt``, no penalties: what classify asks for."""
    return {"prompt": prompt,
            **sampling_body(GenerateOptions(max_tokens=1, temperature=0.0))}


def first_choice(answer: JsonObject) -> JsonObject:
    """The answer's first choice; ``{}`` when there is none (a usage-only chunk)."""
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def token_ids(choice: JsonObject) -> list[int] | None:
    """The token ids a choice carries, or None when the server sent none."""
    for key in ("token_ids", "tokens"):
        value = choice.get(key)
        if isinstance(value, list) and value and all(isinstance(i, int) for i in value):
            return value
    return None


def tokens_of(text: str, ids: list[int] | None) -> list[Token]:
    """``text`` as tokens: the first id carries the text, the others ``""``; no ids: -1."""
    if not ids:
        return [Token(-1, text)]
    return [Token(ids[0], text), *(Token(i, "") for i in ids[1:])]


def usage(answer: JsonObject) -> tuple[int, int]:
    """(prompt tokens, completion tokens) from the answer's ``usage``; 0 when absent."""
    value = answer.get("usage")
    if not isinstance(value, dict):
        return 0, 0
    return as_int(value.get("prompt_tokens")), as_int(value.get("completion_tokens"))


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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


def label_logprob(choice: JsonObject, prompt: str, label: str) -> float | str:
    """log p(label | prompt) from an echo answer for ``prompt + label``, or why not.

    The answer's ``logprobs`` lists the tokens of prompt, label and one generated
    token, each with its log-probability given the tokens before it. The label's
    tokens are those between the prompt's end and the label's end; the sum of
    their log-probabilities is the label's. Returns a reason (a string) when the
    server sent no prompt log-probabilities, or when a token straddles the
    prompt/label boundary (the label has no tokens of its own after this prompt).
    """
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return "the server returned no log-probabilities"
    texts, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if not isinstance(texts, list) or not isinstance(values, list):
        return "the server returned no per-token log-probabilities"
    full = prompt + label
    # Skip a leading BOS token if the server renders it.
    start = 1 if texts and not "".join(map(str, texts)).startswith(full) else 0
    if not "".join(map(str, texts[start:])).startswith(full):
        return ("the server does not echo the prompt's tokens with log-probabilities "
                "(echo + logprobs)")
    total, pos = 0.0, 0
    for text, value in zip(texts[start:], values[start:], strict=False):
        begin, pos = pos, pos + len(str(text))
        if pos <= len(prompt) and begin < len(prompt):
            continue
        if begin >= len(full):
            break
        if begin < len(prompt):
            return f"a token spans the end of the prompt and the start of label {label!r}"
        if pos > len(full):
            return f"a token spans the end of label {label!r} and what follows it"
        if not isinstance(value, (int, float)):
            return f"the server gave no log-probability for a token of label {label!r}"
        total += float(value)
    return total
