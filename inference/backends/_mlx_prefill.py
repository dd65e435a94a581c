"""Prefill-only scoring with mlx-lm: last-position logits and label log-probabilities.

mlx-lm has no public call that returns a prompt's last-position logits, so a
group of sequences is right-padded into one batch and run through the model's
causal forward, as ``mlx_lm/evaluate.py`` does: with a causal mask a real
position never sees the padding after it, so padding does not change its
logits. The forward runs in chunks of ``step`` positions through a KV cache,
and only the positions asked for are kept, so memory stays at
``rows * step * vocab`` logits however long the prompts are.

A label is scored over its whole token sequence: the log-probability of its
first token comes from the prompt's last position, each further token from a
row ``prompt + branch`` whose branch of the labels' trie (`LabelTrie`) holds the
label's earlier tokens, so labels sharing a prefix share a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from inference._label_trie import LabelTrie, Prefix


@dataclass(frozen=True, slots=True)
class Prefill:
    """One group's outputs, per prompt in the group's order."""

    tokens: list[int]                 #: argmax at each prompt's last position
    logits: Any                       #: mx.array [prompts, vocab], float32
    label_logprobs: list[list[float]]  #: [prompt][label] log p(label | prompt)


def rows_per_prompt(trie: LabelTrie) -> int:
    """How many batch rows one prompt takes: one per branch of the labels' trie (labels
    that share a prefix share its row), at least one."""
    return max(1, len(trie.branches))


def prefill_group(
    model: Any,
    prompts: Sequence[list[int]],
    trie: LabelTrie,
    *,
    pad_id: int,
    step: int,
) -> Prefill:
    """Run ``prompts`` (token ids, all non-empty) as one padded batch and score the labels
    of ``trie`` (built once per call of classify, not per group)."""
    rows: list[list[int]] = []
    wanted: list[tuple[int, int]] = []  # (row, position); the first len(prompts) are last positions
    node_at: list[dict[Prefix, int]] = []  # per prompt: trie node -> its index in wanted
    for ids in prompts:
        wanted.append((len(rows), len(ids) - 1))
        rows.extend([ids + list(branch) for branch in trie.branches] or [ids])
    for p, ids in enumerate(prompts):
        first_row = wanted[p][0]
        at: dict[Prefix, int] = {}
        for b, branch in enumerate(trie.branches):
            for j in range(1, len(branch) + 1):
                if branch[:j] not in at:  # read each node once, from the first branch holding it
                    at[branch[:j]] = len(wanted)
                    wanted.append((first_row + b, len(ids) - 1 + j))
        node_at.append(at)

    gathered = _forward_gather(model, rows, wanted, pad_id=pad_id, step=step)
    last = gathered[: len(prompts)]
    argmax: Any = mx.argmax(last, axis=-1).tolist()
    tokens = [int(t) for t in argmax]
    sums = [[0.0] * len(trie.labels) for _ in prompts]
    if trie.labels:
        picks: list[tuple[int, int]] = []  # (wanted index, token)
        for p in range(len(prompts)):
            picks.extend((p, token) for token in trie.first_tokens)
            for node, index in node_at[p].items():
                picks.extend((index, token) for token in trie.next_tokens[node])
        logprobs = gathered - mx.logsumexp(gathered, axis=-1, keepdims=True)
        values = iter(logprobs[mx.array([i for i, _ in picks]),
                               mx.array([t for _, t in picks])].tolist())
        for p in range(len(prompts)):
            first = {token: float(next(values)) for token in trie.first_tokens}
            nodes = {node: {token: float(next(values)) for token in trie.next_tokens[node]}
                     for node in node_at[p]}
            sums[p] = trie.logprobs(first, nodes)
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
