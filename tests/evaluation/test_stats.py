"""pipelines.evaluation.stats on known inputs: bootstrap intervals, macro F1, McNemar, paired bootstrap."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipelines.evaluation.stats import (
    bootstrap_ci,
    macro_f1,
    mcnemar_exact,
    paired_bootstrap,
    paired_test,
    statistic_ci,
)

# -- bootstrap_ci ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scores", [[1, 1, 1], [0.3] * 5, [0.7], [0, 0]])
def test_bootstrap_ci_of_constant_input_is_a_point(scores):
    mean = float(np.mean(scores))
    assert bootstrap_ci(scores) == pytest.approx((mean, mean, mean))


def test_bootstrap_ci_of_nothing_is_nan():
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_bootstrap_ci_brackets_the_mean_near_the_normal_approximation():
    mean, low, high = bootstrap_ci([1, 0] * 10)
    assert mean == 0.5 and low < 0.5 < high
    half = 1.96 * math.sqrt(0.25 / 20)  # ~0.22
    assert low == pytest.approx(0.5 - half, abs=0.05) and high == pytest.approx(0.5 + half, abs=0.05)


def test_bootstrap_ci_narrows_with_more_data_and_widens_with_confidence():
    widths = [high - low for _, low, high in (bootstrap_ci([1, 0, 0, 1, 1] * k) for k in (4, 40, 400))]
    assert widths[0] > widths[1] > widths[2] > 0
    _, low90, high90 = bootstrap_ci([1, 0] * 20, confidence=0.90)
    _, low99, high99 = bootstrap_ci([1, 0] * 20, confidence=0.99)
    assert low99 <= low90 and high90 <= high99 and (high99 - low99) > (high90 - low90)


def test_bootstrap_ci_is_reproducible_per_seed():
    scores = [0.1, 0.9, 0.4, 0.6, 0.2, 0.8, 0.5]
    assert bootstrap_ci(scores, seed=3) == bootstrap_ci(scores, seed=3)
    assert bootstrap_ci(scores, seed=3)[1:] != bootstrap_ci(scores, seed=4)[1:]


# -- macro F1 and statistic_ci --------------------------------------------------------------------

RNG = np.random.default_rng(11)
N_CLASSES = 4
EXPECTED = RNG.integers(0, N_CLASSES, size=40)
# 70% right; the rest a random code, 4 included (an answer outside the label set)
PREDICTED = np.where(RNG.random(40) < 0.7, EXPECTED, RNG.integers(0, N_CLASSES + 1, size=40))


def sk_macro_f1(expected, predicted) -> float:
    return f1_score(expected, predicted, average="macro", labels=list(range(N_CLASSES)), zero_division=0)


def test_macro_f1_equals_sklearn():
    assert float(macro_f1(EXPECTED, PREDICTED, N_CLASSES)) == pytest.approx(sk_macro_f1(EXPECTED, PREDICTED))
    assert float(macro_f1(EXPECTED, EXPECTED, N_CLASSES)) == 1.0
    # a class absent from both sides counts 0, as in sklearn with labels=... and zero_division=0
    assert float(macro_f1(np.array([0, 0]), np.array([0, 0]), 2)) == 0.5


def test_macro_f1_vectorised_over_resamples_equals_sklearn_per_resample():
    idx = np.random.default_rng(0).integers(0, EXPECTED.size, size=(300, EXPECTED.size))
    vectorised = macro_f1(EXPECTED[idx], PREDICTED[idx], N_CLASSES, axis=-1)
    assert vectorised.shape == (300,)
    expected = [sk_macro_f1(EXPECTED[i], PREDICTED[i]) for i in idx]
    np.testing.assert_allclose(vectorised, expected)


def test_statistic_ci_of_macro_f1_matches_a_sklearn_bootstrap():
    stat = functools.partial(macro_f1, n_classes=N_CLASSES)
    value, low, high = statistic_ci(stat, EXPECTED, PREDICTED)
    assert value == pytest.approx(sk_macro_f1(EXPECTED, PREDICTED))
    assert low < value < high
    # The same percentile interval computed row by row with sklearn on our own resamples.
    idx = np.random.default_rng(1).integers(0, EXPECTED.size, size=(2000, EXPECTED.size))
    dist = [sk_macro_f1(EXPECTED[i], PREDICTED[i]) for i in idx]
    assert low == pytest.approx(np.percentile(dist, 2.5), abs=0.04)
    assert high == pytest.approx(np.percentile(dist, 97.5), abs=0.04)


def test_statistic_ci_resamples_rows_together():
    # Paired columns: a resample of identical columns keeps them identical, so accuracy stays 1.
    x = np.arange(20) % 3
    assert statistic_ci(lambda a, b, axis=-1: np.mean(a == b, axis=axis), x, x) == (1.0, 1.0, 1.0)


def test_statistic_ci_of_one_row_is_a_point():
    assert statistic_ci(functools.partial(macro_f1, n_classes=2), np.array([1]), np.array([0])) == (0.0, 0.0, 0.0)


# -- McNemar --------------------------------------------------------------------------------------


def binomial_tail(wins: int, n: int) -> float:
    """P(X >= wins), X ~ Binomial(n, 1/2): the one-sided exact McNemar p-value, by hand."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


