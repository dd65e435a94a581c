"""Calibrated label probabilities, and how a label continues its prompt.

A small model's raw label probabilities are often well ordered but badly placed: on
SmolLM2 a review prompt can call every row "positive" (mean P 0.91) while
thresholding the same probabilities at the job's median is right 94% of the time.
A classify job chooses one method (`JobSpec.calibrate`):

``none``
    the engine's probabilities: each label's whole token sequence, normalised over the
    labels.
``length``
    each label's mean log-probability per token, so a label of three tokens is not
    penalised for its length (lm-evaluation-harness's ``acc_norm`` in spirit).
``contextual``
    Contextual calibration (Zhao et al. 2021): each row's probabilities divided by
    those of a content-free input, the same prompt with ``"N/A"`` in place of the
    row's text (the user's message of a chat; a template's fields), renormalised. The
    content-free input is scored once per distinct text in each batch of rows.
``batch``
    Batch Calibration (Zhou et al. 2023, arXiv 2309.17249): each row's probabilities
    divided by the job's mean probability of each label, renormalised. The mean needs
    every row, so it is computed when the job finalizes, from the raw probabilities in
    the published parts, and the parts are rewritten with the calibrated columns:
    the same inputs give the same bytes, so a finalize that runs twice writes the same
    files (`recalibrate_parts`).

Results keep both: ``label_probs`` and ``label`` are the calibrated ones,
``raw_label_probs`` the engine's, ``calibration`` the method.

Labels are stored as the user wrote them. When a prompt ends in a character that is
not whitespace (``"...the customer felt"``), a label continues it as a new word, so
inferq scores ``" positive"`` for the label ``positive`` (`scored_label`); after a
chat template's ``"assistant\\n"``, or any prompt ending in whitespace, the label is
scored as written. A label written with its own leading space is always scored as
written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from inference import ClassifyResult, Message
from inference._base import label_distribution
from jobs.rows import InputRow
from jobs.schema import RESULTS_SCHEMA
from jobs.sinks import SINGLE_THREADED, PartSink, encode_table, with_results_schema

#: The methods (`jobs.spec.CALIBRATIONS`) computed row by row, as the chunk runs;
#: ``batch`` waits for the whole job.
ROW_METHODS = ("none", "length", "contextual")
#: What stands in for a row's content in contextual calibration (Zhao et al. 2021).
CONTENT_FREE = "N/A"
NO_CONTENT_FREE = ("contextual calibration needs a content-free input: chat messages "
                   "(inferq puts \"N/A\" in place of the user's text), or a --template "
                   "(its fields filled with \"N/A\")")
DOCUMENT = "calibration.json"  #: the job document holding the batch means


def needs_space(prompt: str) -> bool:
    """True when a label continues ``prompt`` as a new word (see the module doc)."""
    return bool(prompt) and not prompt[-1].isspace()


def scored_label(label: str, space: bool) -> str:
    """The text scored for ``label`` after a prompt that `needs_space` (or not)."""
    return " " + label if space and not label[:1].isspace() else label


def calibrated_probs(result: ClassifyResult, method: str,
                     names: Mapping[str, str] | None = None,
                     content_free: Mapping[str, float] | None = None
                     ) -> dict[str, float] | None:
    """The label probabilities of ``result`` under a row-by-row ``method``, keyed by the
    user's labels (``names`` maps a scored label back to the user's); ``contextual``
    divides by ``content_free``, the same labels' probabilities for the content-free
    input."""
    if result.label_probs is None:
        return None
    names = names or {}
    if method == "length" and result.label_logprobs and result.label_tokens:
        per_token = {label: lp / result.label_tokens[label]
                     for label, lp in result.label_logprobs.items()}
        _, probs = label_distribution(per_token)
    elif method == "contextual" and content_free:
        probs = batch_calibrated(result.label_probs, content_free)
    else:
        probs = dict(result.label_probs)
    return {names.get(label, label): p for label, p in probs.items()}


def content_free_item(model: Any, spec: Any, row: InputRow) -> str | tuple[Message, ...] | None:
    """The content-free input for ``row``, as the model takes it (`jobs.execute.prompt_item`):
    the job's own (`JobSpec.content_free`, set from a template at submit), else the
    row's chat with every user message's text replaced by `CONTENT_FREE`; None when
    there is neither."""
    from jobs.execute import prompt_item

    given = spec.content_free
    if given is not None and "prompt" in given:
        return str(given["prompt"])
    messages = tuple(Message(m["role"], m["content"]) for m in given["messages"]) \
        if given is not None else tuple(
            Message(m.role, CONTENT_FREE if m.role == "user" else m.content)
            for m in row.messages or ())
    if not messages:
        return None
    return prompt_item(model, replace(row, prompt=None, messages=messages))


def batch_means(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each label's mean probability over the rows that have it (exact summation, so
    the result does not depend on the order parts are read in beyond row order)."""
    sums: dict[str, list[float]] = {}
    for probs in rows:
        for label, p in probs.items():
            sums.setdefault(label, []).append(p)
    return {label: math.fsum(values) / len(values) for label, values in sorted(sums.items())}


