"""How an input's fields become a row: the prompt template, system message, id and
expected columns (``inferq submit --template/--system/--id-column/--expected-column``
and the same keys of a suite file).

    InputMapping(template="Review: {text}\\nSentiment:", system="Answer in one word.",
                 id_column="id", expected_column="sentiment")

A template names the row's fields in braces, looked up literally (``{review text}``
is the column "review text"; no attribute, index, conversion or format spec, so a
template is never code); ``{{`` and ``}}`` are literal braces. A mapping is checked
when built (`InvalidJobSpec` naming the mistake); a field that a table's header lacks
rejects the file (`check_columns`); a field that one JSON line lacks, or that is null,
makes that row an error row naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from inference import Message
from jobs import _formats as fm
from jobs.errors import InputFileError, InvalidJobSpec
from jobs.rows import InputRow

#: The one field of a text file's rows (a line), for templates over text input.
TEXT_FIELD = "text"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed prompt template: literal text and field names, in order."""

    source: str
    pieces: tuple[tuple[str, str | None], ...]  #: (literal text, field after it or None)

    @classmethod
    def parse(cls, source: str) -> Template:
        """The template; `InvalidJobSpec` ("template") for unbalanced braces, an empty
        field, a conversion or a format spec."""
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise InvalidJobSpec("template", f"{source!r}: {exc}; write a literal brace "
                                 "as {{ or }}") from exc
        pieces: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if name is not None:
                if not name.strip():
                    raise InvalidJobSpec("template", f"{source!r}: {{}} needs a field name, "
                                         "e.g. {text}; a literal brace is {{ or }}")
                if conversion or spec:
                    shown = name + (f"!{conversion}" if conversion else "") + (
                        f":{spec}" if spec else "")
                    raise InvalidJobSpec("template", f"{source!r}: {{{shown}}} has a "
                                         f"conversion or format spec; write {{{name}}}")
            pieces.append((literal, name))
        if not any(name for _, name in pieces):
            raise InvalidJobSpec("template", f"{source!r} names no field; name one in "
                                 "braces, e.g. 'Review: {text}'")
        return cls(source, tuple(pieces))

    @property
    def fields(self) -> list[str]:
        """The fields the template names, each once, in order."""
        return list(dict.fromkeys(name for _, name in self.pieces if name is not None))

    def render(self, record: Mapping[str, Any]) -> str | tuple[str, str]:
        """The prompt, or the (code, message) of the error row it becomes."""
        out: list[str] = []
        for literal, name in self.pieces:
            out.append(literal)
            if name is None:
                continue
            if name not in record:
                fields = ", ".join(map(repr, record)) or "none"
                return ("missing_prompt", f"template field {name!r} is missing from the "
                        f"row (its fields: {fields})")
            text = field_text(record[name])
            if text is None:
                return ("missing_prompt", f"template field {name!r} is null")
            if isinstance(text, tuple):
                return ("invalid_utf8", f"template field {name!r} {text[0]}")
            out.append(text)
        return "".join(out)


