"""Export result rows: JSON lines, CSV, Parquet, or the OpenAI Batch output and error
files, to a file or to standard output (``-``).

The OpenAI shapes are written here only, for `inferq results --openai` and for the
files `inferq serve` hands out, so the two never disagree. A row made from chat
messages (the results' ``chat`` column) is a ``chat.completion`` body with
``choices[].message.content``, any other a ``text_completion`` with
``choices[].text``; each carries ``usage``. A job made from a batch of
``/v1/chat/completions`` requests also records that endpoint in its spec's metadata
(`ENDPOINT_KEY`), which decides for rows written before the ``chat`` column.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

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
    ``refused``: the `REFUSED_DOCUMENT` of the job, if it has one).

    A row made from chat messages is a ``chat.completion`` body, any other a
    ``text_completion``; ``chat`` decides for rows written before results recorded
    that (their ``chat`` column is null)."""
    if row.get("chat") is not None:
        chat = bool(row["chat"])
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
        if row.get("calibration") not in (None, "none"):  # calibrated: the engine's too
            extra |= {"calibration": row["calibration"], "raw_label_probs": {
                p["label"]: p["prob"] for p in row.get("raw_label_probs") or []}}
        finish = "stop"
    else:
        content, extra, finish = row["text"], {}, row["finish_reason"]
    finished = row.get("completed_at")
    created = int(finished.timestamp()) if isinstance(finished, datetime) else 0
    tokens = row.get("logprobs")
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": content},
                  "finish_reason": finish,
                  "logprobs": _chat_logprobs(tokens) if tokens is not None else None}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": content, "finish_reason": finish,
                  "logprobs": _completion_logprobs(tokens) if tokens is not None else None}
        kind = "text_completion"
    prompt, generated = row["prompt_tokens"] or 0, row["generated_tokens"] or 0
    body = {"id": request_id, "object": kind, "created": created, "model": row["model"],
            "choices": [choice | extra],
            "usage": {"prompt_tokens": prompt, "completion_tokens": generated,
                      "total_tokens": prompt + generated}}
    return {"id": request_id, "custom_id": row["custom_id"],
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None}


def _chat_logprobs(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    """A chat choice's ``logprobs``: ``{"content": [{token, logprob, bytes,
    top_logprobs}]}``, as OpenAI's chat completions give them."""
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [entry(t["token"], t["logprob"]) | {
        "top_logprobs": [entry(a["token"], a["logprob"]) for a in t["top_logprobs"] or []]}
        for t in tokens], "refusal": None}


def _completion_logprobs(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    """A completion choice's ``logprobs``: parallel lists of tokens, their
    log-probabilities, their alternatives and their offsets in the text."""
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t["token"])
    tops = [{a["token"]: a["logprob"] for a in t["top_logprobs"] or []} for t in tokens]
    return {"tokens": [t["token"] for t in tokens],
            "token_logprobs": [t["logprob"] for t in tokens],
            "top_logprobs": tops if any(tops) else None, "text_offset": offsets}


#: The formats `export_results` writes, and the file suffixes that name each.
EXPORT_FORMATS = ("jsonl", "csv", "parquet")
EXPORT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
                   ".parquet": "parquet", ".pq": "parquet"}
#: The destination that means standard output.
STDOUT = "-"


def export_format(dest: str, fmt: str | None = None) -> str:
    """The format to write ``dest`` in: ``fmt`` when given, else the one its suffix
    names (JSON lines for ``-``); `ValueError` naming the suffix otherwise."""
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"export format {fmt!r} is unknown; use one of "
                             f"{', '.join(EXPORT_FORMATS)}")
        return fmt
    if dest == STDOUT:
        return "jsonl"
    suffix = os.path.splitext(dest)[1].lower()
    if suffix not in EXPORT_SUFFIXES:
        what = f"suffix {suffix!r}" if suffix else "no suffix"
        raise ValueError(f"{dest}: {what} names no export format; use a name ending in "
                         f"{', '.join(sorted(EXPORT_SUFFIXES))}, or --format "
                         f"{'|'.join(EXPORT_FORMATS)}")
    return EXPORT_SUFFIXES[suffix]


def export_results(table: pa.Table, dest: str, *, fmt: str | None = None,
                   openai: bool = False, errors: bool = False, chat: bool = False,
                   refused: Mapping[str, dict[str, str]] | None = None) -> int:
    """Write ``table`` to ``dest`` (``-`` = standard output) as ``fmt`` (None = JSON
    lines with ``openai``, else by `export_format`); returns the rows written.

    JSON lines hold one result row each, CSV the same with nested columns as JSON text
    (``label_probs`` as one object of label -> probability), Parquet the rows as they
    are. With ``openai`` (JSON lines only), only the
    rows of the file asked for: successes, or with ``errors`` the error rows; with
    ``chat``, successes as ``chat.completion`` bodies; ``refused`` as for `openai_line`.
    """
    fmt = fmt or ("jsonl" if openai else export_format(dest))
    if openai and fmt != "jsonl":
        raise ValueError(f"the OpenAI Batch format is JSON lines, not {fmt}")
    with _destination(dest) as out:
        if fmt == "parquet":
            pq.write_table(table, out)
            return int(table.num_rows)
        if fmt == "csv":
            pacsv.write_csv(_flat(table), out)
            return int(table.num_rows)
        written = 0
        for batch in table.to_batches(max_chunksize=10_000):
            lines = []
            for row in batch.to_pylist():
                if openai:
                    if bool(row["error_code"]) != errors:
                        continue
                    row = openai_line(row, chat=chat, refused=refused)
                lines.append(json.dumps(row, default=str, ensure_ascii=False) + "\n")
            out.write("".join(lines).encode())
            written += len(lines)
        return written


def _flat(table: pa.Table) -> pa.Table:
    """``table`` with each nested column (lists, structs) as JSON text, for CSV:
    ``label_probs`` as one object of label -> probability."""
    for i, field in enumerate(table.schema):
        if not pa.types.is_nested(field.type):
            continue
        values = table.column(i).to_pylist()
        if field.name == "label_probs":
            values = [{p["label"]: p["prob"] for p in v} if v else None for v in values]
        text = pa.array([json.dumps(v, ensure_ascii=False) if v is not None else None
                         for v in values], type=pa.string())
        table = table.set_column(i, field.name, text)
    return table


@contextmanager
def _destination(dest: str) -> Iterator[BinaryIO]:
    """A binary stream to write: standard output for ``-`` (flushed, left open), else
    the file."""
    if dest == STDOUT:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(dest, "wb") as out:
        yield out
