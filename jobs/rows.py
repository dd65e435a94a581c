"""One input row of a job, as readers produce it and chunks carry it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from inference import Message

#: Stable codes of rows that cannot run. Readers set the first group; the
#: engines' PromptError codes (prompt_too_long, ...) join them at execution.
ROW_ERROR_CODES = (
    "missing_prompt",    # neither prompt nor messages
    "empty_prompt",      # prompt is "" (or messages hold no content)
    "invalid_type",      # prompt is not a string, messages not a list of role/content
    "invalid_utf8",      # bytes that are not UTF-8
    "prompt_too_large",  # over the per-prompt byte limit
    "unsupported_payload",  # the chunk's input came in a payload version this worker lacks
    "unsupported_parameter",  # a request body asks for what inferq cannot honour
    "invalid_parameter",   # a request body's parameter has a value inferq refuses
    "mismatched_model",    # a request names another model than the job's
)

#: The version of the chunk-input payload this inferq writes (`encode_chunk`).
#: 1: a bare list of positional rows (before versioning); 2: the envelope below;
#: 3: rows also carry their own options and model (written only for chunks that have
#: such rows, so workers that read version 2 keep serving every other job).
PAYLOAD_VERSION = 3
PAYLOAD_VERSIONS = (1, 2, 3)


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRow:
    """A row: its 0-based position, its custom id, and a prompt or chat messages.

    A row that cannot run carries ``error_code`` and ``error_message`` instead
    and becomes an error row in the results; it never disappears.
    """

    index: int
    custom_id: str
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    error_code: str | None = None
    error_message: str | None = None
    expected: str | None = None  #: the labelled answer, for evaluation datasets
    #: `GenerateOptions` fields this row sets for itself (a request body's ``max_tokens``,
    #: ``temperature``, ``labels``...), over the job's options; None = the job's options.
    options: Mapping[str, Any] | None = None
    model: str | None = None     #: the model the row's request named; None = not named

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def to_json(self) -> list[Any]:
        """A compact JSON-able form for chunk payloads."""
        messages = [[m.role, m.content] for m in self.messages] if self.messages else None
        data = [self.index, self.custom_id, self.prompt, messages, self.error_code,
                self.error_message, self.expected]
        if self.has_request_fields:
            data += [dict(self.options) if self.options else None, self.model]
        return data

    @property
    def has_request_fields(self) -> bool:
        """True when the row carries its own options or model (payload version 3)."""
        return bool(self.options) or self.model is not None

    @classmethod
    def from_json(cls, data: list[Any]) -> InputRow:
        index, custom_id, prompt, messages, code, message, expected = data[:7]
        options, model = data[7:9] if len(data) >= 9 else (None, None)
        return cls(index=index, custom_id=custom_id, prompt=prompt,
                   messages=tuple(Message(r, c) for r, c in messages) if messages else None,
                   error_code=code, error_message=message, expected=expected,
                   options=options or None, model=model)


def with_expected(row: InputRow, value: object) -> InputRow:
    """``row`` carrying a dataset's expected answer (numbers become their text)."""
    if value is None:
        return row
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return replace(row, expected=None)
    return replace(row, expected=str(value))


def encode_chunk(rows: Sequence[InputRow]) -> dict[str, Any]:
    """A chunk's input rows as a JSON-able payload.

    The envelope ``{"version", "index", "custom_id", "rows"}`` keeps each row's
    identity outside the versioned body, so a worker that does not know the body's
    version can still answer every row with an error row.
    """
    version = 3 if any(r.has_request_fields for r in rows) else 2
    return {"version": version, "index": [r.index for r in rows],
            "custom_id": [r.custom_id for r in rows], "rows": [r.to_json() for r in rows]}


def decode_chunk(payload: object) -> list[InputRow]:
    """The rows of a chunk payload; a version this worker does not know gives one
    ``unsupported_payload`` error row per row (or `ValueError` when not even the
    rows' identities can be read)."""
    if isinstance(payload, list):  # version 1: written by an inferq before versioning
        return [InputRow.from_json(r) for r in payload]
    if not isinstance(payload, dict) or not isinstance(payload.get("index"), list) \
            or not isinstance(payload.get("custom_id"), list):
        raise ValueError(f"chunk payload is not an inferq chunk: {str(payload)[:100]!r}")
    version = payload.get("version")
    if version in PAYLOAD_VERSIONS:
        return [InputRow.from_json(r) for r in payload["rows"]]
    message = (f"chunk payload version {version!r} is unknown to this worker (it reads "
               f"versions {', '.join(map(str, PAYLOAD_VERSIONS))}); upgrade inferq on "
               f"this worker, or submit with the inferq version the workers run")
    return [InputRow(index=index, custom_id=str(custom_id), error_code="unsupported_payload",
                     error_message=message)
            for index, custom_id in zip(payload["index"], payload["custom_id"], strict=True)]
