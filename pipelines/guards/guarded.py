"""A program with guards around it: inputs checked before it runs, outputs after.

Under MLflow's DSPy autolog a guarded call is one `Guarded` span whose input is the row AFTER the input
guards, with the guard spans, the program's span and its LM calls as children (the LM span's input shows
the redacted text): the root of a trace of its own, or a child of the caller's (an evaluation's example,
whose span shows the same redacted row: `trace_inputs`).

    >>> guarded = Guarded(program, GuardSet.from_config(cfg.guard), contract)        # doctest: +SKIP
    >>> guarded(text="refund to ann@example.org please")._guard_hits                   # doctest: +SKIP
    [Hit(guard='pii', stage='inputs', field='text', kind='EMAIL_ADDRESS', action='redact', count=1)]
"""

from __future__ import annotations

import dspy

from pipelines.guards.base import GuardRefused
from pipelines.guards.guard_set import GuardSet, text_fields
from pipelines.guards.tracing import guarded_span


class Guarded(dspy.Module):
    def __init__(self, program: dspy.Module, guards: GuardSet, contract):
        super().__init__()
        self.program = program
        self.guards = guards
        self.inputs, self.outputs = text_fields(contract.inputs), text_fields(contract.outputs)

    def __call__(self, **inputs) -> dspy.Prediction:
        # Not dspy.Module's traced __call__: its span would record the inputs BEFORE the guards redact them.
        with guarded_span("Guarded") as span:
            prediction = self.forward(**inputs, _span=span)
            if span is not None:
                span.set_outputs({f: getattr(prediction, f, None) for f in self.outputs})
            return prediction

    def trace_inputs(self, inputs: dict) -> dict:
        """What a trace that starts before this program runs may show of `inputs` (an evaluation's example
        span): the row after the input guards; a refused row's guarded fields withheld."""
        try:
            return self.guards.check(inputs, "inputs", self.inputs)[0]
        except GuardRefused as refused:
            return {k: f"<refused by {refused.hit.guard}>" if k in self.inputs else v for k, v in inputs.items()}

    def forward(self, _span=None, **inputs) -> dspy.Prediction:
        row, hits = self.guards.check(inputs, "inputs", self.inputs)
        if _span is not None:
            _span.set_inputs(row)
        prediction = self.program(**row)
        answered = {f: getattr(prediction, f, None) for f in self.outputs}
        checked, out_hits = self.guards.check(answered, "outputs", self.outputs)
        for name in self.outputs:
            if checked[name] is not answered[name]:
                prediction[name] = checked[name]
        prediction._guard_hits = hits + out_hits  # underscore: not an output field
        return prediction
