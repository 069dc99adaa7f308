"""Budgets for an optimisation: stop cleanly at `max_lm_calls` or `max_cost_usd`, keep the best so far.

A DSPy callback checks the running usage before every LM call. When the budget is spent it raises
`BudgetExceeded`, a `BaseException` on purpose: DSPy swallows `Exception`s raised by callbacks, and its
evaluators and optimisers count `Exception`s from a program as failed examples and carry on, which
would keep spending. A `BaseException` unwinds the whole compile, like Ctrl-C does.

Meanwhile it remembers every program an optimiser fully evaluated (MIPROv2, BootstrapFewShotWithRandomSearch,
GEPA go through `dspy.Evaluate`); the best of those is the result of a stopped run. Optimisers that never
call `Evaluate` (SIMBA) fall back to the unoptimised program.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import dspy
from dspy.utils.callback import BaseCallback

from pipelines.lm.usage import Usage


class BudgetExceeded(BaseException):  # noqa: N818 (a signal, like KeyboardInterrupt)
    pass


@dataclass
class Budget:
    max_lm_calls: int | None = None
    max_cost_usd: float | None = None

    def exceeded(self, spent: dict[str, float]) -> str | None:
        if self.max_lm_calls is not None and spent["lm_calls"] >= self.max_lm_calls:
            return f"max_lm_calls={self.max_lm_calls} reached ({int(spent['lm_calls'])} calls)"
        if self.max_cost_usd is not None and spent["cost_usd"] >= self.max_cost_usd:
            return f"max_cost_usd={self.max_cost_usd} reached (${spent['cost_usd']:.4f})"
        return None


class BudgetGuard(BaseCallback):
    def __init__(self, budget: Budget, usage: Usage):
        self.budget, self.usage = budget, usage
        self.stopped_reason: str | None = None
        self.armed = True
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[dspy.Module, int]] = {}
        self.best: tuple[int, float, dspy.Module] | None = None  # (examples, score, program)

    # -- the budget ------------------------------------------------------------------------
    def on_lm_start(self, call_id, instance, inputs):
        if not self.armed:
            return
        reason = self.budget.exceeded(self.usage.summary())
        if reason:
            self.stopped_reason = reason
            raise BudgetExceeded(reason)

    # -- best program seen -----------------------------------------------------------------
    def on_evaluate_start(self, call_id, instance, inputs):
        program = inputs.get("program")
        devset = inputs.get("devset") or getattr(instance, "devset", None) or []
        if isinstance(program, dspy.Module):
            with self._lock:
                self._pending[call_id] = (program, len(devset))

    def on_evaluate_end(self, call_id, outputs, exception=None):
        with self._lock:
            program, n = self._pending.pop(call_id, (None, 0))
        if program is None or exception is not None or outputs is None:
            return
        score = float(getattr(outputs, "score", outputs))
        with self._lock:
            # Prefer evaluations on more examples (a full validation set over a minibatch), then score.
            if self.best is None or (n, score) > (self.best[0], self.best[1]):
                self.best = (n, score, copy.deepcopy(program))

    def best_program(self) -> dspy.Module | None:
        return self.best[2] if self.best else None
