"""The statistics of evaluation runs: intervals, paired tests, probability scores.

Pure functions over numpy arrays, reproducible: every resampling draws from
``numpy.random.default_rng(SEED)``, so scoring the same rows twice gives the same
interval and the same p-value.

- `bootstrap_interval`: a percentile bootstrap interval of any statistic of the rows;
- `mcnemar_p`: McNemar's exact test (a two-sided binomial tail) for paired 0/1 outcomes;
- `paired_bootstrap_p`: a two-sided paired bootstrap test of a difference of statistics;
- `auc`: the area under the ROC curve by the rank statistic (Mann-Whitney U, ties halved);
- `log_loss`, `brier`, `reliability` and `expected_calibration_error`: how good the
  label probabilities are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
#: Resampled row indices, shape (resamples, rows) -> the statistic of each resample.
Statistic = Callable[[Ints], Floats]

SEED = 13
RESAMPLES = 1000
LEVEL = 0.95
BINS = 10               #: equal-width confidence bins of the reliability diagram
EPSILON = 1e-15         #: log-loss clips probabilities to [EPSILON, 1]
_BATCH_CELLS = 2_000_000    #: resampled row indices drawn at a time (bounds memory)


def _resamples(n: int, count: int, seed: int) -> Iterator[Ints]:
    """``count`` resamples of ``n`` row indices, in batches; the same for the same seed."""
    rng = np.random.default_rng(seed)
    batch = max(1, min(count, _BATCH_CELLS // n))
    for start in range(0, count, batch):
        yield rng.integers(0, n, size=(min(batch, count - start), n), dtype=np.int64)


def bootstrap_interval(statistic: Statistic, n: int, *, resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = SEED) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic`` over ``n`` rows drawn with
    replacement; ``(nan, nan)`` for no rows."""
    if n == 0:
        return math.nan, math.nan
    values = np.concatenate([statistic(idx) for idx in _resamples(n, resamples, seed)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value: ``b`` pairs right before and wrong now, ``c``
    the reverse; under no change each discordant pair is a fair coin. 1.0 with none."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / (1 << n))   # int / int: exact for any n


def paired_bootstrap_p(before: Statistic, after: Statistic, n: int, *,
                       resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided p-value that ``after - before`` is 0, resampling the ``n`` paired rows
    together: twice the smaller share of resamples on either side of 0 (at most 1)."""
    if n == 0:
        return 1.0
    diffs = np.concatenate([after(idx) - before(idx) for idx in _resamples(n, resamples, seed)])
    return min(1.0, 2 * min(float(np.mean(diffs >= 0)), float(np.mean(diffs <= 0))))


def auc(scores: Floats, positive: npt.NDArray[np.bool_]) -> float | None:
    """The ROC AUC of ``scores`` for the ``positive`` rows: the chance that a random
    positive outscores a random negative, ties counting half. None without both classes."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(sorted_scores):   # average ranks over ties
        end = start
        while end + 1 < len(sorted_scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def log_loss(p_true: Floats) -> float:
    """Mean of ``-ln p`` of the expected label's probability, clipped at `EPSILON`."""
    return float(np.mean(-np.log(np.clip(p_true, EPSILON, 1.0))))


def brier(probs: Floats, truth: Ints) -> float:
    """Brier's multi-class score: the mean over rows of ``sum_k (p_k - [k = truth])^2``;
    0 is perfect, 2 the worst; with two labels it is twice the ``(p - y)^2`` form."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(truth)), truth] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Bin:
    """One bin of a reliability diagram: rows whose top probability is in [lower, upper)."""

    lower: float
    upper: float
    n: int
    confidence: float   #: mean top probability of the bin's rows
    accuracy: float     #: share of the bin's rows whose top label was right


def reliability(confidence: Floats, correct: npt.NDArray[np.bool_],
                bins: int = BINS) -> list[Bin]:
    """The non-empty equal-width bins of top-label confidence (the last bin holds 1.0)."""
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append(Bin(lower=b / bins, upper=(b + 1) / bins, n=int(mask.sum()),
                           confidence=float(confidence[mask].mean()),
                           accuracy=float(correct[mask].mean())))
    return out


def expected_calibration_error(confidence: Floats, correct: npt.NDArray[np.bool_],
                               bins: int = BINS) -> float:
    """ECE: the row-weighted mean gap between accuracy and confidence over the `reliability`
    bins (Guo et al. 2017); 0.0 for no rows."""
    n = len(confidence)
    return sum(b.n / n * abs(b.accuracy - b.confidence)
               for b in reliability(confidence, correct, bins)) if n else 0.0
