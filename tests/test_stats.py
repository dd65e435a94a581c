"""Evaluation statistics against values computed by hand: AUC, McNemar, ECE, log-loss,
Brier, bootstrap intervals, paired comparisons of runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobs import stats
from jobs.outcomes import compare, outcomes, probability_scores
from jobs.scorers import LabelScorer, make_scorer


def test_auc_of_a_small_table_is_the_share_of_positive_negative_pairs_ordered():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ordered
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert stats.auc(scores, np.array([False, False, True, True])) == 0.75


def test_auc_counts_a_tie_as_half():
    # positives 0.5, 0.9 against negatives 0.5, 0.2: 1 tie + 3 ordered = 3.5 of 4
    scores = np.array([0.5, 0.5, 0.2, 0.9])
    assert stats.auc(scores, np.array([True, False, False, True])) == 0.875


def test_auc_is_none_without_both_classes():
    assert stats.auc(np.array([0.1, 0.2]), np.array([True, True])) is None


@pytest.mark.parametrize(("b", "c", "p"), [
    (1, 5, 2 * (1 + 6) / 64),      # C(6,0) + C(6,1), two-sided
    (0, 10, 2 / 1024),
    (5, 1, 2 * (1 + 6) / 64),
    (2, 2, 1.0),                   # 2 * (1 + 4 + 6) / 16 > 1: capped
    (0, 0, 1.0),
])
def test_mcnemar_exact_p_value_matches_the_binomial_tail(b, c, p):
    assert stats.mcnemar_p(b, c) == pytest.approx(p, abs=1e-15)


def test_mcnemar_handles_thousands_of_discordant_pairs():
    # normal approximation: z = (2100 - 2000) / sqrt(4100) = 1.562, two-sided p = 0.118
    assert stats.mcnemar_p(2000, 2100) == pytest.approx(0.118, abs=0.005)


def test_expected_calibration_error_of_a_constructed_case():
    # bin [0.9, 1): 4 rows, conf 0.9, acc 0.75; bin [0.6, 0.7): 2 rows, conf 0.6, acc 0.5
    confidence = np.array([0.9, 0.9, 0.9, 0.9, 0.6, 0.6])
    correct = np.array([True, True, True, False, True, False])
    assert stats.expected_calibration_error(confidence, correct) == pytest.approx(
        4 / 6 * 0.15 + 2 / 6 * 0.1)
    bins = stats.reliability(confidence, correct)
    assert [(b.lower, b.n, b.accuracy) for b in bins] == [(0.6, 2, 0.5), (0.9, 4, 0.75)]


def test_a_confidence_of_one_falls_in_the_last_bin():
    bins = stats.reliability(np.array([1.0]), np.array([True]))
    assert [(b.lower, b.upper) for b in bins] == [(0.9, 1.0)]


def test_log_loss_and_brier_of_known_probabilities():
    assert stats.log_loss(np.array([0.5, 0.25])) == pytest.approx(1.5 * math.log(2))
    assert stats.log_loss(np.array([0.0])) == pytest.approx(-math.log(stats.EPSILON))
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    assert stats.brier(probs, np.array([0, 0])) == pytest.approx((0.08 + 0.98) / 2)


def test_bootstrap_interval_is_reproducible_and_as_wide_as_the_normal_one():
    correct = np.array([True, False] * 200)

    def accuracy(idx: stats.Ints) -> stats.Floats:
        return correct[idx].mean(axis=1)

    first = stats.bootstrap_interval(accuracy, len(correct))
    assert first == stats.bootstrap_interval(accuracy, len(correct))
    half_width = 1.96 * math.sqrt(0.25 / 400)      # 0.049
    assert first[0] == pytest.approx(0.5 - half_width, abs=0.01)
    assert first[1] == pytest.approx(0.5 + half_width, abs=0.01)


def test_bootstrap_interval_of_no_rows_is_nan():
    low, high = stats.bootstrap_interval(lambda idx: idx.mean(axis=1), 0)
    assert math.isnan(low) and math.isnan(high)


LABELS = ["positive", "negative", "neutral"]


def label_pairs(n: int = 60) -> list[tuple[str | None, str]]:
    rng = np.random.default_rng(1)
    pairs: list[tuple[str | None, str]] = []
    for i in range(n):
        expected = LABELS[i % 3]
        roll = rng.random()
        pairs.append((None if roll < 0.05 else expected if roll < 0.7
                      else LABELS[rng.integers(3)], expected))
    return pairs


def test_the_vectorised_headline_is_the_scorers_macro_f1():
    scorer = make_scorer("label")
    pairs = label_pairs()
    rows = outcomes(scorer, [f"r{i}" for i in range(len(pairs))], pairs)
    everything = np.arange(len(pairs))[None, :]
    assert rows.headline(everything)[0] == pytest.approx(scorer.score(pairs).value)
    low, high = rows.interval()
    assert low < scorer.score(pairs).value < high


def test_comparison_pairs_rows_by_id_and_answer_and_uses_mcnemar_for_accuracy():
    scorer = make_scorer("exact")
    ids = [f"r{i}" for i in range(12)]
    before = outcomes(scorer, ids, [("a", "a")] * 12)
    # rows r0-r9 now wrong; r10, r11 have another expected answer: not the same rows
    after_pairs: list[tuple[str | None, str]] = [("b", "a")] * 10 + [("x", "x")] * 2
    result = compare(before, outcomes(scorer, ids, after_pairs), "job-before")
    assert result is not None
    assert (result.test, result.paired_rows, result.before, result.after) == (
        "mcnemar", 10, 1.0, 0.0)
    assert result.p_value == pytest.approx(2 / 1024)
    assert result.significant_drop(0.05) and not result.significant_drop(0.001)


def test_comparison_of_macro_f1_uses_a_paired_bootstrap():
    scorer = make_scorer("label")
    pairs = label_pairs()
    ids = [f"r{i}" for i in range(len(pairs))]
    same = compare(outcomes(scorer, ids, pairs), outcomes(scorer, ids, pairs), "j")
    assert same is not None and same.test == "paired_bootstrap"
    assert (same.delta, same.p_value) == (0.0, 1.0)
    worse = [(None, e) if i % 2 else (p, e) for i, (p, e) in enumerate(pairs)]
    drop = compare(outcomes(scorer, ids, pairs), outcomes(scorer, ids, worse), "j")
    assert drop is not None and drop.delta < -0.2 and drop.p_value < 0.01


def test_no_shared_rows_means_no_comparison():
    scorer = make_scorer("exact")
    assert compare(outcomes(scorer, ["a"], [("x", "x")]),
                   outcomes(scorer, ["b"], [("x", "x")]), "j") is None


def probs(p_positive: float) -> list[dict[str, object]]:
    return [{"label": " positive", "prob": p_positive},
            {"label": " negative", "prob": 1 - p_positive}]


def test_probability_scores_of_a_binary_run():
    scorer = LabelScorer()     # strips: " positive" is "positive"
    rows = [probs(0.9), probs(0.4), probs(0.35), probs(0.2), None]
    expected = ["positive", "positive", "negative", "negative", "positive"]
    scores = probability_scores(scorer, rows, expected)
    assert scores is not None and scores.n == 4            # the error row has none
    assert scores.auc == 1.0                               # every positive above every negative
    assert scores.log_loss == pytest.approx(
        -(math.log(0.9) + math.log(0.4) + math.log(0.65) + math.log(0.8)) / 4)
    assert scores.brier == pytest.approx(2 * (0.01 + 0.36 + 0.35 ** 2 + 0.04) / 4)
    # top-label confidence 0.9 (right), 0.6 (wrong), 0.65 (right), 0.8 (right): bins
    # [0.9, 1) gap 0.1; [0.6, 0.7) conf 0.625, acc 0.5, gap 0.125; [0.8, 0.9) gap 0.2
    assert scores.ece == pytest.approx(0.1 / 4 + 0.125 * 2 / 4 + 0.2 / 4)


def test_an_expected_label_without_a_probability_counts_as_probability_zero():
    scores = probability_scores(LabelScorer(), [probs(0.5)], ["neutral"])
    assert scores is not None
    assert scores.log_loss == pytest.approx(-math.log(stats.EPSILON))
    assert scores.brier == pytest.approx(0.25 + 0.25 + 1)
    assert scores.auc is None