def field_text(value: object) -> str | tuple[str] | None:
    """A field's value as template text: strings as they are, numbers and booleans as
    JSON writes them, arrays and objects as JSON; None for null; (problem,) for bytes
    that are not UTF-8."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as e:
            return (f"holds byte 0x{value[e.start]:02x} at offset {e.start}, not UTF-8",)
    return str(value)  # dates, decimals: their usual text


def record_row(index: int, custom_id: str, record: Mapping[str, Any],
               template: Template) -> InputRow:
    """The row a template makes of a record's fields (an error row naming a missing,
    null or undecodable field, or an empty prompt)."""
    text = template.render(record)
    if isinstance(text, tuple):
        return fm.error_row(index, custom_id, *text)
    return fm.prompt_row(index, custom_id, text)


@dataclass(frozen=True, slots=True, kw_only=True)
class InputMapping:
    """How a row's fields become its prompt, id and expected answer."""

    template: str | None = None         #: None = the row's prompt or messages field
    system: str | None = None           #: None = no system message; else rows become chats
    id_column: str | None = None        #: None = "custom_id", else "id", else the row index
    expected_column: str | None = None  #: None = "expected" where the input has it

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidJobSpec(f.name, f"{value!r} must be a non-empty string")
        if self.template is not None:
            Template.parse(self.template)

    @property
    def parsed(self) -> Template | None:
        return Template.parse(self.template) if self.template is not None else None

    @property
    def is_default(self) -> bool:
        return self == InputMapping()

    def to_dict(self) -> dict[str, str]:
        """The options that are set, for ``spec.json`` and suite records."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: object) -> InputMapping:
        """A mapping from `to_dict`'s form (None or {} = the default); `InvalidJobSpec`
        naming an unknown key or a bad value."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidJobSpec("mapping", f"expected an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidJobSpec(unknown[0], f"unknown input option; known: "
                                 f"{', '.join(sorted(known))}")
        return cls(**data)

    def id_name(self, names: Sequence[str]) -> str | None:
        """The id column among a table's ``names`` (None = the row index)."""
        if self.id_column is not None:
            return self.id_column
        return "custom_id" if "custom_id" in names else "id" if "id" in names else None

    def expected_name(self, names: Sequence[str]) -> str | None:
        """The expected-answer column among ``names`` (None = no answers)."""
        if self.expected_column is not None:
            return self.expected_column
        return "expected" if "expected" in names else None

    def check_columns(self, path: str, names: Sequence[str]) -> None:
        """`InputFileError` unless a table with columns ``names`` has every column the
        mapping names, once each."""
        wanted = [*(self.parsed.fields if self.parsed else ()),
                  *(c for c in (self.id_column, self.expected_column) if c is not None)]
        columns = ", ".join(map(repr, names))
        for name in wanted:
            if name not in names:
                what = "template field" if name not in (self.id_column,
                                                        self.expected_column) \
                    else "--id-column" if name == self.id_column else "--expected-column"
                raise InputFileError(path, f"{what} {name!r} is not a column; the columns "
                                     f"are {columns}")
            if list(names).count(name) > 1:
                raise InputFileError(path, f"column {name!r} appears {list(names).count(name)}"
                                     " times; keep one")

    def check_text(self, path: str) -> None:
        """`InputFileError` unless the mapping fits a text file (one field, the line)."""
        for option, value in (("--id-column", self.id_column),
                              ("--expected-column", self.expected_column)):
            if value is not None:
                raise InputFileError(path, f"{option} {value!r}: a text file has no columns "
                                     "(one prompt per line); use JSONL, CSV or Parquet")
        parsed = self.parsed
        if parsed is not None and parsed.fields != [TEXT_FIELD]:
            other = next(f for f in parsed.fields if f != TEXT_FIELD)
            raise InputFileError(path, f"template field {other!r}: a text file's rows have "
                                 f"one field, {{{TEXT_FIELD}}} (the line)")

    def content_free(self, filler: str = "N/A") -> dict[str, Any] | None:
        """Contextual calibration's content-free input (jobs/calibrate.py): the template
        with every field ``filler``, as the system message's chat when there is one;
        None when the mapping has neither (each row's chat is used then)."""
        parsed = self.parsed
        if parsed is None and self.system is None:
            return None
        text = parsed.render(dict.fromkeys(parsed.fields, filler)) if parsed else filler
        assert isinstance(text, str)  # every field is there
        if self.system is None:
            return {"prompt": text}
        return {"messages": [{"role": "system", "content": self.system},
                             {"role": "user", "content": text}]}

    def with_system(self, row: InputRow) -> InputRow:
        """``row`` as a chat with the system message, if the mapping has one: a prompt
        becomes the user message; messages without a system message get it first (a
        row's own system message is kept as it is)."""
        if self.system is None or not row.ok:
            return row
        system = Message("system", self.system)
        if row.prompt is not None:
            return replace(row, prompt=None, messages=(system, Message("user", row.prompt)))
        messages = row.messages or ()
        if messages and messages[0].role == "system":
            return row
        return replace(row, messages=(system, *messages))


__all__ = ["TEXT_FIELD", "InputMapping", "Template", "field_text", "record_row"]
