"""Statistics for scores that deserve trust: bootstrap intervals and paired tests.

    >>> bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1], seed=0)          # doctest: +SKIP
    (0.75, 0.375, 1.0)
    >>> mcnemar_exact([1, 1, 0, 1], [0, 1, 0, 0]).p_value       # doctest: +SKIP
    0.5

Bootstrap resampling (percentile intervals) is the standard, assumption-light interval for a mean
over examples. For two models scored on the SAME examples with a 0/1 metric, McNemar's exact test
looks only at the examples where they disagree; for continuous scores a paired bootstrap of the
per-example differences does the same job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


def bootstrap_ci(
    scores, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `scores`."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(x.mean()), float(low), float(high)


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
    wins: int = 0  # examples only the challenger got right
    losses: int = 0  # examples only the champion got right


def mcnemar_exact(challenger, champion, confidence: float = 0.95, seed: int = 0) -> PairedTest:
    """One-sided exact McNemar test (binomial on the discordant pairs) for 0/1 scores."""
    a, b = np.asarray(challenger, dtype=float), np.asarray(champion, dtype=float)
    _check_paired(a, b)
    wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    _, low, high = bootstrap_ci(a - b, confidence=confidence, seed=seed)
    return PairedTest(
        "mcnemar_exact", a.mean(), b.mean(), a.mean() - b.mean(), float(p), low, high, a.size, wins, losses
    )


def paired_bootstrap(
    challenger, champion, confidence: float = 0.95, n_resamples: int = 5000, seed: int = 0
) -> PairedTest:
    """One-sided paired bootstrap on per-example differences (any bounded score)."""
    a, b = np.asarray(challenger, dtype=float), np.asarray(champion, dtype=float)
    _check_paired(a, b)
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(axis=1)
    p = float((np.sum(means <= 0) + 1) / (n_resamples + 1))
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return PairedTest(
        "paired_bootstrap",
        a.mean(),
        b.mean(),
        d.mean(),
        p,
        float(low),
        float(high),
        d.size,
        int((d > 0).sum()),
        int((d < 0).sum()),
    )


def paired_test(challenger, champion, confidence: float = 0.95) -> PairedTest:
    """McNemar for 0/1 scores, the paired bootstrap otherwise."""
    values = set(np.unique(np.concatenate([np.asarray(challenger, float), np.asarray(champion, float)])))
    if values <= {0.0, 1.0}:
        return mcnemar_exact(challenger, champion, confidence)
    return paired_bootstrap(challenger, champion, confidence)


def _check_paired(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired scores need two equal, non-empty lists (got {a.size} and {b.size})")
