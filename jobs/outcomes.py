"""A scored run's rows as arrays, and the statistics that need them row by row.

`Outcomes` holds each row's id, expected answer and 0/1 score (and, for the label
scorer, label codes), so that the headline score can be recomputed on resampled
rows: its `interval`, and its `compare` with a previous run on the rows both share
(same id, same expected answer). The test follows the headline: McNemar's exact
test when the headline is the share of rows right (exact, contains, regex, numeric),
a paired bootstrap when it is not (label: macro-F1; judge: graded rows).
`probability_scores` judges the label probabilities of a classify run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from jobs import stats
from jobs.judge import JudgeScorer
from jobs.scorers import LabelScorer, Scorer

Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcomes:
    """Each row of a run: id, expected answer, right or wrong; label codes for macro-F1."""

    ids: list[str]
    expected: list[str]
    correct: Bools
    expected_codes: stats.Ints | None = None    #: label scorer: codes of expected labels
    predicted_codes: stats.Ints | None = None   #: label scorer: codes, -1 = error row
    scores: stats.Floats | None = None          #: graded scorers (judge): each row's score

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def test(self) -> str:
        """The paired test of this headline: "mcnemar" (0/1 mean) or "paired_bootstrap"."""
        graded = self.expected_codes is not None or self.scores is not None
        return "paired_bootstrap" if graded else "mcnemar"

    def headline(self, idx: stats.Ints) -> stats.Floats:
        """The headline score of each resample (rows ``idx``, shape resamples x rows)."""
        if self.scores is not None:
            graded: stats.Floats = self.scores[idx].mean(axis=1)
            return graded
        if self.expected_codes is None or self.predicted_codes is None:
            means: stats.Floats = self.correct[idx].mean(axis=1, dtype=np.float64)
            return means
        # One bincount per count over the whole batch: label k of resample b is bin b*K + k.
        resamples, labels = len(idx), int(self.expected_codes.max(initial=-1)) + 1
        labels = max(labels, int(self.predicted_codes.max(initial=-1)) + 1)
        offsets = (np.arange(resamples, dtype=np.int64) * labels)[:, None]
        exp, pred = self.expected_codes[idx], self.predicted_codes[idx]
        size = resamples * labels
        support = np.bincount((exp + offsets).ravel(), minlength=size)
        answered = pred >= 0
        predicted = np.bincount((pred + offsets)[answered], minlength=size)
        hits = np.bincount((exp + offsets)[exp == pred], minlength=size)
        support, predicted, hits = (a.reshape(resamples, labels)
                                    for a in (support, predicted, hits))
        f1 = 2 * hits / np.maximum(support + predicted, 1)
        present = support > 0
        macro: stats.Floats = (np.where(present, f1, 0.0).sum(axis=1)
                               / np.maximum(present.sum(axis=1), 1))
        return macro

    def interval(self) -> tuple[float, float]:
        """The 95% percentile bootstrap interval of the headline score."""
        return stats.bootstrap_interval(self.headline, self.n)

    def take(self, positions: Sequence[int]) -> Outcomes:
        """The rows at ``positions``, in that order."""
        where = np.asarray(positions, dtype=np.int64)
        return Outcomes(ids=[self.ids[i] for i in where],
                        expected=[self.expected[i] for i in where],
                        correct=self.correct[where],
                        expected_codes=None if self.expected_codes is None
                        else self.expected_codes[where],
                        predicted_codes=None if self.predicted_codes is None
                        else self.predicted_codes[where],
                        scores=None if self.scores is None else self.scores[where])


def outcomes(scorer: Scorer, ids: Sequence[str],
             pairs: Sequence[tuple[str | None, str]]) -> Outcomes:
    """The outcomes of ``pairs`` (prediction or None for an error row, expected) by ``ids``."""
    correct = np.array([scorer.correct(p, e) for p, e in pairs], dtype=np.bool_)
    if isinstance(scorer, JudgeScorer):
        return Outcomes(ids=list(ids), expected=[e for _, e in pairs], correct=correct,
                        scores=np.array([scorer.row_score(p) for p, _ in pairs],
                                        dtype=np.float64))
    if not isinstance(scorer, LabelScorer):
        return Outcomes(ids=list(ids), expected=[e for _, e in pairs], correct=correct)
    expected = [scorer.label(e) for _, e in pairs]
    predicted = [None if p is None else scorer.label(p) for p, _ in pairs]
    codes = {label: i for i, label in enumerate(sorted(set(expected) | {
        p for p in predicted if p is not None}))}
    return Outcomes(ids=list(ids), expected=expected, correct=correct,
                    expected_codes=np.array([codes[e] for e in expected], dtype=np.int64),
                    predicted_codes=np.array([-1 if p is None else codes[p] for p in predicted],
                                             dtype=np.int64))


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """A run against the previous run of its suite and target, on the rows both scored."""

    previous_job_id: str
    test: str               #: "mcnemar" or "paired_bootstrap"
    paired_rows: int
    before: float           #: the previous run's headline on the paired rows
    after: float            #: this run's headline on the paired rows
    p_value: float

    @property
    def delta(self) -> float:
        return self.after - self.before

    def significant_drop(self, alpha: float) -> bool:
        return self.delta < 0 and self.p_value < alpha


def compare(before: Outcomes, after: Outcomes, previous_job_id: str) -> Comparison | None:
    """The paired test of ``after`` against ``before`` on rows with the same id and expected
    answer; None when they share no row."""
    where = {(i, e): k for k, (i, e) in enumerate(zip(before.ids, before.expected, strict=True))}
    pairs = [(where[key], k) for k, key in enumerate(zip(after.ids, after.expected, strict=True))
             if key in where]
    if not pairs:
        return None
    old, new = before.take([a for a, _ in pairs]), after.take([b for _, b in pairs])
    everything = np.arange(len(pairs), dtype=np.int64)[None, :]
    score_before, score_after = float(old.headline(everything)[0]), float(
        new.headline(everything)[0])
    if new.test == "mcnemar":
        b = int((old.correct & ~new.correct).sum())
        c = int((~old.correct & new.correct).sum())
        p = stats.mcnemar_p(b, c)
    else:
        p = stats.paired_bootstrap_p(old.headline, new.headline, len(pairs))
    return Comparison(previous_job_id=previous_job_id, test=new.test, paired_rows=len(pairs),
                      before=score_before, after=score_after, p_value=p)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbabilityScores:
    """How good a classify run's label probabilities are, over the rows that have them."""

    n: int                          #: rows with probabilities (error rows have none)
    log_loss: float
    brier: float
    ece: float
    auc: float | None               #: two labels only
    reliability: list[stats.Bin]


