"""How decoded values become rows, for the readers of `jobs.readers`.

JSON request objects, messages, custom ids, CSV records and Parquet columns. A
value that makes the whole file unusable (a line that is not a JSON object, an
unreliable custom_id, an endpoint the job cannot run, a column of the wrong
type) raises `InputFileError`; a value that only makes its own row unusable
gives an error row with a code of `jobs.rows.ROW_ERROR_CODES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

from inference import GenerateOptions, Message
from jobs.errors import InputFileError
from jobs.rows import InputRow, with_expected
from jobs.spec import CALIBRATIONS

#: OpenAI Batch API endpoints a job can run, and the body key each expects.
URLS = {"/v1/completions": "prompt", "/v1/chat/completions": "messages"}

#: Request body parameters a row honours, and the `GenerateOptions` field each sets.
#: ``top_k``, ``min_p`` and ``repeat_penalty`` are llama.cpp's extensions; ``labels``
#: is inferq's (it makes the row a classification over those labels).
BODY_OPTIONS = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens",
                "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                "min_p": "min_p", "repeat_penalty": "repeat_penalty", "stop": "stop_strings",
                "seed": "seed", "labels": "labels", "logprobs": "logprobs",
                "top_logprobs": "top_logprobs"}
#: Body parameters accepted when they ask for what inferq does anyway.
BODY_NEUTRAL: dict[str, Any] = {"n": 1, "stream": False, "frequency_penalty": 0,
                                "presence_penalty": 0}
#: Body parameters that change nothing: the row's content, its model (checked against
#: the job's when the row runs), and identifiers.
BODY_PASSIVE = {"prompt", "messages", "model", "user"}

#: How a value becomes a row: (index, custom id, value) -> InputRow.
ToRow = Callable[[int, str, Any], InputRow]

_KINDS = {bool: "bool", int: "int", float: "float", str: "string", list: "array",
          dict: "object", type(None): "null"}

#: A custom id near the start of a line too long to parse (see `salvage_id`).
_ID_PATTERN = re.compile(rb'"(?:custom_id|id)"\s*:\s*("(?:[^"\\\r\n]|\\.)*"|-?\d+)')


def kind(value: object) -> str:
    """The JSON name of a value's type: "string", "int", "array", "object", ..."""
    return _KINDS.get(type(value), type(value).__name__)


def error_row(index: int, custom_id: str, code: str, message: str) -> InputRow:
    return InputRow(index=index, custom_id=custom_id, error_code=code, error_message=message)


def prompt_row(index: int, custom_id: str, value: object) -> InputRow:
    """A row from a prompt value: a non-empty string, else an error row."""
    if value is None:
        return error_row(index, custom_id, "missing_prompt", "the row has no prompt")
    if not isinstance(value, str):
        return error_row(index, custom_id, "invalid_type",
                         f"prompt is {kind(value)}, expected a string")
    if not value:
        return error_row(index, custom_id, "empty_prompt", "prompt is empty")
    return InputRow(index=index, custom_id=custom_id, prompt=value)


def messages_row(index: int, custom_id: str, value: object) -> InputRow:
    """A row from a messages value: a list of {"role", "content"} objects.

    Content given as OpenAI parts (``[{"type": "text", "text": ...}]``) is
    joined into one string with newlines, as vLLM does.
    """
    if value is None:
        return error_row(index, custom_id, "missing_prompt", "the row has no messages")
    if not isinstance(value, list):
        return error_row(index, custom_id, "invalid_type",
                         f"messages is {kind(value)}, expected an array of "
                         '{"role", "content"} objects')
    messages = []
    for i, item in enumerate(value):
        message = _message(item)
        if isinstance(message, str):
            return error_row(index, custom_id, "invalid_type", f"messages[{i}]{message}")
        messages.append(message)
    if not any(m.content for m in messages):
        what = "messages is an empty array" if not messages else "every message is empty"
        return error_row(index, custom_id, "empty_prompt", what)
    return InputRow(index=index, custom_id=custom_id, messages=tuple(messages))


