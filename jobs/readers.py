"""Streaming readers of job input files: JSONL, CSV, Parquet and plain text.

`read_input` yields one `InputRow` per row, in file order, holding one line
(or one Parquet batch) in memory at a time. Problems come in two kinds:

* the file cannot run as a whole (missing, unreadable, not its format, a line
  that is not a JSON object, a repeated custom_id, too many rows): the iterator
  raises `InputFileError` or `DuplicateCustomId`, naming the file and the line,
  so the caller rejects the job before queuing anything;
* one row cannot run (no prompt, a wrong type, bytes that are not UTF-8, a
  prompt over the limit): the row comes with ``error_code`` set (one of
  `jobs.rows.ROW_ERROR_CODES`) and becomes an error row in the results.

An `InputMapping` builds prompts from other fields (a template), makes rows chats
(a system message) and names the id and expected-answer columns; a template field
that a CSV or Parquet header lacks is of the first kind, one that a JSON line lacks
of the second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from jobs import _formats as fm
from jobs import _tables as tables
from jobs import mapping as tm
from jobs.errors import DuplicateCustomId, InputFileError
from jobs.mapping import TEXT_FIELD, InputMapping, Template
from jobs.rows import InputRow, with_expected

FORMATS = ("jsonl", "csv", "parquet", "text")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text"}
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True, kw_only=True)
class InputLimits:
    """Bounds on one input file, checked as it streams."""

    max_rows: int = 10_000_000          #: more rows -> InputFileError
    max_prompt_bytes: int = 1_000_000   #: a longer prompt -> error row "prompt_too_large"
    #: (a prompt's size is its UTF-8 bytes; for messages, their contents' summed)
    max_total_bytes: int = 10 * 2**30   #: a larger file -> InputFileError before reading

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"InputLimits.{f.name} must be positive, "
                                 f"got {getattr(self, f.name)!r}")

    @property
    def max_line_bytes(self) -> int:
        """The longest JSONL line or CSV field read whole: room for a prompt at the
        limit written with JSON escapes (up to 6 bytes per byte), plus 1 MiB."""
        return 6 * self.max_prompt_bytes + 2**20


def detect_format(path: str) -> str:
    """The format a file's suffix names: one of `FORMATS`."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    what = f"suffix {suffix!r}" if suffix else "no suffix"
    raise InputFileError(path, f"{what} is not an input format; accepted suffixes: "
                         f"{', '.join(sorted(SUFFIXES))}")


