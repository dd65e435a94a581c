"""An input file read as one batch: its model, its parameters, and what is wrong with it.

A batch is one inferq job, and a job runs one model with one set of options. So
every line must name the same ``model`` and carry the same parameters; a line that
does not, or that is not a request of the batch's endpoint, is reported with its
line number and the batch fails in validation (as OpenAI's does for mixed models).
A line that asks for something inferq cannot honour (``logprobs``, ``tools``, ...)
is refused on its own: it becomes a line of the error file with the code
``unsupported_parameter``, and the rest of the batch runs. Nothing is ever silently
ignored.

Body parameters honoured: ``max_tokens`` / ``max_completion_tokens``,
``temperature``, ``top_p``, ``stop``, ``seed``, ``n`` (1 only), ``stream`` (false
only), ``logprobs`` (false only), ``user`` (an identifier, kept by nobody); the
inferq extension ``labels`` (a list of strings) makes the batch a classify job whose
output lines carry the winning label as content and every label's probability in
``label_probs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from inference import GenerateOptions

MAX_ERRORS = 50  #: errors reported for one file; the rest are counted
CONTENT = {"/v1/completions": "prompt", "/v1/chat/completions": "messages"}
#: Body keys that map onto inferq options, and how.
_OPTION_KEYS = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens",
                "temperature": "temperature", "top_p": "top_p", "stop": "stop_strings",
                "seed": "seed", "labels": "labels"}
#: Body keys accepted when they ask for what inferq does anyway.
_NEUTRAL = {"n": 1, "stream": False, "logprobs": False}
_IGNORED = {"model", "user"}


@dataclass(slots=True)
class Plan:
    """What a batch file asks for: model and options, or the errors that stop it."""

    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    lines: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    more_errors: int = 0
    #: custom_id -> the error of a line refused on its own (an error line, not a failure
    #: of the whole batch)
    refused: dict[str, dict[str, str]] = field(default_factory=dict)

    def refuse(self, request: dict[str, Any], code: str, message: str) -> None:
        self.refused[str(request.get("custom_id"))] = {"code": code, "message": message}

    def error(self, line: int | None, code: str, message: str, param: str | None = None
              ) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "line": line, "message": message,
                                "param": param})
        else:
            self.more_errors += 1

    @property
    def op(self) -> str:
        return "classify" if self.options.get("labels") else "generate"

    def generate_options(self) -> GenerateOptions:
        return GenerateOptions(**self.options)


def plan(path: Path, endpoint: str, *, max_line_bytes: int = 8 * 2**20) -> Plan:
    """Read ``path`` line by line (never whole) as requests to ``endpoint``; a line
    over ``max_line_bytes`` is an error, skipped without being held."""
    result = Plan()
    first_options: tuple[int, dict[str, Any]] | None = None
    ids: set[str] = set()
    with open(path, "rb") as f:
        for number, raw in _lines(f, max_line_bytes):
            if raw is None:
                result.lines += 1
                result.error(number, "line_too_long", f"the line is over {max_line_bytes:,} "
                             "bytes, the longest request inferq reads")
                continue
            if not raw.strip():
                continue
            result.lines += 1
            request = _request(result, number, raw, endpoint, ids)
            if request is None:
                continue
            options = _options(result, number, request)
            if options is None:
                continue
            if first_options is None:
                first_options = (number, options)
            elif options != first_options[1]:
                key = sorted(k for k in set(options) | set(first_options[1])
                             if options.get(k) != first_options[1].get(k))[0]
                result.error(number, "mixed_parameters",
                             f"{key} is {options.get(key)!r} where line {first_options[0]} "
                             f"has {first_options[1].get(key)!r}; a batch runs one set of "
                             "parameters: split the file by parameters", param=f"body.{key}")
    if result.lines == 0:
        result.error(None, "empty_file", "the input file holds no requests")
    if first_options is not None:
        result.options = _translate(first_options[1])
        try:
            GenerateOptions(**result.options)
        except (TypeError, ValueError) as exc:
            result.error(first_options[0], "invalid_parameter", str(exc))
    return result


def _lines(f: IO[bytes], max_len: int) -> Iterator[tuple[int, bytes | None]]:
    """Each line's 1-based number and bytes; None for a line over ``max_len`` bytes,
    read past in pieces."""
    number = 0
    while line := f.readline(max_len + 1):
        number += 1
        if len(line) <= max_len or line.endswith(b"\n"):
            yield number, line
            continue
        while line and not line.endswith(b"\n"):
            line = f.readline(max_len + 1)
        yield number, None


def _request(result: Plan, number: int, raw: bytes, endpoint: str, ids: set[str]
             ) -> dict[str, Any] | None:
    try:
        request = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        result.error(number, "invalid_json", f"not a JSON object: {exc}")
        return None
    if not isinstance(request, dict):
        result.error(number, "invalid_json", "not a JSON object")
        return None
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        result.error(number, "missing_custom_id", "custom_id must be a non-empty string",
                     "custom_id")
    elif custom_id in ids:
        result.error(number, "duplicate_custom_id",
                     f"custom_id {custom_id!r} appears earlier in the file", "custom_id")
    else:
        ids.add(custom_id)
    if request.get("method", "POST") != "POST":
        result.error(number, "invalid_method", "method must be POST", "method")
    if request.get("url") != endpoint:
        result.error(number, "invalid_url", f"url is {request.get('url')!r}; this batch's "
                     f"endpoint is {endpoint}", "url")
        return None
    body = request.get("body")
    if not isinstance(body, dict):
        result.error(number, "invalid_body", "body must be a JSON object", "body")
        return None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        result.error(number, "missing_model", "body.model must name a model", "body.model")
        return None
    if not result.model:
        result.model = model
    elif model != result.model:
        result.error(number, "mismatched_model", f"model {model!r} differs from the "
                     f"file's first, {result.model!r}: a batch runs one model",
                     "body.model")
    return request


def _options(result: Plan, number: int, request: dict[str, Any]) -> dict[str, Any] | None:
    """The line's option values as given; None, the line refused, if it asks for
    something inferq cannot honour."""
    options: dict[str, Any] = {}
    for key, value in request["body"].items():
        if key in _IGNORED or key in CONTENT.values():
            continue
        if key in _NEUTRAL:
            if value is not None and value != _NEUTRAL[key]:
                result.refuse(request, "unsupported_parameter", f"body.{key}={value!r} is "
                              f"not supported; inferq answers {key}={_NEUTRAL[key]!r}")
                return None
            continue
        if key not in _OPTION_KEYS:
            result.refuse(request, "unsupported_parameter", f"body.{key} is not supported "
                          "by inferq; supported: " + ", ".join(sorted(_OPTION_KEYS)))
            return None
        if value is not None:
            options[key] = value
    return options


def _translate(body_options: dict[str, Any]) -> dict[str, Any]:
    """Body parameters as `GenerateOptions` fields."""
    out: dict[str, Any] = {}
    for key, value in body_options.items():
        name = _OPTION_KEYS[key]
        if name == "stop_strings" and isinstance(value, str):
            value = [value]
        out[name] = value
    return out
