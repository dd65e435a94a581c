"""Export result rows: JSON lines, CSV, or the OpenAI Batch output and error files."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv


def openai_line(row: dict[str, Any]) -> dict[str, Any]:
    """One row in the OpenAI Batch output format (or its error file's, for error rows)."""
    request_id = f"{row['job_id']}-{row['row_index']}"
    if row["error_code"]:
        return {"id": request_id, "custom_id": row["custom_id"], "response": None,
                "error": {"code": row["error_code"], "message": row["error_message"]}}
    if row["op"] == "classify":
        content = row["label"] if row["label"] is not None else row["text"]
        extra = {"label_probs": {p["label"]: p["prob"] for p in row["label_probs"] or []}}
        finish = "stop"
    else:
        content, extra, finish = row["text"], {}, row["finish_reason"]
    body = {"id": request_id, "object": "text_completion", "model": row["model"],
            "choices": [{"index": 0, "text": content, "finish_reason": finish} | extra],
            "usage": {"prompt_tokens": row["prompt_tokens"] or 0,
                      "completion_tokens": row["generated_tokens"] or 0,
                      "total_tokens": (row["prompt_tokens"] or 0) + (row["generated_tokens"] or 0)}}
    return {"id": request_id, "custom_id": row["custom_id"],
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None}


def export_results(table: pa.Table, dest: str, *, openai: bool = False,
                   errors: bool = False) -> int:
    """Write ``table`` to ``dest`` (.jsonl or .csv by suffix); returns the rows written.

    With ``openai``, only the rows of the file asked for: successes, or with
    ``errors`` the error rows.
    """
    if dest.endswith(".csv"):
        probs = pa.array([json.dumps({p["label"]: p["prob"] for p in v}) if v else None
                          for v in table.column("label_probs").to_pylist()], type=pa.string())
        flat = table.set_column(table.schema.get_field_index("label_probs"), "label_probs",
                                probs)
        pacsv.write_csv(flat, dest)
        return int(table.num_rows)
    written = 0
    with open(dest, "w", encoding="utf-8") as out:
        for batch in table.to_batches(max_chunksize=10_000):
            for row in batch.to_pylist():
                if openai:
                    if bool(row["error_code"]) != errors:
                        continue
                    row = openai_line(row)
                out.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
                written += 1
    return written