def probability_scores(scorer: LabelScorer, label_probs: Sequence[list[dict[str, Any]] | None],
                       expected: Sequence[str]) -> ProbabilityScores | None:
    """Log-loss, Brier, ECE and (two labels) AUC from each row's ``label_probs`` (a list of
    {label, prob}); labels are compared as ``scorer`` compares them. An expected label
    missing from a row's probabilities has probability 0. None when no row has any."""
    rows = [({scorer.label(p["label"]): float(p["prob"]) for p in probs}, scorer.label(e))
            for probs, e in zip(label_probs, expected, strict=True) if probs]
    if not rows:
        return None
    labels = sorted({label for probs, _ in rows for label in probs})
    matrix = np.array([[probs.get(label, 0.0) for label in labels] for probs, _ in rows])
    p_true = np.array([probs.get(e, 0.0) for probs, e in rows])
    top = matrix.argmax(axis=1)
    confidence = matrix.max(axis=1)
    right = np.array([labels[t] == e for t, (_, e) in zip(top, rows, strict=True)])
    known = np.array([e in labels for _, e in rows])
    truth = np.array([labels.index(e) if e in labels else 0 for _, e in rows], dtype=np.int64)
    brier = stats.brier(matrix[known], truth[known]) if known.all() else _brier_unknown(
        matrix, truth, known)
    auc = None
    if len(labels) == 2:
        auc = stats.auc(matrix[known, 0], truth[known] == 0)
    return ProbabilityScores(n=len(rows), log_loss=stats.log_loss(p_true), brier=brier,
                             ece=stats.expected_calibration_error(confidence, right),
                             auc=auc, reliability=stats.reliability(confidence, right))


def _brier_unknown(matrix: stats.Floats, truth: stats.Ints, known: Bools) -> float:
    """Brier with rows whose expected label has no probability: their one-hot is all 0
    over the known labels plus 1 for the missing one."""
    onehot = np.zeros_like(matrix)
    onehot[np.arange(len(truth))[known], truth[known]] = 1.0
    return float(np.mean(np.sum((matrix - onehot) ** 2, axis=1) + (~known)))
