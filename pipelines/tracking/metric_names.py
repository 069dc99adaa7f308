"""Run metric names, in one place: a short headline set that means the same in every entry point.

    score/<split>                    the evaluated program's score on a split: the task metric's mean
    score/<split>/ci_low, /ci_high   its 95% bootstrap interval
    baseline/<split>[/ci_low|ci_high]  the same for the program as written (`optimize` scores both)
    gain/<split>                     score minus baseline
    <split>/<detail>                 examples, errors, parse_failures, wall_s, latency_p50_s, lm_calls, cost_usd,
                                     macro_f1, refused, guard/<name>/hits, a judge's mean ...
    baseline/<split>/<detail>        the same details for the baseline
    compile/<detail>                 what the optimiser spent: lm_calls, lm_requests, tokens, cost_usd
    wall_s/<stage>                   each stage's wall time (baseline, compile, evaluate)
    gate/challenger, gate/champion, gate/p_value   `register`'s paired comparison on the gate split

The headline set is the same name wherever a score is logged (a train, an optimize, an evaluate run), and
per-class detail goes to tables (`eval/<split>_per_class.json`), not to dozens of scalar metrics. MLflow's
chart view groups metrics by the part before the first `/`: one section per kind.
"""

from __future__ import annotations

SCORE, BASELINE = "score", "baseline"


def score(split: str, role: str = SCORE) -> str:
    return f"{role}/{split}"


def ci_low(split: str, role: str = SCORE) -> str:
    return f"{role}/{split}/ci_low"


def ci_high(split: str, role: str = SCORE) -> str:
    return f"{role}/{split}/ci_high"


def detail(split: str, what: str, role: str = SCORE) -> str:
    """A split's detail metric: `dev/errors`, or `baseline/dev/errors` for the baseline."""
    return f"{split}/{what}" if role == SCORE else f"{role}/{split}/{what}"


def gain(split: str) -> str:
    return f"gain/{split}"


def compile_(what: str) -> str:
    return f"compile/{what}"


def wall_s(stage: str) -> str:
    return f"wall_s/{stage}"


GATE_CHALLENGER, GATE_CHAMPION, GATE_P_VALUE = "gate/challenger", "gate/champion", "gate/p_value"