@pytest.mark.parametrize(("wins", "losses", "ties_right", "ties_wrong"), [(9, 1, 20, 10), (3, 3, 5, 5), (2, 0, 0, 8)])
def test_mcnemar_p_value_is_the_binomial_tail_of_the_disagreements(wins, losses, ties_right, ties_wrong):
    a = [1] * wins + [0] * losses + [1] * ties_right + [0] * ties_wrong
    b = [0] * wins + [1] * losses + [1] * ties_right + [0] * ties_wrong
    t = mcnemar_exact(a, b)
    n = len(a)
    assert (t.method, t.wins, t.losses, t.n) == ("mcnemar_exact", wins, losses, n)
    assert t.p_value == pytest.approx(binomial_tail(wins, wins + losses))
    assert t.diff == pytest.approx((wins - losses) / n)
    assert t.challenger == pytest.approx((wins + ties_right) / n)
    assert t.champion == pytest.approx((losses + ties_right) / n)
    assert t.low <= t.diff <= t.high


def test_mcnemar_known_values():
    assert mcnemar_exact([1] * 9 + [0], [0] * 9 + [1]).p_value == pytest.approx(11 / 1024)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]).p_value == 1.0  # no disagreement, no evidence
    assert mcnemar_exact([0] * 5, [1] * 5).p_value == 1.0  # only losses


# -- paired bootstrap -----------------------------------------------------------------------------


def test_paired_bootstrap_on_float_scores():
    champion = np.linspace(0.2, 0.6, 30)
    challenger = champion + np.tile([0.3, 0.1, -0.05], 10)
    t = paired_bootstrap(challenger, champion)
    assert t.method == "paired_bootstrap" and t.n == 30
    assert t.diff == pytest.approx(np.mean(challenger - champion))
    assert (t.wins, t.losses) == (20, 10)
    assert t.p_value < 0.01 and 0 < t.low < t.diff < t.high
    reverse = paired_bootstrap(champion, challenger)
    assert reverse.p_value > 0.99 and reverse.high < 0 and (reverse.wins, reverse.losses) == (10, 20)


def test_paired_bootstrap_degenerate_differences():
    assert paired_bootstrap([0.5] * 10, [0.5] * 10).p_value == 1.0  # no difference at all
    t = paired_bootstrap([0.6] * 10, [0.5] * 10, n_resamples=999)  # the same gain everywhere
    assert t.p_value == pytest.approx(1 / 1000) and t.low == pytest.approx(0.1) == t.high


def test_paired_bootstrap_noise_is_not_significant():
    rng = np.random.default_rng(5)
    champion = rng.random(40)
    challenger = champion + rng.normal(0, 0.2, 40).clip(-champion, 1 - champion)
    t = paired_bootstrap(challenger, champion)
    assert t.p_value > 0.05 and t.low < 0 < t.high


# -- paired_test ----------------------------------------------------------------------------------


def test_paired_test_picks_the_method_by_score_type():
    assert paired_test([1, 0, 1], [0, 0, 1]).method == "mcnemar_exact"
    assert paired_test([True, False], [1.0, 1.0]).method == "mcnemar_exact"
    cont = paired_test([0.9, 0.8, 0.7, 0.95], [0.5, 0.4, 0.6, 0.55])
    assert cont.method == "paired_bootstrap" and cont.p_value < 0.05
    assert paired_test([1, 0.5], [0, 0]).method == "paired_bootstrap"


@pytest.mark.parametrize(("a", "b"), [([1, 0], [1]), ([], [])])
def test_paired_test_refuses_unequal_or_empty_lists(a, b):
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_test(a, b)
