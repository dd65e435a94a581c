"""Label scoring on llama.cpp: every label's log-probability after each prompt of a group.

The group's prompts are in the context already, prompt ``k`` in sequence ``k``, with
the logits of each last token at hand (`LlamaModel._prefill_group`). A label's first
token is read from those logits. Its later tokens need the label's trie
(`LabelTrie`) decoded after the prompt: each branch of the trie after each prompt
is a *pair*, decoded in a sequence that holds that prompt's cells: the prompt's own
sequence for its first pair in a call, a spare sequence (a decode slot the group
does not use, given the prompt's cells by a copy that a unified cache shares rather
than duplicates) for the others. One decode call packs as many pairs as there are
sequences and reserved cells; a node several of a prompt's branches share is one
token carrying all their sequence ids, so shared label prefixes are computed once.
Afterwards the branches' cells are removed again.

A log-probability needs the position's log-sum-exp over the vocabulary and the
logits of the tokens read there, not a log-softmax per label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference._label_trie import LabelTrie, Prefix
from inference.backends._llama_engine import Engine


def log_sum_exp(logits: np.ndarray[Any, Any]) -> float:
    top = float(np.max(logits))
    return top + math.log(float(np.sum(np.exp(logits.astype(np.float64) - top))))


def read_tokens(logits: np.ndarray[Any, Any], tokens: tuple[int, ...]) -> dict[int, float]:
    """The log-probabilities of ``tokens`` at one position."""
    lse = log_sum_exp(logits)
    return {token: float(logits[token]) - lse for token in tokens}


@dataclass(slots=True)
class _Call:
    """The pairs of one decode call: per prompt, its branches and their sequences."""

    pairs: dict[int, list[tuple[Prefix, int]]] = field(default_factory=dict)
    tokens: int = 0
    nodes: dict[int, set[Prefix]] = field(default_factory=dict)

    def cost(self, k: int, branch: Prefix) -> int:
        """New cells the pair takes: its nodes not yet in this call for prompt ``k``."""
        have = self.nodes.get(k, set())
        return sum(branch[:j] not in have for j in range(1, len(branch) + 1))

    def add(self, k: int, branch: Prefix, seq: int) -> None:
        self.tokens += self.cost(k, branch)
        self.pairs.setdefault(k, []).append((branch, seq))
        self.nodes.setdefault(k, set()).update(branch[:j] for j in range(1, len(branch) + 1))


def score_labels(engine: Engine, trie: LabelTrie, prompt_lengths: list[int],
                 last_logits: list[np.ndarray[Any, Any]], spare: list[int],
                 cells: int) -> tuple[list[list[float]], int]:
    """Each label's log-probability after each prompt, in the trie's label order, and
    how many label tokens were decoded.

    Prompt ``k`` (``prompt_lengths[k]`` tokens) is in sequence ``k``; ``spare`` are
    sequence ids free for branches; ``cells`` is how many KV cells a decode call may
    add (at least ``trie.depth``).
    """
    at: list[dict[Prefix, dict[int, float]]] = [{} for _ in prompt_lengths]
    todo = [list(trie.branches) for _ in prompt_lengths]
    decoded = 0
    while any(todo):
        call = _plan(todo, spare, max(cells, trie.depth))
        _decode(engine, trie, call, prompt_lengths, at)
        decoded += call.tokens
    return [trie.logprobs(read_tokens(last_logits[k], trie.first_tokens), at[k])
            for k in range(len(prompt_lengths))], decoded


def _plan(todo: list[list[Prefix]], spare: list[int], cells: int) -> _Call:
    """The next decode call: every prompt's next branch in its own sequence, then more
    branches round-robin in the spare sequences, while cells last."""
    call = _Call()
    for k, branches in enumerate(todo):
        if branches and call.tokens + call.cost(k, branches[0]) <= cells:
            call.add(k, branches.pop(0), k)
    free = list(spare)
    while free:
        added = False
        for k, branches in enumerate(todo):
            if not free:
                break
            if branches and k in call.pairs and call.tokens + call.cost(k, branches[0]) <= cells:
                call.add(k, branches.pop(0), free.pop())
                added = True
        if not added:
            break
    return call


def _decode(engine: Engine, trie: LabelTrie, call: _Call, prompt_lengths: list[int],
            at: list[dict[Prefix, dict[int, float]]]) -> None:
    batch = engine.batch
    batch.clear()
    wanted: list[tuple[int, Prefix, int]] = []  # (prompt, node, batch index)
    for k, pairs in call.pairs.items():
        for _, seq in pairs:
            if seq != k:
                engine.copy_sequence(k, seq)
        for node in sorted(call.nodes[k]):  # parents first: each sequence's set only shrinks
            seqs = [seq for branch, seq in pairs if branch[:len(node)] == node]
            read = node not in at[k]
            index = batch.add_shared(node[-1], seqs, prompt_lengths[k] + len(node) - 1, read)
            if read:
                wanted.append((k, node, index))
    engine.decode()
    for k, node, index in wanted:
        at[k][node] = read_tokens(engine.logits(index), trie.next_tokens[node])
    for k, pairs in call.pairs.items():
        for _, seq in pairs:
            engine.remove_sequence(seq, prompt_lengths[k] if seq == k else -1)
