"""One predictor over the task's whole contract: inputs -> outputs, optionally reasoning first.

The shipped default for any task: `program=predict` or `program=chain_of_thought`. The signature comes
from the task (its fields, types and instructions), so the same class classifies intents, answers
math questions or fills two slots at once.

    >>> step = SingleStep(contract.to_dict())                         # doctest: +SKIP
    >>> with dspy.context(lm=lm):                                     # doctest: +SKIP
    ...     step(text="I want my money back").label
    'refund_request'
"""

from __future__ import annotations

from collections.abc import Mapping

import dspy

from pipelines.data.contract import Contract, as_contract


class SingleStep(dspy.Module):
    def __init__(self, signature: Contract | Mapping, reasoning: bool = False, instructions: str | None = None):
        super().__init__()
        contract = as_contract(signature)
        sig = contract.signature(instructions)
        # ChainOfThought is one config switch away, but it hurts small models on classification: they loop and
        # restate the input (`python -m benchmarks.quality` compares the recipes on Banking77).
        self.predict = dspy.ChainOfThought(sig) if reasoning else dspy.Predict(sig)

    def forward(self, **inputs) -> dspy.Prediction:
        return self.predict(**inputs)
