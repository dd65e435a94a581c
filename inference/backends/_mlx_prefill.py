"""Prefill-only scoring with mlx-lm: last-position logits and label log-probabilities.

mlx-lm has no public call that returns a prompt's last-position logits, so a
group of sequences is right-padded into one batch and run through the model's
causal forward, as ``mlx_lm/evaluate.py`` does: with a causal mask a real
position never sees the padding after it, so padding does not change its
logits. The forward runs in chunks of ``step`` positions through a KV cache,
and only the positions asked for are kept, so memory stays at
``rows * step * vocab`` logits however long the prompts are.

A label is scored over its whole token sequence: the log-probability of its
first token comes from the prompt's last position, each further token from
the row ``prompt + label[:-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache


@dataclass(frozen=True, slots=True)
class Prefill:
    """One group's outputs, per prompt in the group's order."""

    tokens: list[int]                 #: argmax at each prompt's last position
    logits: Any                       #: mx.array [prompts, vocab], float32
    label_logprobs: list[list[float]]  #: [prompt][label] log p(label | prompt)


def rows_per_prompt(labels: Sequence[Sequence[int]]) -> int:
    """How many batch rows one prompt takes: one per multi-token label, at least one."""
    return max(1, sum(len(label) > 1 for label in labels))


def prefill_group(
    model: Any,
    prompts: Sequence[list[int]],
    labels: Sequence[list[int]],
    *,
    pad_id: int,
    step: int,
) -> Prefill:
    """Run ``prompts`` (token ids, all non-empty) as one padded batch and score ``labels``."""
    rows: list[list[int]] = []
    wanted: list[tuple[int, int]] = []  # (row, position); the first len(prompts) are last positions
    label_rows: list[list[int]] = []
    for ids in prompts:
        first = len(rows)
        multi = [k for k, label in enumerate(labels) if len(label) > 1]
        row_of = [first] * len(labels)
        for k in multi:
            row_of[k] = len(rows)
            rows.append(ids + labels[k][:-1])
        if not multi:
            rows.append(ids)
        wanted.append((first, len(ids) - 1))
        label_rows.append(row_of)

    # Label token t > 0 is predicted at position len(prompt) - 1 + t of its row.
    picks: list[tuple[int, int, int, int]] = []  # (wanted index, token, prompt, label)
    for p, ids in enumerate(prompts):
        for k, label in enumerate(labels):
            for t, token in enumerate(label):
                index = p
                if t > 0:
                    index = len(wanted)
                    wanted.append((label_rows[p][k], len(ids) - 1 + t))
                picks.append((index, token, p, k))

    gathered = _forward_gather(model, rows, wanted, pad_id=pad_id, step=step)
    last = gathered[: len(prompts)]
    argmax: Any = mx.argmax(last, axis=-1).tolist()
    tokens = [int(t) for t in argmax]
    sums = [[0.0] * len(labels) for _ in prompts]
    if picks:
        logprobs = gathered - mx.logsumexp(gathered, axis=-1, keepdims=True)
        at = mx.array([i for i, _, _, _ in picks])
        token_ids = mx.array([tok for _, tok, _, _ in picks])
        values = logprobs[at, token_ids].tolist()
        for (_, _, p, k), value in zip(picks, values, strict=True):
            sums[p][k] += float(value)
    return Prefill(tokens=tokens, logits=last, label_logprobs=sums)


def _forward_gather(
    model: Any,
    rows: Sequence[list[int]],
    wanted: Sequence[tuple[int, int]],
    *,
    pad_id: int,
    step: int,
) -> Any:
    """float32 logits [len(wanted), vocab] at the (row, position) pairs asked for."""
    width = max(len(r) for r in rows)
    inputs = mx.array([r + [pad_id] * (width - len(r)) for r in rows])
    cache = make_prompt_cache(model)
    pieces: list[Any] = []
    order: list[int] = []
    for start in range(0, width, step):
        logits = model(inputs[:, start : start + step], cache=cache)
        inside = [i for i, (_, pos) in enumerate(wanted) if start <= pos < start + step]
        if inside:
            row_idx = mx.array([wanted[i][0] for i in inside])
            pos_idx = mx.array([wanted[i][1] - start for i in inside])
            pieces.append(logits[row_idx, pos_idx].astype(mx.float32))
            order.extend(inside)
        mx.eval(pieces, [c.state for c in cache])
    gathered = mx.concatenate(pieces, axis=0)
    # Put the rows back in the order asked for.
    inverse = [0] * len(order)
    for slot, i in enumerate(order):
        inverse[i] = slot
    return gathered[mx.array(inverse)]