def batch_calibrated(probs: Mapping[str, float], means: Mapping[str, float]
                     ) -> dict[str, float]:
    """One row's probabilities divided by the job's means, renormalised."""
    weights = {label: p / means[label] if means.get(label) else 0.0
               for label, p in probs.items()}
    total = math.fsum(weights.values())
    if total <= 0:
        return dict(probs)
    return {label: w / total for label, w in weights.items()}


def with_priors(probs: Mapping[str, float], priors: Mapping[str, float]) -> dict[str, float]:
    """``probs`` times each label's prior weight (1 without one), renormalised."""
    if not priors:
        return dict(probs)
    weights = {label: p * priors.get(label, 1.0) for label, p in probs.items()}
    total = math.fsum(weights.values())
    return {label: w / total for label, w in weights.items()} if total > 0 else dict(probs)


def winner(probs: Mapping[str, float]) -> str:
    """The most probable label; the first listed wins a tie."""
    return max(probs, key=lambda label: probs[label])


def raw_probs_of(row: Mapping[str, Any]) -> dict[str, float] | None:
    """A result row's raw probabilities as a dict: ``raw_label_probs`` once calibrated,
    else ``label_probs``."""
    entries = row.get("raw_label_probs") or row.get("label_probs")
    if not entries:
        return None
    return {e["label"]: e["prob"] for e in entries}


def recalibrate_table(table: pa.Table, means: Mapping[str, float],
                      priors: Mapping[str, float] | None = None) -> pa.Table:
    """A results part with batch-calibrated ``label_probs``, ``label``, ``label_prob``,
    its raw probabilities in ``raw_label_probs`` and ``calibration`` = ``batch``."""
    rows = table.to_pylist()
    for row in rows:
        raw = raw_probs_of(row)
        if raw is None or row["error_code"]:
            continue
        probs = with_priors(batch_calibrated(raw, means), priors or {})
        row["raw_label_probs"] = [{"label": k, "prob": v} for k, v in raw.items()]
        row["label_probs"] = [{"label": k, "prob": v} for k, v in probs.items()]
        row["label"] = winner(probs)
        row["label_prob"] = probs[row["label"]]
        row["calibration"] = "batch"
    return pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)


def calibrate_job(sink: PartSink, job_id: str, chunks: Sequence[int],
                  priors: Mapping[str, float] | None = None) -> dict[str, float]:
    """Batch-calibrate a finished job's published ``chunks`` in place; the means.

    The means come from `DOCUMENT` when it exists (so every rewrite, wherever it runs,
    uses the same), else from the parts' raw probabilities, in row order, and are
    written to it. A part already calibrated is left alone; any other is replaced by
    `recalibrate_table`'s, a pure function of it, so this can run again after a crash.
    """
    if sink.has_document(job_id, DOCUMENT):
        means: dict[str, float] = sink.read_document(job_id, DOCUMENT)["means"]
    else:
        columns = ["row_index", "error_code", "label_probs", "raw_label_probs"]
        rows = [row for c in chunks for row in _read(sink, job_id, c).select(columns).to_pylist()]
        rows.sort(key=lambda r: r["row_index"])
        raw = [raw_probs_of(r) for r in rows if not r["error_code"]]
        means = batch_means([p for p in raw if p])
        sink.put_document(job_id, DOCUMENT, {"method": "batch", "means": means,
                                             "rows": len(raw)})
    for chunk in chunks:
        table = _read(sink, job_id, chunk)
        done = table.column("calibration").to_pylist()
        if all(c in ("batch", None) for c in done):
            continue
        sink.replace_part(job_id, chunk, "results", encode_table(
            recalibrate_table(table, means, priors)))
    return means


def _read(sink: PartSink, job_id: str, chunk: int) -> pa.Table:
    return with_results_schema(pq.read_table(pa.BufferReader(sink.read_part(job_id, chunk)),
                                             **SINGLE_THREADED))
