"""A cascade: the retrieved neighbours answer where they agree, the LM (reading them as demos) where they do not.

`NeighbourVote` answers every input with the `k` nearest pool examples' majority and no LM; `RetrievedDemos`
asks the LM with those same examples as demos. Here the vote stands when at least `min_agreement` of the `k`
neighbours share the winning value (for every output), and otherwise the LM answers, with exactly the request
`RetrievedDemos` sends. Serving then spends the model's time only on the inputs the neighbours dispute.

With k=8 and `min_agreement=5` the vote answers most rows and the LM the rest; `python -m benchmarks.quality`
(recipe `knn_cascade`) measures what the LM adds on Banking77-10.

    >>> program = VoteOrPredict(contract.to_dict(), k=8, min_agreement=5)     # doctest: +SKIP
    >>> program.predict.demos = trainset                                      # the pool, as for RetrievedDemos
    >>> program(text="my card still hasn't come").label                       # 7 of 8 agree: no LM call
    'card_arrival'
"""

from __future__ import annotations

import dspy
import mlflow

from pipelines.programs.neighbour_vote import NeighbourVote


class VoteOrPredict(NeighbourVote):
    def __init__(self, signature, k: int = 8, min_agreement: int = 5, **kwargs):
        super().__init__(signature, k=k, **kwargs)
        if not 1 <= int(min_agreement) <= self.k:
            raise ValueError(f"min_agreement must be between 1 and k={self.k}, got {min_agreement!r}")
        self.min_agreement = int(min_agreement)

    def forward(self, **inputs) -> dspy.Prediction:
        demos = self.retrieve(inputs)
        answer, agreement = self.vote(demos)
        by_vote = bool(demos) and agreement >= self.min_agreement
        if (span := mlflow.get_current_active_span()) is not None:  # which path answered, on the trace
            span.set_attributes({"neighbour_agreement": agreement, "answered_by": "vote" if by_vote else "lm"})
        return dspy.Prediction(**answer) if by_vote else self.ask(inputs, demos)
