"""Free-text question answering (e.g. GSM8K math word problems), with optional step-by-step reasoning.

>>> qa = QA(instructions="Solve the problem; answer with the final number only.")
>>> with dspy.context(lm=lm):                                   # doctest: +SKIP
...     qa(question="Tom has 3 apples and buys 4 more. How many?").answer
'7'
"""

from __future__ import annotations

import dspy


class QA(dspy.Module):
    def __init__(
        self,
        instructions: str = "Answer the question.",
        reasoning: bool = True,
        input_field: str = "question",
        output_field: str = "answer",
        answer_desc: str = "the final answer only",
    ):
        super().__init__()
        signature = dspy.Signature(
            {
                input_field: (str, dspy.InputField()),
                output_field: (str, dspy.OutputField(desc=answer_desc)),
            },
            instructions,
        )
        self.predict = dspy.ChainOfThought(signature) if reasoning else dspy.Predict(signature)

    def forward(self, **inputs) -> dspy.Prediction:
        return self.predict(**inputs)
