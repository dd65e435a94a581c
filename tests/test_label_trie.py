"""LabelTrie: which label prefixes an engine decodes, and how label scores add up."""

from __future__ import annotations

import pytest

from inference._label_trie import LabelTrie


def test_nodes_are_every_proper_prefix_once_and_branches_the_longest():
    trie = LabelTrie.build([[1, 2, 3], [1, 2, 4], [1, 5], [6], [7, 8]])
    assert trie.nodes == ((1,), (1, 2), (7,))
    assert trie.branches == ((1, 2), (7,))  # (1,) is inside (1, 2)
    assert trie.depth == 2
    assert trie.first_tokens == (1, 6, 7)
    assert trie.next_tokens == {(1,): (2, 5), (1, 2): (3, 4), (7,): (8,)}


def test_labels_of_one_token_need_nothing_decoded():
    trie = LabelTrie.build([[3], [4]])
    assert (trie.nodes, trie.branches, trie.depth) == ((), (), 0)


def test_two_hundred_labels_of_ten_first_tokens_are_ten_branches():
    labels = [[adverb, 100 + adjective] for adverb in range(10) for adjective in range(20)]
    trie = LabelTrie.build(labels)
    assert len(trie.branches) == 10
    assert all(len(trie.next_tokens[(adverb,)]) == 20 for adverb in range(10))


def test_a_label_scores_the_sum_of_its_tokens_log_probabilities():
    trie = LabelTrie.build([[1, 2, 3], [1, 5], [6]])
    first = {1: -0.5, 6: -2.0}
    at = {(1,): {2: -0.25, 5: -1.0}, (1, 2): {3: -0.125}}
    assert trie.logprobs(first, at) == pytest.approx([-0.875, -1.5, -2.0])
