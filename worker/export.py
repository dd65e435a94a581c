"""Export result rows: JSON lines, CSV, or the OpenAI Batch output and error files.

The OpenAI shapes are written here only, for `inferq results --openai` and for the
files `inferq serve` hands out, so the two never disagree. A job made from a batch
of ``/v1/chat/completions`` requests records that endpoint in its spec's metadata
(`ENDPOINT_KEY`); its lines are ``chat.completion`` bodies, every other job's
``text_completion`` bodies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

#: The spec metadata key naming the OpenAI endpoint a job's requests were made to.
ENDPOINT_KEY = "inferq.endpoint"
CHAT = "/v1/chat/completions"
#: The job document holding the lines `inferq serve` refused on their own: custom_id ->
#: {"code", "message"}. The job ran them as ``missing_prompt`` error rows; their lines
#: in the error file carry the refusal instead.
REFUSED_DOCUMENT = "openai_refused.json"
#: inferq row error codes that OpenAI names otherwise.
OPENAI_CODES = {"expired": "batch_expired"}


def is_chat(metadata: dict[str, str]) -> bool:
    """True for a job whose requests were chat completions (see `ENDPOINT_KEY`)."""
    return metadata.get(ENDPOINT_KEY) == CHAT


def openai_line(row: dict[str, Any], *, chat: bool = False,
                refused: Mapping[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """One row in the OpenAI Batch output format (or its error file's, for error rows;
    ``refused``: the `REFUSED_DOCUMENT` of the job, if it has one)."""
    request_id = f"{row['job_id']}-{row['row_index']}"
    if row["error_code"]:
        error = (refused or {}).get(row["custom_id"]) or {
            "code": OPENAI_CODES.get(row["error_code"], row["error_code"]),
            "message": row["error_message"]}
        return {"id": request_id, "custom_id": row["custom_id"], "response": None,
                "error": {"code": error["code"], "message": error["message"]}}
    if row["op"] == "classify":
        content = row["label"] if row["label"] is not None else row["text"]
        extra = {"label_probs": {p["label"]: p["prob"] for p in row["label_probs"] or []}}
        finish = "stop"
    else:
        content, extra, finish = row["text"], {}, row["finish_reason"]
    finished = row.get("completed_at")
    created = int(finished.timestamp()) if isinstance(finished, datetime) else 0
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": content},
                  "finish_reason": finish, "logprobs": None}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}
        kind = "text_completion"
    prompt, generated = row["prompt_tokens"] or 0, row["generated_tokens"] or 0
    body = {"id": request_id, "object": kind, "created": created, "model": row["model"],
            "choices": [choice | extra],
            "usage": {"prompt_tokens": prompt, "completion_tokens": generated,
                      "total_tokens": prompt + generated}}
    return {"id": request_id, "custom_id": row["custom_id"],
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None}


def export_results(table: pa.Table, dest: str, *, openai: bool = False,
                   errors: bool = False, chat: bool = False,
                   refused: Mapping[str, dict[str, str]] | None = None) -> int:
    """Write ``table`` to ``dest`` (.jsonl or .csv by suffix); returns the rows written.

    With ``openai``, only the rows of the file asked for: successes, or with
    ``errors`` the error rows; with ``chat``, successes as ``chat.completion`` bodies;
    ``refused`` as for `openai_line`.
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
                    row = openai_line(row, chat=chat, refused=refused)
                out.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
                written += 1
    return written
