"""The retrieved demos' own answer, with no LM: each output takes the value most of the `k` nearest pool
examples have (ties: the nearer example's value).

A reference, not a model to serve: it shows what retrieval alone scores on a task, so a recipe that puts an
LM on top of the same neighbours (`RetrievedDemos`) can be read against it. On Banking77-10 the 8 nearest
neighbours' vote scores 0.91 on the test rows where the 0.5B model reading them as demos scores 0.85
(README, "Optimisation quality benchmark").

    >>> program = NeighbourVote(contract.to_dict(), k=8)             # doctest: +SKIP
    >>> program.predict.demos = trainset                             # the pool, as for RetrievedDemos
    >>> program(text="my card still hasn't come").label              # no LM call
    'card_arrival'
"""

from __future__ import annotations

from collections import Counter

import dspy

from pipelines.programs.retrieved_demos import RetrievedDemos


class NeighbourVote(RetrievedDemos):
    def vote(self, demos: list) -> tuple[dict, int]:
        """Each output's most frequent value among `demos` (as `retrieve` orders them), and the fewest votes
        any output's winner got (how far the neighbours agree)."""
        nearest_first = demos[::-1] if self.nearest_last else demos
        answer, agreement = {}, len(demos)
        for name in self.predict.signature.output_fields:
            values = [demo.get(name) for demo in nearest_first if demo.get(name) is not None]
            counts = Counter(values)
            # max() keeps the first of equals: among the most frequent values, the nearest example's.
            answer[name] = max(values, key=lambda v: counts[v]) if values else None
            agreement = min(agreement, counts[answer[name]] if values else 0)
        return answer, agreement

    def forward(self, **inputs) -> dspy.Prediction:
        answer, _ = self.vote(self.retrieve(inputs))
        return dspy.Prediction(**answer)