def _message(item: object) -> Message | str:
    """A Message, or what is wrong with the item (after its ``messages[i]``)."""
    if not isinstance(item, dict):
        return f" is {kind(item)}, expected an object with role and content"
    role, content = item.get("role"), item.get("content")
    if not isinstance(role, str):
        return f".role is {kind(role)}, expected a string"
    if isinstance(content, list):
        texts = []
        for part in content:
            text = part.get("text") if isinstance(part, dict) else None
            if not isinstance(text, str) or part.get("type", "text") != "text":
                return ".content holds a part that is not {\"type\": \"text\", \"text\": string}"
            texts.append(text)
        content = "\n".join(texts)
    if not isinstance(content, str):
        return f".content is {kind(content)}, expected a string or an array of text parts"
    return Message(role, content)


def json_messages_row(index: int, custom_id: str, text: str) -> InputRow:
    """A row from messages given as JSON text (a CSV cell, a Parquet string)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        return error_row(index, custom_id, "invalid_type", f"messages is not JSON: {why}")
    return messages_row(index, custom_id, value)


def parse_object(text: str, path: str, line: int) -> dict[str, Any]:
    """A line's JSON object; `InputFileError` naming the line for anything else."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        hint = ("; the file looks like one JSON array, expected one JSON object per line "
                "(JSON Lines)") if line == 1 and text.lstrip().startswith("[") else ""
        raise InputFileError(path, f"not JSON: {e.msg} at column {e.colno}{hint}",
                             line=line) from e
    except (ValueError, RecursionError) as e:  # a 5,000-digit number, [[[[...]]]]
        raise InputFileError(path, f"not JSON: {e}", line=line) from e
    if not isinstance(value, dict):
        raise InputFileError(path, f"expected a JSON object, got {kind(value)}", line=line)
    return value


def custom_id(value: object, index: int, path: str, line: int | None) -> str:
    """A row's custom id: a string as given, an integer as its digits, absent as the index."""
    if value is None or value == "":
        return str(index)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputFileError(path, f"custom_id is {kind(value)}, expected a string or an "
                             "integer", line=line)
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as e:
            raise InputFileError(path, f"custom_id holds {value[e.start]!r}, a lone surrogate "
                                 "that UTF-8 cannot encode", line=line) from e
    return value


def object_row(index: int, obj: dict[str, Any], path: str, line: int) -> InputRow:
    """A row from a JSONL object: an OpenAI batch request line or a plain line."""
    cid = custom_id(obj.get("custom_id", obj.get("id")), index, path, line)
    return with_expected(_object_content(index, cid, obj, path, line), obj.get("expected"))


def _object_content(index: int, cid: str, obj: dict[str, Any], path: str,
                    line: int) -> InputRow:
    if "body" not in obj:
        row = _content_row(index, cid, obj, expect=None)
        if not row.ok or obj.get("labels") is None:
            return row
        # a plain line's own label set, as a request body's "labels"
        options = body_options({"labels": obj["labels"]})
        if isinstance(options, tuple):
            return error_row(index, cid, *options)
        return replace(row, options=options)
    url = obj.get("url")
    if url is not None and (not isinstance(url, str) or url not in URLS):
        raise InputFileError(path, f"url {url!r} is not supported; a job runs "
                             f"{' or '.join(URLS)}", line=line)
    body = obj["body"]
    if not isinstance(body, dict):
        return error_row(index, cid, "invalid_type", f"body is {kind(body)}, expected an object")
    row = _content_row(index, cid, body, expect=URLS.get(url) if url else None)
    if not row.ok:
        return row
    options = body_options(body)
    if isinstance(options, tuple):
        return error_row(index, cid, *options)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return error_row(index, cid, "invalid_parameter",
                         f"body.model is {kind(model)}, expected a string")
    if not options and model is None:
        return row
    return replace(row, options=options or None, model=model or None)


