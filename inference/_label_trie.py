"""The tokens of a label set as a trie: what an engine must decode to score every label.

A label's log-probability after a prompt is the sum over its tokens: the first token's
from the prompt's last position, token ``j`` from the position of token ``j - 1``
decoded after the prompt. The positions needed are therefore the label prefixes
``ids[:j]`` for ``1 <= j < len(ids)`` (the trie's *nodes*), and labels that share a
prefix share its position: " very good" and " very bad" need " very" decoded once.
The nodes that no other node extends are the *branches*: decoding each branch after
the prompt, in its own sequence, yields every node's logits. 200 labels made of 10
adverbs and 20 adjectives are 10 branches, not 200 decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Prefix = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LabelTrie:
    """The label set's token ids, its nodes and branches (both sorted, so parents come
    before their children), and the tokens to read at each node's position."""

    labels: tuple[Prefix, ...]
    nodes: tuple[Prefix, ...]
    branches: tuple[Prefix, ...]
    first_tokens: tuple[int, ...]      #: read at the prompt's own last position
    next_tokens: dict[Prefix, tuple[int, ...]]  #: node -> tokens read at its position

    @classmethod
    def build(cls, labels: Sequence[Sequence[int]]) -> LabelTrie:
        ids = tuple(tuple(label) for label in labels)
        nodes = sorted({label[:j] for label in ids for j in range(1, len(label))})
        inner = {node[:j] for node in nodes for j in range(1, len(node))}
        following: dict[Prefix, set[int]] = {}
        for label in ids:
            for j in range(1, len(label)):
                following.setdefault(label[:j], set()).add(label[j])
        return cls(labels=ids, nodes=tuple(nodes),
                   branches=tuple(node for node in nodes if node not in inner),
                   first_tokens=tuple(sorted({label[0] for label in ids if label})),
                   next_tokens={node: tuple(sorted(t)) for node, t in following.items()})

    @property
    def depth(self) -> int:
        """The longest branch: positions one prompt needs after its last token."""
        return max((len(branch) for branch in self.branches), default=0)

    def logprobs(self, first: dict[int, float],
                 at: dict[Prefix, dict[int, float]]) -> list[float]:
        """Every label's log-probability, from the first tokens' (``first``) and each
        node's next tokens' (``at``) log-probabilities after one prompt."""
        out = []
        for label in self.labels:
            total = first[label[0]]
            for j in range(1, len(label)):
                total += at[label[:j]][label[j]]
            out.append(total)
        return out
