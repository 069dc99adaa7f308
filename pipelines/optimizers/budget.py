"""Budgets for an optimisation: stop cleanly at `max_lm_calls` or `max_cost_usd`, keep the best so far.

`max_lm_calls` bounds the REQUESTS sent (`pipelines.lm.usage.count_requests`): each retry of a failed
provider call is one, and the count is checked as each request goes out, so a budget of N sends at most N,
even to a provider that fails every call. (The embedded model sends no requests; its answered calls count.)
`max_cost_usd` bounds LiteLLM's price of the tokens used so far.

A DSPy callback checks the budget before every LM call, and the request counter before every request (each attempt
DSPy sends, on any engine). When the budget is spent they raise `BudgetExceeded`, a `BaseException` on purpose: DSPy
swallows `Exception`s raised by callbacks (LiteLLM those raised by its hooks), and its evaluators and optimisers
count `Exception`s from a program as failed examples and carry on, which would keep spending. A `BaseException`
unwinds the whole compile, like Ctrl-C does.

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

from pipelines.lm.usage import RequestCount, Usage


class BudgetExceeded(BaseException):  # noqa: N818 (a signal, like KeyboardInterrupt)
    pass


@dataclass
class Budget:
    max_lm_calls: int | None = None  # requests sent, retries included; null: no limit
    max_cost_usd: float | None = None

    def __post_init__(self):
        # A zero or negative budget would stop before the first call, or never: a mistake, said before any spend.
        calls, cost = self.max_lm_calls, self.max_cost_usd
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls <= 0):
            raise ValueError(f"budget.max_lm_calls must be a positive whole number of LM calls or null, got {calls!r}")
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float) or not cost > 0):
            raise ValueError(f"budget.max_cost_usd must be a positive amount in USD or null, got {cost!r}")

    def exceeded(self, spent: dict[str, float]) -> str | None:
        """Why the budget is spent, or None. `spent["requests"]`: requests sent (provider LMs)."""
        calls = max(spent["lm_calls"], spent.get("requests", 0))
        if self.max_lm_calls is not None and calls >= self.max_lm_calls:
            return f"max_lm_calls={self.max_lm_calls} reached ({int(calls)} requests sent)"
        if self.max_cost_usd is not None and spent["cost_usd"] >= self.max_cost_usd:
            return f"max_cost_usd={self.max_cost_usd} reached (${spent['cost_usd']:.4f})"
        return None


class BudgetGuard(BaseCallback):
    def __init__(self, budget: Budget, usage: Usage, requests: RequestCount | None = None):
        self.budget, self.usage, self.requests = budget, usage, requests
        self.stopped_reason: str | None = None
        self.armed = True
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[dspy.Module, int]] = {}
        self.best: tuple[int, float, dspy.Module] | None = None  # (examples, score, program)

    # -- the budget ------------------------------------------------------------------------
    def spent(self, requests: int | None = None) -> dict[str, float]:
        sent = requests if requests is not None else (self.requests.count if self.requests else 0)
        return self.usage.summary() | {"requests": sent}

    def check(self, requests: int | None = None) -> None:
        if not self.armed:
            return
        reason = self.budget.exceeded(self.spent(requests))
        if reason:
            self.stopped_reason = reason
            raise BudgetExceeded(reason)

    def on_lm_start(self, call_id, instance, inputs):  # before each LM call (cached ones included)
        self.check()

    def before_request(self, sent: int) -> None:  # `RequestCount.gate`: before each request, retries too
        self.check(sent)

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
