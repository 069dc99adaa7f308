"""Two stages for a task with free-text and label outputs: extract the slots, then classify with them in view.

Stage `extract` reads the task's inputs and writes its non-label outputs (e.g. `city`); stage `classify`
reads the inputs plus what was extracted and writes the label outputs (e.g. `intent`, a Literal over the
task's labels). The result holds every task output. Both signatures come from the contract.

    >>> program = ExtractThenClassify(contract.to_dict())             # doctest: +SKIP
    >>> [name for name, _ in program.named_predictors()]              # doctest: +SKIP
    ['extract', 'classify']
    >>> with dspy.context(lm=lm):                                     # doctest: +SKIP
    ...     program(text="my bag never showed up in Lisbon")
    Prediction(intent='lost_luggage', city='lisbon')
"""

from __future__ import annotations

from collections.abc import Mapping

import dspy

from pipelines.data.contract import Contract, ContractError, as_contract


class ExtractThenClassify(dspy.Module):
    """`extract`: inputs -> non-label outputs; `classify`: inputs + extracted -> label outputs.

    Needs at least one output of type `label` and one of another type (a ContractError, a ValueError, if not).
    """

    def __init__(self, signature: Contract | Mapping):
        super().__init__()
        contract = as_contract(signature)
        labels = [f for f in contract.outputs if f.type == "label"]
        slots = [f for f in contract.outputs if f.type != "label"]
        if not labels or not slots:
            raise ContractError(
                "ExtractThenClassify needs a task with at least one `label` output and one other output; "
                f"this task's outputs are {[(f.name, f.type) for f in contract.outputs]} "
                "(use program=predict for a single-kind task)"
            )
        task = contract.instructions.strip()
        names = ", ".join(f.name for f in slots)
        # Each stage is told which part of the task it does: a 0.5B model otherwise tries to answer all of it.
        extract = Contract(contract.inputs, slots, f"{task}\nThis step: extract only {names}.".strip())
        classify = Contract(
            [*contract.inputs, *slots],
            labels,
            f"{task}\nThis step: choose {', '.join(f.name for f in labels)}; {names} were already extracted.".strip(),
        )
        self.extract = dspy.Predict(extract.signature())
        self.classify = dspy.Predict(classify.signature())
        self.slot_names = [f.name for f in slots]
        self.output_names = contract.output_names

    def forward(self, **inputs) -> dspy.Prediction:
        extracted = self.extract(**inputs)
        slots = {name: extracted[name] for name in self.slot_names}
        classified = self.classify(**inputs, **slots)
        found = {**slots, **{name: classified[name] for name in classified.keys()}}
        return dspy.Prediction(**{name: found[name] for name in self.output_names})
