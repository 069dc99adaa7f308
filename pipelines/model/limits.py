"""Bounds of a serving process, set by `serve` and read by the model as it loads and answers.

`python -m pipelines.serve` passes them to the server process as environment variables (the scoring server
is MLflow's, started by `mlflow models serve`; the model is all of our code that runs inside it):

- `max_rows`: rows per request; more is a 400 that points at the batch scorer.
- `cache_dir`: DSPy's disk cache, where the project's config says (`paths.dspy_cache_dir`), not `~/.dspy_cache`.
- `memory_cache_entries` and `history_size`: DSPy's in-memory cache (1,000,000 entries by default) and each
  LM's call history (10,000) are bounded, so a long-running server's memory stays flat.

Once the model has loaded, the serving process also freezes its heap (`gc.freeze`): the ~550,000 objects that
DSPy, LiteLLM, MLflow and pandas leave behind at import are never scanned again. Python's full collection
walks all of them, holding the GIL, so every request in the worker waits, and request garbage triggers them
under load: the freeze keeps them off a request's tail latency
(`python -m benchmarks.speed only=[serving] serving.clients=[16] serving.workers=2` measures the p99).

A model loaded anywhere else (evaluate, a notebook, Spark) finds no variables and changes nothing.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import dspy

PREFIX = "PIPELINES_SERVE_"


@dataclass(frozen=True)
class ServingLimits:
    max_rows: int | None = None
    cache_dir: str | None = None
    memory_cache_entries: int | None = None
    history_size: int | None = None

    def environment(self) -> dict[str, str]:
        return {f"{PREFIX}{k.upper()}": str(v) for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_env(cls, env=os.environ) -> ServingLimits:
        def read(name: str, kind=int):
            value = env.get(f"{PREFIX}{name.upper()}")
            return kind(value) if value not in (None, "") else None

        return cls(
            max_rows=read("max_rows"),
            cache_dir=read("cache_dir", str),
            memory_cache_entries=read("memory_cache_entries"),
            history_size=read("history_size"),
        )

    def apply(self) -> None:
        """Process-wide settings, called once as the model loads: in a server `serve` started, DSPy's bounds and
        a frozen heap (see the module docstring); elsewhere (no variables), nothing."""
        if self == ServingLimits():
            return
        self.apply_to_dspy()
        gc.collect()  # what is garbage now is not frozen with the rest
        gc.freeze()

    def apply_to_dspy(self) -> None:
        if self.cache_dir is not None or self.memory_cache_entries is not None:
            kwargs = {"disk_cache_dir": self.cache_dir} if self.cache_dir else {}
            if self.memory_cache_entries is not None:
                kwargs["memory_max_entries"] = self.memory_cache_entries
            dspy.configure_cache(**kwargs)
        if self.history_size is not None:
            dspy.configure(max_history_size=self.history_size)

    def check_rows(self, n: int) -> str | None:
        """Why a request of `n` rows is refused, or None."""
        if self.max_rows is not None and n > self.max_rows:
            return (
                f"{n} rows in one request; this server takes at most {self.max_rows} (serve max_rows=...). "
                "Score large tables with the batch scorer: python -m pipelines.score input=... output=..."
            )
        return None
