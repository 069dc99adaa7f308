"""The promotion gate (pairing by row_id, decisions) and the comparison report on known tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.registry.gate import align, decide
from pipelines.registry.promotion_report import comparison_report, disagreements, input_columns


def table(scores, ids=None) -> pd.DataFrame:
    ids = list(range(len(scores))) if ids is None else list(ids)
    return pd.DataFrame({"row_id": ids, "text": [f"t{i}" for i in ids], "score": [float(s) for s in scores]})


CHAMPION = [1] * 20 + [0] * 20
BETTER = [1] * 20 + [1] * 15 + [0] * 5  # 15 more right, none fewer


# -- pairing --------------------------------------------------------------------------------------


def test_align_pairs_by_row_id_not_by_position():
    champion = table([1, 0, 0, 1], ids=[10, 11, 12, 13])
    challenger = table([1, 1, 0, 1], ids=[13, 12, 11, 10])  # row 12 right, row 11 wrong, listed in reverse
    a, b = align(challenger, champion)
    assert list(zip(a, b, strict=True)) == [(1.0, 1.0), (1.0, 0.0), (0.0, 0.0), (1.0, 1.0)]  # ids 13, 12, 11, 10


def test_gate_decides_the_same_on_shuffled_rows():
    champion = table(CHAMPION)
    order = np.random.default_rng(0).permutation(40)
    shuffled = table(np.array(BETTER)[order], ids=order)
    d = decide(shuffled, champion)
    assert d.promote and (d.test.wins, d.test.losses, d.test.n) == (15, 0, 40)
    # Paired by position the same rows would look like a mix of wins and losses.
    by_position = decide(shuffled.assign(row_id=range(40)), champion)
    assert by_position.test.losses > 0


def test_gate_refuses_tables_on_different_examples():
    with pytest.raises(ValueError, match=r"not on the same examples \(1 rows only in the challenger's, 2 only"):
        decide(table([1, 0, 1], ids=[0, 1, 2]), table([1, 0, 1, 1], ids=[0, 1, 5, 6]))


@pytest.mark.parametrize("role", ["challenger", "champion"])
def test_gate_refuses_duplicate_row_ids(role):
    dup, ok = table([1, 0, 1], ids=[0, 1, 1]), table([1, 0, 1], ids=[0, 1, 2])
    tables = (dup, ok) if role == "challenger" else (ok, dup)
    with pytest.raises(ValueError, match=f"the {role}'s results list some row_id more than once"):
        decide(*tables)


@pytest.mark.parametrize("role", ["challenger", "champion"])
def test_gate_refuses_tables_without_row_id(role):
    bare, ok = table([1, 0]).drop(columns="row_id"), table([1, 0])
    tables = (bare, ok) if role == "challenger" else (ok, bare)
    with pytest.raises(ValueError, match=f"the {role}'s results have no 'row_id' column"):
        decide(*tables)


# -- decisions ------------------------------------------------------------------------------------


def test_a_significant_gain_promotes():
    d = decide(table(BETTER), table(CHAMPION), alpha=0.05)
    assert d.promote and d.reason.startswith("significant improvement at alpha=0.05")
    tags = d.tags()
    assert tags["promotion.decision"] == "promoted" and tags["promotion.test"] == "mcnemar_exact"
    assert float(tags["promotion.p_value"]) == pytest.approx(0.5**15, rel=1e-4)
    assert (tags["promotion.wins"], tags["promotion.losses"], tags["promotion.paired_examples"]) == ("15", "0", "40")
    assert float(tags["promotion.diff"]) == pytest.approx(0.375)


def test_a_better_but_not_significant_challenger_is_kept_out():
    challenger = [1] * 19 + [0] + [1] * 3 + [0] * 17  # +3 / -1: p = 5/16
    d = decide(table(challenger), table(CHAMPION), alpha=0.05)
    assert not d.promote and d.reason.startswith("not significant at alpha=0.05")
    assert d.test.p_value == pytest.approx(5 / 16)
    assert d.tags()["promotion.decision"] == "kept_champion"


def test_no_gain_keeps_the_champion():
    assert decide(table(CHAMPION), table(CHAMPION)).reason.startswith("no improvement")
    worse = decide(table([1] * 10 + [0] * 30), table(CHAMPION))
    assert not worse.promote and worse.reason.startswith("no improvement") and worse.test.diff == -0.25


def test_min_gain_guards_a_significant_but_small_gain():
    d = decide(table(BETTER), table(CHAMPION), min_gain=0.5)
    assert not d.promote and d.reason.startswith("gain 0.375 not above min_gain=0.5")
    assert decide(table(BETTER), table(CHAMPION), min_gain=0.3).promote


def test_float_scores_use_the_paired_bootstrap():
    champion = table(np.linspace(0.2, 0.6, 30))
    challenger = table(np.linspace(0.2, 0.6, 30) + 0.2)
    d = decide(challenger, champion)
    assert d.promote and d.tags()["promotion.test"] == "paired_bootstrap"
    assert d.test.diff == pytest.approx(0.2)


def test_force_promotes_and_records_the_evidence():
    forced = decide(table([1] * 10 + [0] * 30), table(CHAMPION), force=True)
    assert forced.promote and forced.reason.startswith("forced by the user (force=true)")
    assert "challenger 0.250 vs champion 0.500 on 40 paired examples" in forced.reason
    assert forced.tags()["promotion.test"] == "mcnemar_exact"


def test_no_champion_promotes_without_a_test():
    d = decide(table(BETTER), None)
    assert d.promote and d.reason == "no current champion" and d.test is None
    assert d.tags() == {"promotion.decision": "promoted", "promotion.reason": "no current champion"}


def test_too_many_unparsed_answers_are_never_promoted_not_even_first_or_forced():
    unparsed = [None] * 36 + ["AdapterParseError: not json"] * 4  # 10%: at the limit, not above it
    ok = table(BETTER).assign(parse_error=unparsed)
    assert decide(ok, None, max_error_rate=0.1).promote
    assert decide(ok, table(CHAMPION), max_error_rate=0.1).promote
    garbled = table([1] * 30 + [0] * 10).assign(parse_error=[None] * 30 + ["AdapterParseError: not json"] * 10)
    for d in (
        decide(garbled, None, max_error_rate=0.1),
        decide(garbled, table([0] * 40), max_error_rate=0.1),
        decide(garbled, table([0] * 40), max_error_rate=0.1, force=True),
    ):
        assert not d.promote and d.test is None
        assert d.reason.startswith("10 of 40 of the challenger's answers failed or did not parse (25.0%)")
        assert "registry.gate.max_error_rate=0.1" in d.reason and "check the adapter" in d.reason
    assert decide(garbled, None).promote  # no limit given: an unparsed answer is just a wrong one


def test_a_required_metric_that_gets_worse_blocks_promotion():
    champion = table(CHAMPION).assign(relevancy=[1.0] * 40)
    challenger = table(BETTER).assign(relevancy=[0.5] * 40)  # better score, worse relevancy
    d = decide(challenger, champion, required=["relevancy"])
    assert not d.promote and "required metric got worse (relevancy 0.500 < 1.000)" in d.reason
    assert decide(challenger, champion, required=["relevancy"], tolerance=0.6).promote
    assert decide(challenger, champion.assign(relevancy=[0.5] * 40), required=["relevancy"]).promote
    with pytest.raises(ValueError, match=r"\['faithfulness'\] are not in both"):
        decide(challenger, champion, required=["faithfulness"])


# -- the comparison report ------------------------------------------------------------------------


def two_output_table(intents, cities, ids=(0, 1, 2, 3)) -> pd.DataFrame:
    gold = {0: ("refund", "rome"), 1: ("check_in", "oslo"), 2: ("book", "lima"), 3: ("refund", "kyiv")}
    rows = []
    for i, intent, city in zip(ids, intents, cities, strict=True):
        exp_intent, exp_city = gold[i]
        rows.append(
            {
                "row_id": i,
                "text": f"message {i}",
                "expected.intent": exp_intent,
                "expected.city": exp_city,
                "predicted.intent": intent,
                "predicted.city": city,
                "score": ((intent == exp_intent) + (city == exp_city)) / 2,
                "latency_s": 0.1 * (i + 1),
                "error": None,
            }
        )
    return pd.DataFrame(rows)


def report_tables():
    a = two_output_table(["refund", "check_in", "cancel", "refund"], ["rome", "oslo", "lima", "kyiv"])
    # champion: same on rows 0 and 3, worse on row 1, better on row 2; listed in another order
    b = two_output_table(["book", "refund", "refund", "x"], ["lima", "kyiv", "rome", "paris"], ids=(2, 3, 0, 1))
    return a, b


def test_disagreements_lists_only_rows_scored_differently_with_inputs_and_both_outputs():
    a, b = report_tables()
    diff = disagreements("challenger", a, "champion", b)
    assert input_columns(a) == ["text"]
    assert list(diff.columns) == [
        "row_id",
        "text",
        "expected.intent",
        "expected.city",
        "predicted.intent (challenger)",
        "predicted.city (challenger)",
        "score (challenger)",
        "predicted.intent (champion)",
        "predicted.city (champion)",
        "score (champion)",
    ]
    assert diff["row_id"].tolist() == [1, 2]
    r1, r2 = diff.iloc[0], diff.iloc[1]
    assert (r1["text"], r1["expected.intent"], r1["expected.city"]) == ("message 1", "check_in", "oslo")
    assert (r1["predicted.intent (challenger)"], r1["predicted.city (challenger)"]) == ("check_in", "oslo")
    assert (r1["predicted.intent (champion)"], r1["predicted.city (champion)"]) == ("x", "paris")
    assert (r1["score (challenger)"], r1["score (champion)"]) == (1.0, 0.0)
    assert (r2["predicted.intent (challenger)"], r2["predicted.intent (champion)"]) == ("cancel", "book")
    assert (r2["score (challenger)"], r2["score (champion)"]) == (0.5, 1.0)


def test_comparison_report_shows_scores_decision_and_disagreements():
    a, b = report_tables()
    page = comparison_report("challenger", a, "champion", b, decide(a, b))
    assert page.startswith("<html>") and page.endswith("</html>")
    assert "challenger vs champion" in page and "Decision: keep the champion" in page
    assert "Examples where they score differently (2)" in page
    assert page.count("<tr class='win'>") == 1 and page.count("<tr class='loss'>") == 1
    for text in ("message 1", "message 2", "check_in", "paris", "lima", "cancel", "predicted.city (champion)"):
        assert text in page
    assert "message 0" not in page and "kyiv" not in page  # rows scored the same are left out
    assert "0.875" in page and "0.750" in page  # both mean scores


def test_comparison_report_escapes_html_and_handles_a_first_registration():
    a, b = report_tables()
    a.loc[a["row_id"] == 1, "text"] = "<script>alert(1)</script>"
    page = comparison_report("challenger", a, "champion", b)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "Decision" not in page
    first = comparison_report("challenger", a, "champion", None)
    assert "Examples where" not in first and "No results" not in first and "0.875" in first
    assert "No results were scored" in comparison_report("a", None, "b", None)
