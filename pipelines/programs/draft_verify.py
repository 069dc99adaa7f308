"""Two stages over any task contract: draft an answer with reasoning, then check and correct it.

Stage `draft` (ChainOfThought) reads the task's inputs and writes a free-text draft; stage `verify`
(Predict) reads the inputs and the draft and writes the task's outputs, told to keep a right draft and
fix a wrong one. Both signatures come from the contract, so any task works; the intermediate field is
called `draft` unless the task already has a field of that name.

    >>> program = DraftThenVerify(contract.to_dict())                 # doctest: +SKIP
    >>> [name for name, _ in program.named_predictors()]              # doctest: +SKIP
    ['draft.predict', 'verify']
    >>> with dspy.context(lm=lm):                                     # doctest: +SKIP
    ...     program(question="A pen costs $3. How much do 4 pens cost?").answer
"""

from __future__ import annotations

from collections.abc import Mapping

import dspy

from pipelines.data.contract import Contract, Field, as_contract

DRAFT_INSTRUCTIONS = "Write a short first draft of the answer."
# Told to keep a right draft. With the 0.5B model the verifier still sometimes recomputes and overrides one
# (GSM8K: 72 -> 144 on 1 of 3 rows, with this wording and with a plain "check and correct it"): a stronger LM,
# or demos of kept drafts (optimizer=bootstrap), are the levers.
VERIFY_INSTRUCTIONS = (
    "Below is a draft answer. Give the final answer: the draft's answer if it is right, the corrected one if not."
)


def free_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, `base_3`, ... : the first that is not a task field."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


class DraftThenVerify(dspy.Module):
    """`draft`: inputs -> draft (str, with reasoning); `verify`: inputs + draft -> the task's outputs.

    `draft_reasoning=False` drafts with Predict instead (reasoning hurts tiny models on labels).
    """

    def __init__(self, signature: Contract | Mapping, draft_reasoning: bool = True):
        super().__init__()
        contract = as_contract(signature)
        self.draft_field = free_name("draft", set(contract.input_names + contract.output_names))
        draft = Field(self.draft_field, "str", "a first answer, to be checked")
        task = contract.instructions.strip()
        # Each stage keeps the task's instructions (what the answer must look like) plus its own role.
        draft_sig = Contract(contract.inputs, [draft], f"{task}\n{DRAFT_INSTRUCTIONS}".strip()).signature()
        verify_sig = Contract([*contract.inputs, draft], contract.outputs, f"{task}\n{VERIFY_INSTRUCTIONS}".strip())
        self.draft = dspy.ChainOfThought(draft_sig) if draft_reasoning else dspy.Predict(draft_sig)
        self.verify = dspy.Predict(verify_sig.signature())
        self.output_names = contract.output_names

    def forward(self, **inputs) -> dspy.Prediction:
        draft = self.draft(**inputs)[self.draft_field]
        verified = self.verify(**inputs, **{self.draft_field: draft})
        return dspy.Prediction(**{name: verified[name] for name in self.output_names})
