"""Two stages with DSPy's async API: `note(inputs) -> note`, then `answer(inputs, note) -> the task's outputs`.

Written as a user writes an async program: `aforward` awaits each predictor's `acall`, and there is no
`forward`. Served by the agent server, each stream is a coroutine on the server's event loop; the pipeline
runs it synchronously where it must (optimisers, evaluation, the scoring server's rows).

    >>> program = NoteThenAnswer(contract.to_dict())                          # doctest: +SKIP
    >>> with dspy.context(lm=lm):                                              # doctest: +SKIP
    ...     await program.acall(text="my suitcase never arrived")
    Prediction(label='lost_luggage')
"""

from __future__ import annotations

from collections.abc import Mapping

import dspy

from pipelines.data.contract import Contract, Field, as_contract


class NoteThenAnswer(dspy.Module):
    def __init__(self, signature: Contract | Mapping):
        super().__init__()
        contract = as_contract(signature)
        note = Field("note", "str", "what the customer asks for, in a few words")
        self.note = dspy.Predict(Contract(contract.inputs, [note], "Say in a few words what is asked.").signature())
        self.answer = dspy.Predict(
            Contract([*contract.inputs, note], contract.outputs, contract.instructions).signature()
        )
        self.output_names = contract.output_names

    async def aforward(self, **inputs) -> dspy.Prediction:
        noted = await self.note.acall(**inputs)
        answered = await self.answer.acall(**inputs, note=noted.note)
        return dspy.Prediction(**{name: answered[name] for name in self.output_names})