def body_options(body: dict[str, Any]) -> dict[str, Any] | tuple[str, str]:
    """The `GenerateOptions` fields a request body sets, or the (code, message) of the
    error row it becomes: ``unsupported_parameter`` for a parameter inferq cannot
    honour, ``invalid_parameter`` for a value it refuses. Nothing is silently ignored."""
    options: dict[str, Any] = {}
    for key, value in body.items():
        if key in BODY_PASSIVE or value is None:
            continue
        if key in BODY_NEUTRAL:
            if value != BODY_NEUTRAL[key] or isinstance(value, bool) != isinstance(
                    BODY_NEUTRAL[key], bool):
                return ("unsupported_parameter", f"body.{key}={value!r} is not supported; "
                        f"inferq answers as with {key}={BODY_NEUTRAL[key]!r}")
            continue
        if key == "calibrate":  # inferq's: the job's calibration, checked when the row runs
            if value not in CALIBRATIONS:
                return ("invalid_parameter", f"body.calibrate={value!r}; use one of "
                        f"{', '.join(CALIBRATIONS)}")
            options["calibrate"] = value
            continue
        name = BODY_OPTIONS.get(key)
        if name is None:
            return ("unsupported_parameter", f"body.{key} is not supported by inferq; "
                    "supported: " + ", ".join(sorted([*BODY_OPTIONS, *BODY_NEUTRAL,
                                                      "calibrate"])))
        if name == "stop_strings" and isinstance(value, str):
            value = [value]
        if name == "logprobs" and isinstance(value, int) and not isinstance(value, bool):
            # /v1/completions: logprobs=N asks for the N likeliest alternatives too
            options.setdefault("top_logprobs", value)
            value = True
        if name in options and options[name] != value:
            return ("invalid_parameter", f"body.{key}={value!r} contradicts another "
                    f"parameter setting {name}={options[name]!r}")
        options[name] = value
    problem = check_options(options)
    if problem:
        return ("invalid_parameter", problem)
    return options


def check_options(options: dict[str, Any]) -> str | None:
    """What is wrong with a row's option values, naming the body parameter; None if
    nothing. Types are checked here, ranges by `GenerateOptions` itself."""
    number = (int, float)
    kinds: dict[str, type | tuple[type, ...]] = {
        "max_tokens": int, "top_k": int, "seed": int, "top_logprobs": int, "logprobs": bool,
        "temperature": number, "top_p": number, "min_p": number, "repeat_penalty": number,
        "stop_strings": list, "labels": list}
    options = {k: v for k, v in options.items() if k != "calibrate"}
    for name, value in options.items():
        param = next(k for k, v in BODY_OPTIONS.items() if v == name)
        if isinstance(value, bool) != (kinds[name] is bool) or not isinstance(value, kinds[name]):
            return f"body.{param} is {kind(value)}, expected {_kind_name(kinds[name])}"
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            return f"body.{param} must be a list of strings"
    try:
        GenerateOptions(**options)
    except ValueError as e:
        field, _, rule = str(e).partition(": ")
        params = [k for k, v in BODY_OPTIONS.items() if v == field.split("=")[0]]
        return f"body.{params[0] if params else field}: {rule or e}"
    return None


def _kind_name(t: type | tuple[type, ...]) -> str:
    return {int: "an integer", list: "an array of strings", bool: "true or false"}.get(
        t, "a number") \
        if not isinstance(t, tuple) else "a number"


def _content_row(index: int, cid: str, obj: dict[str, Any], expect: str | None) -> InputRow:
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if prompt is None and messages is None:
        return error_row(index, cid, "missing_prompt", "the row has neither prompt nor messages")
    if prompt is not None and messages is not None:
        return error_row(index, cid, "invalid_type", "the row has both prompt and messages; "
                         "give one")
    given = "prompt" if prompt is not None else "messages"
    if expect is not None and given != expect:
        url = next(u for u, key in URLS.items() if key == expect)
        return error_row(index, cid, "invalid_type", f"body has {given}; {url} expects {expect}")
    if prompt is not None:
        return prompt_row(index, cid, prompt)
    return messages_row(index, cid, messages)


