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
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import stat
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from jobs import _formats as fm
from jobs.errors import DuplicateCustomId, InputFileError
from jobs.rows import InputRow, with_expected

FORMATS = ("jsonl", "csv", "parquet", "text")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text"}
PARQUET_BATCH_ROWS = 256
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


def read_input(path: str, fmt: str | None = None, *,
               limits: InputLimits = InputLimits()) -> Iterator[InputRow]:
    """The rows of an input file, streamed in file order; ``fmt`` None = by suffix.

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
    return _checked(path, _READERS[fmt](path, limits), limits)


def _checked(path: str, rows: Iterator[InputRow], limits: InputLimits) -> Iterator[InputRow]:
    """Rows with the job-wide rules applied: row count, prompt size, unique ids."""
    seen = _IdSet()
    try:
        for row in rows:
            if row.index >= limits.max_rows:
                raise InputFileError(path, _too_many_rows(limits))
            if not seen.add(_id_hash(row.custom_id)):
                raise DuplicateCustomId(path, row.custom_id, row.index)
            yield _sized(row, limits.max_prompt_bytes) if row.ok else row
    except OSError as e:
        raise InputFileError(path, f"cannot read: {e.strerror or e}") from e


def _too_many_rows(limits: InputLimits) -> str:
    return (f"more than {limits.max_rows:,} rows; the limit is {limits.max_rows:,} "
            "rows a job: split the file into several jobs")


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


def _open(path: str, mode: str, **kwargs: Any) -> IO[Any]:
    try:
        return open(path, mode, **kwargs)
    except OSError as e:
        raise InputFileError(path, f"cannot read: {e.strerror or e}") from e


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


def _read_jsonl(path: str, limits: InputLimits) -> Iterator[InputRow]:
    index = 0
    with _open(path, "rb") as f:
        for number, line, size in _lines(f, limits.max_line_bytes):
            if size > limits.max_line_bytes:
                yield fm.error_row(index, fm.salvage_id(line, index), "prompt_too_large",
                                   f"line is {size:,} bytes, more than any prompt within "
                                   f"the limit of {limits.max_prompt_bytes:,} bytes")
            elif not line.strip():
                continue
            else:
                yield _jsonl_row(path, number, index, line)
            index += 1


def _jsonl_row(path: str, number: int, index: int, line: bytes) -> InputRow:
    try:
        text = line.decode()
    except UnicodeDecodeError as e:
        return fm.error_row(index, fm.salvage_id(line, index), "invalid_utf8",
                            f"byte 0x{line[e.start]:02x} at offset {e.start} of line "
                            f"{number} is not UTF-8")
    return fm.object_row(index, fm.parse_object(text, path, number), path, number)


def _read_text(path: str, limits: InputLimits) -> Iterator[InputRow]:
    with _open(path, "rb") as f:
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
            yield fm.prompt_row(index, str(index), text)


def _read_csv(path: str, limits: InputLimits) -> Iterator[InputRow]:
    # The field size limit is process-wide; it is raised (never lowered) to fit a prompt.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_line_bytes))
    with _open(path, "r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputFileError(path, "is empty; expected a header line with a prompt "
                                     "or messages column")
            names = [name.strip() for name in header]
            content = fm.content_column(path, names)
            for name in {content, "custom_id", "id"} & set(names):
                if names.count(name) > 1:
                    raise InputFileError(path, f"column {name!r} appears "
                                         f"{names.count(name)} times; keep one")
            id_name = "custom_id" if "custom_id" in names else "id" if "id" in names else None
            to_row = fm.CsvRow(path, content, names.index(content),
                               names.index(id_name) if id_name else None,
                               names.index("expected") if "expected" in names else None)
            index = 0
            for cells in reader:
                if cells:  # [] is a blank line, not a row
                    yield to_row(reader.line_num, index, cells)
                    index += 1
        except csv.Error as e:
            raise InputFileError(path, f"not CSV: {e}", line=reader.line_num) from e


def _read_parquet(path: str, limits: InputLimits) -> Iterator[InputRow]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InputFileError(path, f"not a Parquet file: {e}") from e
    with pf:
        if pf.metadata.num_rows > limits.max_rows:
            raise InputFileError(path, _too_many_rows(limits))
        content, to_row, id_column = fm.parquet_columns(path, pf.schema_arrow)
        columns = [content, id_column] if id_column else [content]
        expected_column = "expected" if "expected" in pf.schema_arrow.names else None
        if expected_column:
            columns.append(expected_column)
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                values = batch.column(content).to_pylist()
                ids = batch.column(id_column).to_pylist() if id_column else [None] * len(values)
                answers = batch.column(expected_column).to_pylist() if expected_column \
                    else [None] * len(values)
                for value, raw_id, answer in zip(values, ids, answers, strict=True):
                    cid = fm.custom_id(raw_id, index, path, None)
                    row = to_row(index, cid, value) if value is not None else \
                        fm.error_row(index, cid, "missing_prompt", f"{content} is null")
                    yield with_expected(row, answer)
                    index += 1
        except (pa.ArrowException, UnicodeDecodeError) as e:
            raise InputFileError(path, f"corrupt Parquet data near row {index}: {e}") from e


_READERS: dict[str, Callable[[str, InputLimits], Iterator[InputRow]]] = {
    "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet, "text": _read_text,
}

__all__ = ["FORMATS", "InputLimits", "detect_format", "read_input"]
