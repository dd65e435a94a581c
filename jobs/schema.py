"""The Parquet schemas of results, metrics and evaluations: explicit, versioned, stable.

Each schema has its typed row beside it (`ResultRow`, `MetricRow`): code builds
rows as these dataclasses, never as loose dicts, so a misspelt column is an error
at once instead of a silent null column (a test holds field names equal to schema
names). Error columns exist from the first part, so every part of a dataset has
the same schema whether or not its rows failed. Bump `SCHEMA_VERSION` on any change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 3  # 2: the expected column (evaluation datasets); 3: chat, logprobs,
#                     label_prob, raw_label_probs, calibration
#: The metrics schema's own version (it was `SCHEMA_VERSION` up to 3); 4: the provenance
#: columns (`jobs.provenance`), null in older parts.
METRICS_SCHEMA_VERSION = 4

#: A chunk's generation totals, summed per backend in the store and in its summary.
SUMMARY_METRICS = ("prompt_tokens", "generated_tokens", "prefill_seconds", "decode_seconds",
                   "total_seconds")
#: Every total the store keeps per backend: row counts and `SUMMARY_METRICS`.
METRIC_FIELDS = ("rows", "errors", *SUMMARY_METRICS)

LABEL_PROB = pa.struct([("label", pa.string()), ("prob", pa.float64())])
TOP_LOGPROB = pa.struct([("token", pa.string()), ("logprob", pa.float64())])
#: One generated token's log-probability and its likeliest alternatives.
TOKEN_LOGPROB = pa.struct([("token", pa.string()), ("logprob", pa.float64()),
                           ("top_logprobs", pa.list_(TOP_LOGPROB))])

RESULTS_SCHEMA = pa.schema([
    ("job_id", pa.string()),
    ("row_index", pa.int64()),
    ("custom_id", pa.string()),
    ("chunk", pa.int32()),
    ("op", pa.string()),
    ("chat", pa.bool_()),                      # the row was chat messages (null before v3)
    ("model", pa.string()),
    ("backend", pa.string()),
    ("worker", pa.string()),
    ("label", pa.string()),                    # classify with labels: the winner
    ("label_probs", pa.list_(LABEL_PROB)),     # every label's probability (calibrated)
    ("label_prob", pa.float64()),              # the winning label's probability
    ("raw_label_probs", pa.list_(LABEL_PROB)), # the engine's, when calibrated
    ("calibration", pa.string()),              # none | length | batch (classify)
    ("token_id", pa.int32()),                  # classify: the next token
    ("text", pa.string()),                     # generate: the output; classify: token text
    ("logprobs", pa.list_(TOKEN_LOGPROB)),     # generate with logprobs: one per token
    ("prompt_tokens", pa.int32()),
    ("generated_tokens", pa.int32()),
    ("finish_reason", pa.string()),            # stop | length | error (generate)
    ("expected", pa.string()),                 # the dataset's answer (evaluations), else null
    ("error_code", pa.string()),               # null when the row succeeded
    ("error_message", pa.string()),
    ("completed_at", pa.timestamp("ms", tz="UTC")),
], metadata={"inferq.schema": "results", "inferq.schema_version": str(SCHEMA_VERSION)})

@dataclass(slots=True, kw_only=True)
class ResultRow:
    """One row of `RESULTS_SCHEMA` (column comments there)."""

    job_id: str
    row_index: int
    custom_id: str
    chunk: int
    op: str
    chat: bool | None = None
    model: str
    backend: str
    worker: str
    label: str | None = None
    label_probs: list[dict[str, Any]] | None = None
    label_prob: float | None = None
    raw_label_probs: list[dict[str, Any]] | None = None
    calibration: str | None = None
    token_id: int | None = None
    text: str | None = None
    logprobs: list[dict[str, Any]] | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    finish_reason: str | None = None
    expected: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """Its fields as a dict, values shared, not copied: `dataclasses.asdict` deep-copies
        every row's label lists, and did so for a third of a fake-backend chunk's time."""
        return {name: getattr(self, name) for name in _RESULT_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        return cls(**data)


_RESULT_FIELDS = tuple(f.name for f in fields(ResultRow))

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
    # version 4, provenance (jobs/provenance.py; older parts read these as null):
    ("engine", pa.string()),             # llama-cpp-python | mlx-lm | the HTTP server's name
    ("engine_version", pa.string()),
    ("model_path", pa.string()),         # the file or directory the worker loaded
    ("model_size_bytes", pa.int64()),
    ("model_sha256", pa.string()),       # a directory: SHA-256 of its files' manifest
    ("inferq_version", pa.string()),
    ("parallel_slots", pa.int32()),      # the worker's setting; null = the backend's default
    ("batch_size", pa.int32()),          # rows sent to the model in one call
    ("context_len", pa.int32()),
], metadata={"inferq.schema": "metrics",
             "inferq.schema_version": str(METRICS_SCHEMA_VERSION)})

@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRow:
    """The one row of `METRICS_SCHEMA` a chunk writes: its `GenerateMetrics`, where, and
    its provenance (`jobs.provenance.Provenance.columns`)."""

    job_id: str
    chunk: int
    model: str
    backend: str
    worker: str
    host: str
    device: str
    rows: int
    errors: int
    prompt_tokens: int
    generated_tokens: int
    prefill_seconds: float
    decode_seconds: float
    total_seconds: float
    prefill_tokens_per_sec: float
    decode_tokens_per_sec: float
    peak_memory_bytes: int
    active_memory_bytes: int
    started_at: datetime
    finished_at: datetime
    engine: str | None = None
    engine_version: str | None = None
    model_path: str | None = None
    model_size_bytes: int | None = None
    model_sha256: str | None = None
    inferq_version: str | None = None
    parallel_slots: int | None = None
    batch_size: int | None = None
    context_len: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def results_table(rows: list[ResultRow]) -> pa.Table:
    """Typed result rows as a table of `RESULTS_SCHEMA`."""
    return pa.Table.from_pylist([r.to_dict() for r in rows], schema=RESULTS_SCHEMA)


def metrics_table(rows: list[MetricRow]) -> pa.Table:
    """Typed metric rows as a table of `METRICS_SCHEMA`."""
    return pa.Table.from_pylist([r.to_dict() for r in rows], schema=METRICS_SCHEMA)


def field_names(row_type: type) -> list[str]:
    """A row dataclass's field names, in order (to compare with its schema's)."""
    return [f.name for f in fields(row_type)]


EVALUATIONS_SCHEMA = pa.schema([
    ("suite", pa.string()),
    ("job_id", pa.string()),
    ("kind", pa.string()),              # run | label
    ("model", pa.string()),
    ("backend", pa.string()),            # the backend(s) that ran it, comma-separated
    ("target", pa.string()),             # model, or model@backend when pinned
    ("scorer", pa.string()),
    ("score", pa.float64()),             # run: the headline score; label: F1
    ("accuracy", pa.float64()),
    ("macro_f1", pa.float64()),
    ("n", pa.int64()),
    ("correct", pa.int64()),
    ("errors", pa.int64()),
    ("label", pa.string()),              # label rows
    ("precision", pa.float64()),
    ("recall", pa.float64()),
    ("support", pa.int64()),
    ("rows_per_sec", pa.float64()),
    ("prefill_tokens_per_sec", pa.float64()),
    ("decode_tokens_per_sec", pa.float64()),
    ("seconds_per_row", pa.float64()),   # model time per row: latency
    ("breached", pa.bool_()),
    ("breach", pa.string()),
    ("confusion", pa.string()),          # run rows: expected -> predicted -> count, JSON
    ("slot", pa.timestamp("s", tz="UTC")),  # the schedule slot, null when run by hand
    ("finished_at", pa.timestamp("ms", tz="UTC")),
    # version 2 (older files read these as null):
    ("op", pa.string()),                 # classify | generate
    ("score_low", pa.float64()),         # run, slice: the score's 95% bootstrap interval
    ("score_high", pa.float64()),
    ("log_loss", pa.float64()),          # run rows of classify runs with label probabilities
    ("brier", pa.float64()),
    ("ece", pa.float64()),               # expected calibration error, 10 equal bins
    ("auc", pa.float64()),               # two labels only
    ("reliability", pa.string()),        # run rows: [{lower, upper, n, confidence, accuracy}]
    ("slice", pa.string()),              # slice rows: the dataset's slice value
    ("custom_id", pa.string()),          # example rows: a wrong row's id
    ("expected", pa.string()),           # example rows: its expected answer
    ("predicted", pa.string()),          # example rows: its prediction, null for an error row
    ("compared_job_id", pa.string()),    # run rows: the previous run of suite and target
    ("test", pa.string()),               # mcnemar | paired_bootstrap
    ("paired_rows", pa.int64()),         # rows both runs scored (same id, same answer)
    ("delta", pa.float64()),             # this run's score minus the previous, paired rows
    ("p_value", pa.float64()),
    ("confirms", pa.string()),           # a confirmation re-run: the run it re-ran
    ("awaiting_confirmation", pa.bool_()),  # breached, re-run pending before any alert
    ("judged_job_id", pa.string()),      # judge scorer: the run the judge job graded
    ("unparsed", pa.int64()),            # judge scorer: replies that were not a grade
], metadata={"inferq.schema": "evaluations", "inferq.schema_version": "2"})