def read_input(path: str, fmt: str | None = None, *, limits: InputLimits = InputLimits(),
               mapping: InputMapping | None = None) -> Iterator[InputRow]:
    """The rows of an input file, streamed in file order; ``fmt`` None = by suffix;
    ``mapping`` None = rows as the file gives them.

    The file's existence, kind and size are checked now; everything else as the
    rows stream. Raises `InputFileError` and `DuplicateCustomId`, never yields
    them: a caller that reads to the end knows the whole file is usable.
    """
    fmt = detect_format(path) if fmt is None else fmt
    if fmt not in _READERS:
        raise InputFileError(path, f"format {fmt!r} is unknown; expected one of "
                             f"{', '.join(FORMATS)}")
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise InputFileError(path, "no such file") from e
    except OSError as e:
        raise InputFileError(path, f"cannot read: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(path, "is a directory, expected an input file")
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(path, "is not a regular file")
    if st.st_size > limits.max_total_bytes:
        raise InputFileError(path, f"file is {st.st_size:,} bytes; the limit is "
                             f"{limits.max_total_bytes:,} bytes a job: split the file into "
                             "several jobs")
    mapping = mapping or InputMapping()
    rows = _READERS[fmt](path, limits, mapping)
    if mapping.system is not None:
        rows = (mapping.with_system(row) for row in rows)
    return _checked(path, rows, limits)


def _checked(path: str, rows: Iterator[InputRow], limits: InputLimits) -> Iterator[InputRow]:
    """Rows with the job-wide rules applied: row count, prompt size, unique ids."""
    seen = _IdSet()
    try:
        for row in rows:
            if row.index >= limits.max_rows:
                raise InputFileError(path, tables.too_many_rows(limits))
            if not seen.add(_id_hash(row.custom_id)):
                raise DuplicateCustomId(path, row.custom_id, row.index)
            yield _sized(row, limits.max_prompt_bytes) if row.ok else row
    except OSError as e:
        raise InputFileError(path, f"cannot read: {e.strerror or e}") from e


def _sized(row: InputRow, limit: int) -> InputRow:
    """The row, or an error row when its text is over ``limit`` UTF-8 bytes or not UTF-8."""
    texts = [row.prompt] if row.prompt is not None else [m.content for m in row.messages or ()]
    size = 0
    for text in texts:
        if text.isascii():
            size += len(text)
            continue
        try:
            size += len(text.encode())
        except UnicodeEncodeError as e:
            return fm.error_row(row.index, row.custom_id, "invalid_utf8",
                                f"prompt holds {text[e.start]!r}, a lone surrogate that "
                                "UTF-8 cannot encode")
    if size > limit:
        return fm.error_row(row.index, row.custom_id, "prompt_too_large",
                            f"prompt is {size:,} bytes; the limit is {limit:,} bytes")
    return row


def _id_hash(custom_id: str) -> int:
    digest = hashlib.blake2b(custom_id.encode(errors="surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class _IdSet:
    """A set of nonzero 64-bit hashes: an open-addressing table of 8-byte slots.

    16 MiB for a million ids, where a Python set of ints takes over 60 MiB. It grows
    when 80% full (linear probing copes with that on random 64-bit hashes), so ten
    million ids take 128 MiB, 192 MiB while growing: under 300 MB for a whole submit.
    """

    def __init__(self) -> None:
        self._slots = array("Q", [0]) * 1024
        self._count = 0

    def add(self, value: int) -> bool:
        """Adds the hash; False when it was already there."""
        slots = self._slots
        mask = len(slots) - 1
        i = value & mask
        while (current := slots[i]) != 0:
            if current == value:
                return False
            i = (i + 1) & mask
        slots[i] = value
        self._count += 1
        if self._count * 5 > mask * 4:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = slots = array("Q", [0]) * (2 * len(old))
        mask = len(slots) - 1
        for value in old:
            if value:
                i = value & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = value


def _lines(f: IO[bytes], max_len: int) -> Iterator[tuple[int, bytes, int]]:
    """Each line's 1-based number, bytes without the newline, and length.

    A line longer than ``max_len`` is skipped to its end, never held whole: its
    bytes are only its first ``max_len`` bytes and its length tells.
    """
    number = 0
    while line := f.readline(max_len + 2):
        number += 1
        if number == 1:
            line = line.removeprefix(_BOM)
        size = len(line)
        if not line.endswith(b"\n") and size >= max_len + 1:
            while chunk := f.readline(2**20):
                size += len(chunk)
                if chunk.endswith(b"\n"):
                    size -= 2 if chunk.endswith(b"\r\n") else 1
                    break
            yield number, line[:max_len], size
        else:
            body = line.removesuffix(b"\n").removesuffix(b"\r")
            yield number, body, len(body)


def _read_jsonl(path: str, limits: InputLimits, mapping: InputMapping) -> Iterator[InputRow]:
    template = mapping.parsed
    index = 0
    with tables.open_input(path, "rb") as f:
        for number, line, size in _lines(f, limits.max_line_bytes):
            if size > limits.max_line_bytes:
                yield fm.error_row(index, fm.salvage_id(line, index), "prompt_too_large",
                                   f"line is {size:,} bytes, more than any prompt within "
                                   f"the limit of {limits.max_prompt_bytes:,} bytes")
            elif not line.strip():
                continue
            else:
                yield _jsonl_row(path, number, index, line, mapping, template)
            index += 1


def _jsonl_row(path: str, number: int, index: int, line: bytes, mapping: InputMapping,
               template: Template | None) -> InputRow:
    try:
        text = line.decode()
    except UnicodeDecodeError as e:
        return fm.error_row(index, fm.salvage_id(line, index), "invalid_utf8",
                            f"byte 0x{line[e.start]:02x} at offset {e.start} of line "
                            f"{number} is not UTF-8")
    obj = fm.parse_object(text, path, number)
    if template is None and not {"body", "prompt", "messages"} & obj.keys():
        return with_expected(fm.error_row(
            index, _object_id(obj, index, mapping, path, number), "missing_prompt",
            f"the row has neither prompt nor messages (its fields: "
            f"{', '.join(map(repr, obj)) or 'none'}); --template builds the prompt from "
            "fields, e.g. --template 'Review: {text}'"), _object_expected(obj, mapping))
    if template is None and mapping.id_column is None and mapping.expected_column is None:
        return fm.object_row(index, obj, path, number)
    cid = _object_id(obj, index, mapping, path, number)
    if template is None:
        row = dataclasses.replace(fm.object_row(index, obj, path, number), custom_id=cid,
                                  expected=None)
    else:
        row = tm.record_row(index, cid, obj, template)
    return with_expected(row, _object_expected(obj, mapping))


def _object_id(obj: dict[str, Any], index: int, mapping: InputMapping, path: str,
               line: int) -> str:
    name = mapping.id_column
    value = obj.get(name) if name is not None else obj.get("custom_id", obj.get("id"))
    return fm.custom_id(value, index, path, line)


def _object_expected(obj: dict[str, Any], mapping: InputMapping) -> object:
    return obj.get(mapping.expected_column or "expected")


def _read_text(path: str, limits: InputLimits, mapping: InputMapping) -> Iterator[InputRow]:
    mapping.check_text(path)
    template = mapping.parsed
    with tables.open_input(path, "rb") as f:
        for number, line, size in _lines(f, limits.max_prompt_bytes):
            index = number - 1
            if size > limits.max_prompt_bytes:
                yield fm.error_row(index, str(index), "prompt_too_large",
                                   f"prompt is {size:,} bytes; the limit is "
                                   f"{limits.max_prompt_bytes:,} bytes")
                continue
            try:
                text = line.decode()
            except UnicodeDecodeError as e:
                yield fm.error_row(index, str(index), "invalid_utf8",
                                   f"byte 0x{line[e.start]:02x} at offset {e.start} is not UTF-8")
                continue
            if template is None:
                yield fm.prompt_row(index, str(index), text)
            else:
                yield tm.record_row(index, str(index), {TEXT_FIELD: text}, template)


_READERS: dict[str, Callable[[str, InputLimits, InputMapping], Iterator[InputRow]]] = {
    "jsonl": _read_jsonl, "text": _read_text, "csv": tables.read_csv,
    "parquet": tables.read_parquet,
}

__all__ = ["FORMATS", "InputLimits", "detect_format", "read_input"]
