"""The readers of tables, for `jobs.readers`: CSV and Parquet, by header.

A table names its columns before its first row, so what an `InputMapping` asks of
them (template fields, the id and expected columns) is checked there, and a column
the table lacks rejects the file before any row is read. Without a template, a
table needs a ``prompt`` or ``messages`` column.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from jobs import _formats as fm
from jobs.errors import InputFileError
from jobs.mapping import InputMapping, Template, record_row
from jobs.rows import InputRow, with_expected

if TYPE_CHECKING:
    from jobs.readers import InputLimits

PARQUET_BATCH_ROWS = 256


def open_input(path: str, mode: str, **kwargs: Any) -> IO[Any]:
    """The file open, or `InputFileError` saying why not."""
    try:
        return open(path, mode, **kwargs)
    except OSError as e:
        raise InputFileError(path, f"cannot read: {e.strerror or e}") from e


def too_many_rows(limits: InputLimits) -> str:
    return (f"more than {limits.max_rows:,} rows; the limit is {limits.max_rows:,} "
            "rows a job: split the file into several jobs")


def content_column(path: str, names: Sequence[str]) -> str:
    """"prompt" or "messages", for a table read without a template."""
    if "prompt" not in names and "messages" not in names:
        field = next((n for n in names if n not in ("custom_id", "id", "expected")), "text")
        raise InputFileError(path, f"has columns {', '.join(map(repr, names))}; expected a "
                             "'prompt' or 'messages' column (and optionally 'custom_id'), or "
                             "--template to build the prompt from columns, e.g. --template "
                             f"'{{{field}}}' (template = ... in a suite file)")
    return fm.content_column(path, list(names))


def read_csv(path: str, limits: InputLimits, mapping: InputMapping) -> Iterator[InputRow]:
    # The field size limit is process-wide; it is raised (never lowered) to fit a prompt.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_line_bytes))
    with open_input(path, "r", encoding="utf-8-sig", errors="surrogateescape",
                    newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputFileError(path, "is empty; expected a header line with a prompt "
                                     "or messages column, or the columns a --template names")
            names = [name.strip() for name in header]
            mapping.check_columns(path, names)
            template = mapping.parsed
            content = content_column(path, names) if template is None else None
            id_name = mapping.id_name(names)
            ids = [id_name] if mapping.id_column else ["custom_id", "id"]
            for name in {c for c in (content, *ids) if c is not None} & set(names):
                if names.count(name) > 1:
                    raise InputFileError(path, f"column {name!r} appears "
                                         f"{names.count(name)} times; keep one")
            expected = mapping.expected_name(names)
            position = {name: names.index(name) for name in names[::-1]}
            to_row = fm.CsvRow(path, content, position[content],
                               position.get(id_name) if id_name else None,
                               position.get(expected) if expected else None) \
                if content is not None else _CsvTemplateRow(
                    path, template, position, position.get(id_name) if id_name else None,
                    position.get(expected) if expected else None)
            index = 0
            for cells in reader:
                if cells:  # [] is a blank line, not a row
                    yield to_row(reader.line_num, index, cells)
                    index += 1
        except csv.Error as e:
            raise InputFileError(path, f"not CSV: {e}", line=reader.line_num) from e


class _CsvTemplateRow:
    """Turns a CSV record into a row through a template, given the columns' positions."""

    def __init__(self, path: str, template: Template | None, position: dict[str, int],
                 id_column: int | None, expected_column: int | None) -> None:
        assert template is not None
        self.path, self.template = path, template
        self.used = [(name, position[name]) for name in template.fields]
        self.id_column, self.expected_column = id_column, expected_column

    def __call__(self, line: int, index: int, cells: list[str]) -> InputRow:
        column = self.id_column
        raw_id = cells[column] if column is not None and column < len(cells) else ""
        record = {name: cells[i] for name, i in self.used if i < len(cells)}
        if "\x00" in raw_id or any("\x00" in value for value in record.values()):
            raise InputFileError(self.path, "not CSV: line contains NUL", line=line)
        bad_id = fm.not_utf8(raw_id)
        if bad_id:
            raw_id = raw_id.encode(errors="surrogateescape").decode(errors="replace")
        cid = raw_id or str(index)
        if bad_id or any(fm.not_utf8(value) for value in record.values()):
            row = fm.error_row(index, cid, "invalid_utf8",
                               f"line {line} holds bytes that are not UTF-8")
        elif len(record) < len(self.used):
            name, i = next((n, i) for n, i in self.used if n not in record)
            row = fm.error_row(index, cid, "missing_prompt",
                               f"the row has {len(cells)} cells; template field {name!r} is "
                               f"cell {i + 1}")
        else:
            row = record_row(index, cid, record, self.template)
        column = self.expected_column
        if column is not None and column < len(cells) and cells[column] != "":
            return with_expected(row, cells[column])
        return row


def read_parquet(path: str, limits: InputLimits, mapping: InputMapping) -> Iterator[InputRow]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InputFileError(path, f"not a Parquet file: {e}") from e
    with pf:
        if pf.metadata.num_rows > limits.max_rows:
            raise InputFileError(path, too_many_rows(limits))
        schema = pf.schema_arrow
        mapping.check_columns(path, schema.names)
        template = mapping.parsed
        if template is None:
            content_column(path, schema.names)
            content, to_row, id_column = fm.parquet_columns(path, schema)
            fields = [content]
        else:
            fields = template.fields
            id_column = mapping.id_name(schema.names)
        if mapping.id_column is not None:
            id_column = mapping.id_column
            t = schema.field(id_column).type
            if not (fm.is_text(t) or pa.types.is_integer(t)):
                raise InputFileError(path, f"column {id_column!r} is {t}, expected string or "
                                     "integer")
        expected = mapping.expected_name(schema.names)
        columns = list(dict.fromkeys([*fields, *(c for c in (id_column, expected) if c)]))
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                values = {name: batch.column(name).to_pylist() for name in columns}
                for i in range(batch.num_rows):
                    cid = fm.custom_id(values[id_column][i] if id_column else None, index,
                                       path, None)
                    if template is not None:
                        row = record_row(index, cid, {n: values[n][i] for n in fields}, template)
                    elif (value := values[content][i]) is None:
                        row = fm.error_row(index, cid, "missing_prompt", f"{content} is null")
                    else:
                        row = to_row(index, cid, value)
                    yield with_expected(row, values[expected][i]) if expected else row
                    index += 1
        except (pa.ArrowException, UnicodeDecodeError) as e:
            raise InputFileError(path, f"corrupt Parquet data near row {index}: {e}") from e
