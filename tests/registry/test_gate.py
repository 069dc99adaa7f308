"""Statistics and the promotion gate on known inputs."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

from pipelines.registry.gate import decide
from pipelines.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap, paired_test


def table(correct, texts=None):
    texts = texts or [f"t{i}" for i in range(len(correct))]
    return pd.DataFrame({"text": texts, "correct": [float(c) for c in correct]})


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_data():
    mean, low, high = bootstrap_ci([1, 0] * 10)
    assert mean == 0.5 and low < 0.5 < high
    _, low_big, high_big = bootstrap_ci([1, 0] * 500)
    assert high_big - low_big < high - low
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)


def test_mcnemar_counts_only_disagreements():
    # challenger right where champion wrong on 9 examples, the reverse on 1, 30 ties
    a = [1] * 9 + [0] * 1 + [1] * 20 + [0] * 10
    b = [0] * 9 + [1] * 1 + [1] * 20 + [0] * 10
    t = mcnemar_exact(a, b)
    assert (t.wins, t.losses, t.n) == (9, 1, 40)
    assert t.p_value == pytest.approx(binomtest(9, 10, 0.5, alternative="greater").pvalue)
    assert t.p_value < 0.05
    assert t.diff == pytest.approx(0.2)


def test_paired_test_picks_the_method_by_score_type():
    assert paired_test([1, 0, 1], [0, 0, 1]).method == "mcnemar_exact"
    cont = paired_test([0.9, 0.8, 0.7, 0.95], [0.5, 0.4, 0.6, 0.55])
    assert cont.method == "paired_bootstrap" and cont.p_value < 0.05
    assert paired_bootstrap([0.5] * 10, [0.5] * 10).p_value == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="equal"):
        paired_test([1, 0], [1])


def test_gate_promotes_a_clearly_better_challenger():
    champion = table([1] * 20 + [0] * 20)
    challenger = table([1] * 20 + [1] * 15 + [0] * 5)  # 15 more right, none fewer
    d = decide(challenger, champion, alpha=0.05)
    assert d.promote and "significant improvement" in d.reason
    assert float(d.tags()["promotion.p_value"]) < 0.05


def test_gate_refuses_a_better_but_not_significant_challenger():
    champion = table([1] * 20 + [0] * 20)
    challenger = table([1] * 19 + [0] + [1] * 3 + [0] * 17)  # +3 / -1: higher score, p ~ 0.31
    d = decide(challenger, champion, alpha=0.05)
    assert not d.promote and "not significant" in d.reason
    assert d.tags()["promotion.decision"] == "kept_champion"


def test_gate_refuses_a_worse_challenger_and_honours_force_and_min_gain():
    champion = table([1] * 30 + [0] * 10)
    worse = table([1] * 20 + [0] * 20)
    assert not decide(worse, champion).promote
    forced = decide(worse, champion, force=True)
    assert forced.promote and forced.reason.startswith("forced")
    better = table([1] * 40)
    assert not decide(better, champion, min_gain=0.5).promote
    assert decide(better, None).reason == "no current champion"


def test_gate_refuses_to_pair_different_examples():
    with pytest.raises(ValueError, match="same examples"):
        decide(table([1, 0], ["a", "b"]), table([1, 0], ["a", "c"]))


def test_gate_refuses_when_a_required_metric_gets_worse():
    champion = table([1] * 20 + [0] * 20).assign(relevancy=[1.0] * 40)
    challenger = table([1] * 20 + [1] * 15 + [0] * 5).assign(relevancy=[0.5] * 40)  # better score, worse relevancy
    d = decide(challenger, champion, required=["relevancy"])
    assert not d.promote and "required metric got worse" in d.reason and "relevancy" in d.reason
    assert decide(challenger, champion, required=["relevancy"], tolerance=0.6).promote
    with pytest.raises(ValueError, match="not in both"):
        decide(challenger, champion, required=["faithfulness"])
