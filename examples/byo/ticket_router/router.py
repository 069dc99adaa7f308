"""Two stages: `summarise(ticket) -> summary`, then `route(summary, tier) -> team`.

`summary` is an intermediate field: it is neither an input nor an output of the registered model,
whose signature is the task's contract (`ticket`, `tier` -> `team`).

    >>> router = Router(teams=["billing", "technical"])
    >>> with dspy.context(lm=lm):                                      # doctest: +SKIP
    ...     router(ticket="I was charged twice this month", tier="pro").team
    'billing'
"""

from __future__ import annotations

from typing import Literal

import dspy


class Summarise(dspy.Signature):
    """Summarise the customer's support ticket in one short sentence."""

    ticket: str = dspy.InputField()
    summary: str = dspy.OutputField(desc="one sentence")


def route_signature(teams: list[str]) -> type[dspy.Signature]:
    return dspy.Signature(
        {
            "summary": (str, dspy.InputField(desc="what the customer needs")),
            "tier": (str, dspy.InputField(desc="the customer's plan")),
            "team": (Literal[tuple(teams)], dspy.OutputField(desc="the team that should handle it")),
        },
        "Route the support ticket to the team that can resolve it.",
    )


class Router(dspy.Module):
    def __init__(self, teams: list[str]):
        super().__init__()
        self.summarise = dspy.Predict(Summarise)
        self.route = dspy.Predict(route_signature(list(teams)))

    def forward(self, ticket: str, tier: str) -> dspy.Prediction:
        summary = self.summarise(ticket=ticket).summary
        return self.route(summary=summary, tier=tier)
