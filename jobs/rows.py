"""One input row of a job, as readers produce it and chunks carry it."""

from __future__ import annotations

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
)


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

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def to_json(self) -> list[Any]:
        """A compact JSON-able form for chunk payloads."""
        messages = [[m.role, m.content] for m in self.messages] if self.messages else None
        return [self.index, self.custom_id, self.prompt, messages, self.error_code,
                self.error_message, self.expected]

    @classmethod
    def from_json(cls, data: list[Any]) -> InputRow:
        index, custom_id, prompt, messages, code, message, expected = data
        return cls(index=index, custom_id=custom_id, prompt=prompt,
                   messages=tuple(Message(r, c) for r, c in messages) if messages else None,
                   error_code=code, error_message=message, expected=expected)


def with_expected(row: InputRow, value: object) -> InputRow:
    """``row`` carrying a dataset's expected answer (numbers become their text)."""
    if value is None:
        return row
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return replace(row, expected=None)
    return replace(row, expected=str(value))
