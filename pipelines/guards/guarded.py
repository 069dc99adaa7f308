"""A program with guards around it: inputs checked before it runs, outputs after.

Under MLflow's DSPy autolog a guarded call is one trace: a `Guarded` root span whose input is the row
AFTER the input guards, then the guard spans, the program's span and its LM calls as children (the LM
span's input shows the redacted text); the metric's assessment (logged on the thread's last trace)
lands on this same trace.

    >>> guarded = Guarded(program, GuardSet.from_config(cfg.guard), contract)        # doctest: +SKIP
    >>> guarded(text="refund to ann@example.org please")._guard_hits                   # doctest: +SKIP
    [Hit(guard='pii', stage='inputs', field='text', kind='EMAIL_ADDRESS', action='redact', count=1)]
"""

from __future__ import annotations

import dspy

from pipelines.guards.guard_set import GuardSet, text_fields
from pipelines.guards.tracing import root_span


class Guarded(dspy.Module):
    def __init__(self, program: dspy.Module, guards: GuardSet, contract):
        super().__init__()
        self.program = program
        self.guards = guards
        self.inputs, self.outputs = text_fields(contract.inputs), text_fields(contract.outputs)

    def __call__(self, **inputs) -> dspy.Prediction:
        # Not dspy.Module's traced __call__: its span would record the inputs BEFORE the guards redact them.
        with root_span("Guarded") as span:
            prediction = self.forward(**inputs, _span=span)
            if span is not None:
                span.set_outputs({f: getattr(prediction, f, None) for f in self.outputs})
            return prediction

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
