"""The ``slice`` column of an evaluation dataset, for per-slice scores.

A dataset row may carry a ``slice`` field (a JSON Lines key, a CSV or Parquet column):
a group its scores are also reported for ("short", "long", "sarcastic"). Result rows
do not carry it; `read_slices` reads it back from the dataset file by row position
(a result's ``row_index``: the row's 0-based position among the file's non-blank rows).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

COLUMN = "slice"


def read_slices(path: str | None, row_indexes: Sequence[int]) -> list[str | None] | None:
    """Each row's slice (None for a row without one), in the order of ``row_indexes``;
    None when the dataset has no ``slice`` column or this process cannot read the file
    (a worker on another host): per-slice scores are then left out, not guessed."""
    if not path:
        return None
    try:
        values = _column(Path(path))
    except (OSError, ValueError, KeyError):
        return None
    if values is None or not any(v is not None for v in values):
        return None
    return [values[i] if 0 <= i < len(values) else None for i in row_indexes]


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _column(path: Path) -> list[str | None] | None:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        values = []
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    values.append(_text(obj.get(COLUMN)) if isinstance(obj, dict) else None)
        return values
    if suffix in (".csv", ".parquet"):
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        if suffix == ".parquet":
            if COLUMN not in pq.read_schema(path).names:
                return None
            table = pq.read_table(path, columns=[COLUMN])
        else:
            table = pcsv.read_csv(path)
            if COLUMN not in table.column_names:
                return None
        return [_text(v) for v in table.column(COLUMN).to_pylist()]
    return None
