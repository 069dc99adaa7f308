"""What one process builds once and every stage shares: DSPy's cache, MLflow autolog, the LMs, the adapter.

`main` runs train, evaluate and register in one process on one Session: the embedded model is loaded
once and autolog is configured once.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dspy
import mlflow

from pipelines.tracking import span_usage


@dataclass
class Session:
    lm: dspy.LM
    adapter: object | None = None
    prompt_lm: dspy.LM | None = None  # the optimisers' proposer / teacher / reflection LM; None: `lm`
    autolog: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, cfg) -> Session:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        dspy.configure_cache(disk_cache_dir=str(cfg.paths.dspy_cache_dir))
        autolog = OmegaConf.to_container(cfg.tracking.autolog, resolve=True)
        # Compile logging (child runs per MIPROv2 trial, the compiled program) is switched on around
        # the compile stage only (`compile_logging`), so evaluations outside it add no child runs.
        mlflow.dspy.autolog(**(autolog | {"log_compiles": False, "log_evals": False}))
        span_usage.install()  # tokens (and so cost) on each LM span: MLflow's usage views
        lm = instantiate(cfg.lm)
        adapter = instantiate(cfg.adapter) if cfg.get("adapter") else None
        prompt_lm = instantiate(cfg.prompt_lm) if cfg.get("prompt_lm") else None
        dspy.configure(lm=lm, adapter=adapter)
        return cls(lm=lm, adapter=adapter, prompt_lm=prompt_lm, autolog=autolog)

    @contextmanager
    def compile_logging(self):
        """Autolog's compile logging as configured, for the duration of a compile. Its per-evaluation child runs
        stay off: `pipelines.optimizers.progress` makes them, parented explicitly and named (`log_evals`)."""
        mlflow.dspy.autolog(**(self.autolog | {"log_evals": False}))
        try:
            yield
        finally:
            mlflow.dspy.autolog(**(self.autolog | {"log_compiles": False, "log_evals": False}))
