"""Statistics for scores that deserve trust: bootstrap intervals and paired tests, on scipy.

    >>> bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1])                  # doctest: +SKIP
    (0.75, 0.375, 1.0)
    >>> mcnemar_exact([1, 1, 0, 1], [0, 1, 0, 0]).p_value       # doctest: +SKIP
    0.25

Percentile bootstrap intervals (`scipy.stats.bootstrap`, one vectorised pass) for a mean over
examples and for any statistic of paired columns (macro F1). For two models scored on the SAME
examples: McNemar's exact test for 0/1 scores (it looks only where they disagree), a paired bootstrap of
the per-example differences for any float score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 2000


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable, confidence: float, seed: int, n: int):
    from scipy.stats import bootstrap  # imported on first use: scipy.stats is slow to import

    return bootstrap(
        data,
        statistic,
        n_resamples=n,
        confidence_level=confidence,
        method="percentile",
        paired=len(data) > 1,
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )


def bootstrap_ci(
    scores, confidence: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `scores`."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size < 2 or np.all(x == x[0]):  # no spread to resample
        return float(x.mean()), float(x.mean()), float(x.mean())
    res = _bootstrap((x,), np.mean, confidence, seed, n_resamples)
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def statistic_ci(
    statistic: Callable, *columns, confidence: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """(value, low, high) of `statistic(*columns, axis=-1)` over paired columns (rows resampled together)."""
    cols = tuple(np.asarray(c) for c in columns)
    value = float(statistic(*cols, axis=-1))
    if cols[0].size < 2:
        return value, value, value
    res = _bootstrap(cols, statistic, confidence, seed, n_resamples)
    low, high = res.confidence_interval.low, res.confidence_interval.high
    if np.isnan(low):  # a degenerate distribution (every resample equal)
        return value, value, value
    return value, float(low), float(high)


def macro_f1(expected: np.ndarray, predicted: np.ndarray, n_classes: int, axis: int = -1) -> np.ndarray:
    """Macro F1 over integer-coded classes 0..n_classes-1 (a code >= n_classes is a wrong answer),
    vectorised over leading axes; a class absent from both counts 0, as sklearn's `zero_division=0`."""
    scores = []
    for c in range(n_classes):
        t, p = expected == c, predicted == c
        tp = np.sum(t & p, axis=axis)
        denom = 2 * tp + np.sum(~t & p, axis=axis) + np.sum(t & ~p, axis=axis)
        scores.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(scores, axis=0)


@dataclass
class PairedTest:
    method: str
    challenger: float
    champion: float
    diff: float
    p_value: float  # one-sided: challenger better than champion
    low: float  # interval of the difference (challenger - champion)
    high: float
    n: int
    wins: int = 0  # examples where the challenger scored higher
    losses: int = 0  # examples where the champion scored higher


def _diff_distribution(d: np.ndarray, confidence: float, seed: int, n: int):
    if d.size < 2 or np.all(d == d[0]):
        return np.full(n, d.mean()), float(d.mean()), float(d.mean())
    res = _bootstrap((d,), np.mean, confidence, seed, n)
    return res.bootstrap_distribution, float(res.confidence_interval.low), float(res.confidence_interval.high)


def mcnemar_exact(challenger, champion, confidence: float = 0.95, seed: int = 0) -> PairedTest:
    """One-sided exact McNemar test (binomial on the discordant pairs) for 0/1 scores."""
    from scipy.stats import binomtest

    a, b = _paired(challenger, champion)
    wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    _, low, high = _diff_distribution(a - b, confidence, seed, N_RESAMPLES)
    return PairedTest(
        "mcnemar_exact", a.mean(), b.mean(), a.mean() - b.mean(), float(p), low, high, a.size, wins, losses
    )


def paired_bootstrap(
    challenger, champion, confidence: float = 0.95, n_resamples: int = 5000, seed: int = 0
) -> PairedTest:
    """One-sided paired bootstrap on per-example differences (any score in [0, 1])."""
    a, b = _paired(challenger, champion)
    d = a - b
    means, low, high = _diff_distribution(d, confidence, seed, n_resamples)
    p = float((np.sum(means <= 0) + 1) / (means.size + 1))
    return PairedTest(
        "paired_bootstrap", a.mean(), b.mean(), d.mean(), p, low, high, d.size, int((d > 0).sum()), int((d < 0).sum())
    )


def paired_test(challenger, champion, confidence: float = 0.95) -> PairedTest:
    """McNemar for 0/1 scores, the paired bootstrap otherwise."""
    a, b = _paired(challenger, champion)
    if set(np.unique(np.concatenate([a, b]))) <= {0.0, 1.0}:
        return mcnemar_exact(a, b, confidence)
    return paired_bootstrap(a, b, confidence)


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired scores need two equal, non-empty lists (got {a.size} and {b.size})")
    return a, b