def salvage_id(head: bytes, index: int) -> str:
    """The custom id of a line that cannot be decoded whole, or the row index.

    For a line that is not UTF-8, the line decoded with replacement characters;
    for a line too long to parse, the first "custom_id" (or "id") in its head.
    """
    try:
        obj = json.loads(head.decode(errors="replace"))
        if isinstance(obj, dict):
            return custom_id(obj.get("custom_id", obj.get("id")), index, "", None)
    except (ValueError, RecursionError, InputFileError):
        pass
    match = _ID_PATTERN.search(head)
    if match is None:
        return str(index)
    try:
        return custom_id(json.loads(match.group(1).decode(errors="replace")), index, "", None)
    except (ValueError, InputFileError):
        return str(index)


def content_column(path: str, names: list[str]) -> str:
    """"prompt" or "messages": the one of them a table has."""
    if "prompt" in names and "messages" in names:
        raise InputFileError(path, "has both a prompt and a messages column; keep one")
    if "prompt" not in names and "messages" not in names:
        raise InputFileError(path, f"has columns {', '.join(map(repr, names))}; expected a "
                             "'prompt' or 'messages' column (and optionally 'custom_id')")
    return "prompt" if "prompt" in names else "messages"


@dataclass(frozen=True, slots=True)
class CsvRow:
    """Turns a CSV record into a row, given the positions of its columns."""

    path: str
    content_name: str
    content: int
    id_column: int | None
    expected_column: int | None = None

    def __call__(self, line: int, index: int, cells: list[str]) -> InputRow:
        row = self._row(line, index, cells)
        column = self.expected_column
        if column is not None and column < len(cells) and cells[column] != "":
            return with_expected(row, cells[column])
        return row

    def _row(self, line: int, index: int, cells: list[str]) -> InputRow:
        column = self.id_column
        raw_id = cells[column] if column is not None and column < len(cells) else ""
        value = cells[self.content] if self.content < len(cells) else None
        if "\x00" in raw_id or (value and "\x00" in value):
            raise InputFileError(self.path, "not CSV: line contains NUL", line=line)
        bad_id = not_utf8(raw_id)
        if bad_id:
            raw_id = raw_id.encode(errors="surrogateescape").decode(errors="replace")
        cid = raw_id or str(index)
        if bad_id or (value is not None and not_utf8(value)):
            return error_row(index, cid, "invalid_utf8",
                             f"line {line} holds bytes that are not UTF-8")
        if value is None:
            return error_row(index, cid, "missing_prompt",
                             f"the row has {len(cells)} cells; the {self.content_name} "
                             f"column is cell {self.content + 1}")
        if self.content_name == "prompt":
            return prompt_row(index, cid, value)
        return json_messages_row(index, cid, value)


def not_utf8(text: str) -> bool:
    """True when text decoded with surrogateescape holds escaped bytes."""
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def parquet_columns(path: str, schema: pa.Schema) -> tuple[str, ToRow, str | None]:
    """The content column, how its values become rows, and the id column (None = absent)."""
    names = schema.names
    content = content_column(path, names)
    t = schema.field(content).type
    if content == "prompt" and not is_text(t):
        raise InputFileError(path, f"column 'prompt' is {t}, expected string")
    if content == "messages" and not (is_text(t) or is_message_list(t)):
        raise InputFileError(path, f"column 'messages' is {t}, expected "
                             "list<struct<role: string, content: string>> or JSON strings")
    to_row = prompt_row if content == "prompt" else \
        json_messages_row if is_text(t) else messages_row
    id_column = "custom_id" if "custom_id" in names else "id" if "id" in names else None
    if id_column is not None:
        t = schema.field(id_column).type
        if not (is_text(t) or pa.types.is_integer(t)):
            raise InputFileError(path, f"column {id_column!r} is {t}, expected string or "
                                 "integer")
    return content, to_row, id_column


def is_text(t: pa.DataType) -> bool:
    """True for Arrow's string types, dictionary-encoded or not."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_string_view(t))


def is_message_list(t: pa.DataType) -> bool:
    """True for list<struct<role: string, content: string, ...>>."""
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return False
    item = t.value_type
    return bool(pa.types.is_struct(item)) and all(
        item.get_field_index(name) >= 0 and is_text(item.field(name).type)
        for name in ("role", "content"))
