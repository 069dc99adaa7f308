"""The promotion gate: promote a challenger only on significant evidence from the same examples.

    >>> decide(challenger_table, champion_table, alpha=0.05)            # doctest: +SKIP
    Decision(promote=True, reason='challenger 0.812 vs champion 0.700 on 80 paired examples: ...')

Both tables are per-example results on one split with one data digest, paired by `row_id`. The
paired test (McNemar's exact test for 0/1 scores, a paired bootstrap otherwise) is one-sided:
"is the challenger better?". `min_gain` guards against promoting a significant but negligible gain;
`required` names other per-example metrics (table columns) that must not get worse by more than `tolerance`.

A row with an `error` (the model's LM failed on it) is no evidence either way: a challenger whose results
hold any is refused outright, before any test, and `force` does not override that (it overrides the
evidence, not a failure). Failed champion rows refuse the comparison too: score the champion again.

An answer that did not parse is a wrong answer (scored 0), but a model that mostly answers unreadably is
broken, not merely weak: a challenger whose failed-or-unparsed share (`parse_error` column) is above
`max_error_rate` is never promoted, not as the first champion either, and not by `force`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipelines.evaluation.stats import PairedTest, paired_test


@dataclass
class Decision:
    promote: bool
    reason: str
    test: PairedTest | None = None

    def tags(self) -> dict[str, str]:
        out = {"promotion.decision": "promoted" if self.promote else "kept_champion", "promotion.reason": self.reason}
        if self.test is not None:
            t = self.test
            out |= {
                "promotion.test": t.method,
                "promotion.p_value": f"{t.p_value:.6g}",
                "promotion.diff": f"{t.diff:.6f}",
                "promotion.diff_ci95": f"[{t.low:.4f}, {t.high:.4f}]",
                "promotion.paired_examples": str(t.n),
                "promotion.wins": str(t.wins),
                "promotion.losses": str(t.losses),
            }
        return out


def align(challenger: pd.DataFrame, champion: pd.DataFrame, key: str = "row_id") -> tuple[pd.Series, pd.Series]:
    """The two `score` columns, paired by row id: both tables must hold exactly the same examples."""
    for role, table in (("challenger", challenger), ("champion", champion)):
        if key not in table:
            raise ValueError(f"the {role}'s results have no {key!r} column to pair examples by")
        if table[key].duplicated().any():
            raise ValueError(f"the {role}'s results list some {key} more than once")
    a, b = challenger.set_index(key)["score"], champion.set_index(key)["score"]
    if set(a.index) != set(b.index):
        only_a, only_b = len(set(a.index) - set(b.index)), len(set(b.index) - set(a.index))
        raise ValueError(
            f"challenger and champion results are not on the same examples ({only_a} rows only in the "
            f"challenger's, {only_b} only in the champion's)"
        )
    b = b.reindex(a.index)
    return a.astype(float).reset_index(drop=True), b.astype(float).reset_index(drop=True)


def worse_required(
    challenger: pd.DataFrame, champion: pd.DataFrame, required: list[str], tolerance: float
) -> list[str]:
    """The required per-example metrics (table columns) on which the challenger is worse than the champion."""
    missing = [m for m in required if m not in challenger or m not in champion]
    if missing:
        raise ValueError(
            f"required metric(s) {missing} are not in both models' per-example results "
            f"(columns: {sorted(set(challenger.columns) & set(champion.columns))})"
        )
    return [
        f"{m} {challenger[m].mean():.3f} < {champion[m].mean():.3f}"
        for m in required
        if challenger[m].mean() < champion[m].mean() - tolerance
    ]


def failed_rows(table: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of a results table whose example raised (non-null `error`); none for an older table without one."""
    if table is None or "error" not in table:
        return pd.DataFrame()
    return table[table["error"].notna()]


def unusable_share(table: pd.DataFrame) -> tuple[int, float]:
    """Rows that raised or whose answer did not parse, and their share of the table."""
    bad = pd.Series(False, index=table.index)
    for column in ("error", "parse_error"):
        if column in table:
            bad |= table[column].notna()
    return int(bad.sum()), float(bad.mean()) if len(table) else 0.0


def _too_unusable(table: pd.DataFrame, max_error_rate: float) -> Decision | None:
    count, share = unusable_share(table)
    if share <= max_error_rate:
        return None
    return Decision(
        False,
        f"{count} of {len(table)} of the challenger's answers failed or did not parse ({share:.1%}), above "
        f"registry.gate.max_error_rate={max_error_rate:g}: never promoted; check the adapter, the model and its server",
    )


def _refusal(role: str, failed: pd.DataFrame, total: int) -> Decision:
    first = failed.iloc[0]
    return Decision(
        False,
        f"the {role}'s results hold {len(failed)} failed example(s) of {total} (first: row {first.get('row_id')}: "
        f"{str(first['error'])[:300]}); a failure is not evidence: fix the LM and score again",
    )


def decide(
    challenger: pd.DataFrame,
    champion: pd.DataFrame | None,
    alpha: float = 0.05,
    min_gain: float = 0.0,
    force: bool = False,
    required: list[str] | None = None,
    tolerance: float = 0.0,
    max_error_rate: float = 1.0,
) -> Decision:
    for role, table in (("challenger", challenger), ("champion", champion)):
        if len(failed := failed_rows(table)):
            return _refusal(role, failed, len(table))
    if (unusable := _too_unusable(challenger, max_error_rate)) is not None:
        return unusable
    if champion is None:
        return Decision(True, "no current champion")
    a, b = align(challenger, champion)
    worse = worse_required(challenger, champion, list(required or []), tolerance)
    test = paired_test(a, b, confidence=1 - 2 * alpha)
    summary = (
        f"challenger {test.challenger:.3f} vs champion {test.champion:.3f} on {test.n} paired examples "
        f"({test.method}, p={test.p_value:.4g}, diff CI [{test.low:+.3f}, {test.high:+.3f}])"
    )
    if force:
        return Decision(True, f"forced by the user (force=true); {summary}", test)
    if worse:
        return Decision(False, f"a required metric got worse ({'; '.join(worse)}): {summary}", test)
    if test.p_value < alpha and test.diff > min_gain:
        return Decision(True, f"significant improvement at alpha={alpha}: {summary}", test)
    why = "no improvement" if test.diff <= 0 else f"not significant at alpha={alpha}"
    if test.p_value < alpha:
        why = f"gain {test.diff:.3f} not above min_gain={min_gain}"
    return Decision(False, f"{why}: {summary}", test)
