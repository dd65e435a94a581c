"""The Parquet schemas of results and metrics: explicit, versioned, stable.

Error columns exist from the first part, so every part of a dataset has the same
schema whether or not its rows failed. Bump `SCHEMA_VERSION` on any change.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: the expected column (evaluation datasets)

#: A chunk's generation totals, summed per backend in the store and in its summary.
SUMMARY_METRICS = ("prompt_tokens", "generated_tokens", "prefill_seconds", "decode_seconds",
                   "total_seconds")
#: Every total the store keeps per backend: row counts and `SUMMARY_METRICS`.
METRIC_FIELDS = ("rows", "errors", *SUMMARY_METRICS)

LABEL_PROB = pa.struct([("label", pa.string()), ("prob", pa.float64())])

RESULTS_SCHEMA = pa.schema([
    ("job_id", pa.string()),
    ("row_index", pa.int64()),
    ("custom_id", pa.string()),
    ("chunk", pa.int32()),
    ("op", pa.string()),
    ("model", pa.string()),
    ("backend", pa.string()),
    ("worker", pa.string()),
    ("label", pa.string()),                    # classify with labels: the winner
    ("label_probs", pa.list_(LABEL_PROB)),     # every label's probability
    ("token_id", pa.int32()),                  # classify: the next token
    ("text", pa.string()),                     # generate: the output; classify: token text
    ("prompt_tokens", pa.int32()),
    ("generated_tokens", pa.int32()),
    ("finish_reason", pa.string()),            # stop | length | error (generate)
    ("expected", pa.string()),                 # the dataset's answer (evaluations), else null
    ("error_code", pa.string()),               # null when the row succeeded
    ("error_message", pa.string()),
    ("completed_at", pa.timestamp("ms", tz="UTC")),
], metadata={"inferq.schema": "results", "inferq.schema_version": str(SCHEMA_VERSION)})

METRICS_SCHEMA = pa.schema([
    ("job_id", pa.string()),
    ("chunk", pa.int32()),
    ("model", pa.string()),
    ("backend", pa.string()),
    ("worker", pa.string()),
    ("host", pa.string()),
    ("device", pa.string()),
    ("rows", pa.int32()),
    ("errors", pa.int32()),
    ("prompt_tokens", pa.int64()),
    ("generated_tokens", pa.int64()),
    ("prefill_seconds", pa.float64()),
    ("decode_seconds", pa.float64()),
    ("total_seconds", pa.float64()),
    ("prefill_tokens_per_sec", pa.float64()),
    ("decode_tokens_per_sec", pa.float64()),
    ("peak_memory_bytes", pa.int64()),
    ("active_memory_bytes", pa.int64()),
    ("started_at", pa.timestamp("ms", tz="UTC")),
    ("finished_at", pa.timestamp("ms", tz="UTC")),
], metadata={"inferq.schema": "metrics", "inferq.schema_version": str(SCHEMA_VERSION)})
