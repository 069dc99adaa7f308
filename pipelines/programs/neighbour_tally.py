"""Retrieved demos, and how their answers split: the LM reads the neighbours and their tally, and decides.

`RetrievedDemos` shows the `k` most similar pool examples as demos; a small model then often follows the
nearest demo, or one it finds persuasive, against what most of them say (the 0.5B model on Banking77-10:
0.850 with 8 demos, where the 8 neighbours' majority alone scores 0.910). Here the predictor also gets an
input field, `similar_answers`, that counts each output value among the neighbours ("card_arrival: 5,
lost_or_stolen_card: 3"). The LM still answers every row, and can overrule the count where the message
says otherwise.

Each demo carries its own tally too: the count among its `k` nearest pool rows other than itself. So the
demos show the field as it is at prediction time, a count that usually matches the answer and sometimes
does not, rather than a field that is always right.

    >>> program = NeighbourTally(contract.to_dict(), k=8)          # doctest: +SKIP
    >>> program.predict.demos = trainset                           # the pool, as for RetrievedDemos
    >>> program.tally(program.nearest({"text": "my card still hasn't come"}))
    'card_arrival: 6, lost_or_stolen_card: 2'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import dspy

from pipelines.programs.retrieved_demos import RetrievedDemos

TALLY_FIELD = "similar_answers"


class NeighbourTally(RetrievedDemos):
    def __init__(self, signature, k: int = 8, **kwargs):
        super().__init__(signature, k=k, **kwargs)
        self.tallied = list(self.predict.signature.output_fields)  # the outputs whose values are counted
        if TALLY_FIELD in self.predict.signature.fields:
            raise ValueError(f"the task already has a field named {TALLY_FIELD!r}; NeighbourTally adds its own")
        desc = (
            f"how often each answer occurs among the {self.k} most similar solved examples; "
            "usually right, but the message decides"
        )
        self.predict.signature = self.predict.signature.append(TALLY_FIELD, dspy.InputField(desc=desc), type_=str)

    def tally(self, positions: Sequence[int]) -> str:
        """The neighbours' answers at pool `positions`, most frequent first (ties: the nearer's first)."""
        pool = self.predict.demos
        parts = []
        for name in self.tallied:
            counts = Counter(str(pool[i].get(name)) for i in positions if pool[i].get(name) is not None)
            text = ", ".join(f"{value}: {n}" for value, n in counts.most_common())
            parts.append(text if len(self.tallied) == 1 else f"{name}: {text}")
        return "; ".join(parts)

    def _demo(self, position: int) -> dspy.Example:
        """Pool row `position` with the tally of its own neighbours (itself left out)."""
        pool = self.predict.demos
        own = self.nearest(self._vectors(pool)[position], exclude=position)
        demo = pool[position]
        fields = demo.toDict() if isinstance(demo, dspy.Example) else dict(demo)  # loaded demos are dicts
        return dspy.Example(**fields, **{TALLY_FIELD: self.tally(own)})

    def forward(self, **inputs) -> dspy.Prediction:
        positions = self.nearest(inputs)
        demos = [self._demo(i) for i in (positions[::-1] if self.nearest_last else positions)]
        return self.ask({**inputs, TALLY_FIELD: self.tally(positions)}, demos)
