"""Which DSPy engine a served provider LM calls its provider through: `serve lm_engine=`.

    python -m pipelines.serve                      # auto: DSPy's own choice, as `dspy.LM` makes it by default
    python -m pipelines.serve lm_engine=litellm    # LiteLLM
    python -m pipelines.serve lm_engine=none       # whatever engine the registered model names

A registered model keeps the LM config it was trained with (`lm.engine`: `auto` by default, `litellm` where the
training config said so). On a small machine a server's CPU is what bounds throughput, so a scoring server lets DSPy
pick the engine, as `dspy.LM` does by default (`engine="auto"`):
its own HTTP client (`lm15`) for what that can send, LiteLLM for the rest. A `dspy.LM` call costs several times
less CPU on DSPy's engine than through LiteLLM, so a served model answers more requests a second on `auto`
(`python -m benchmarks.speed only=[serving] serving.lm_engine=litellm`, then `=auto`, compares them).
Retries are DSPy's on every engine (it calls LiteLLM with `num_retries=0` and honours `Retry-After` itself), and
its typed LM errors, which `pipelines.model.errors` maps to 5xx, are the same.

The choice is one of the model's serving bounds (`lm_engine` in `pipelines.model.limits`, `auto` by default), so it
applies in every scoring server, plain `mlflow models serve` included; `PIPELINES_SERVE_LM_ENGINE` (what `serve
lm_engine=` sets) overrides it, `none` keeps the registered engine. Elsewhere (batch scoring, evaluation, a notebook)
the registered engine runs unless that variable is set. The embedded model's engine is ours: `auto` leaves it as it
is (DSPy calls a custom engine directly), and naming `litellm` or `lm15` for it is refused as it loads.
"""

from __future__ import annotations

import os
from typing import Any

ENV = "PIPELINES_SERVE_LM_ENGINE"
AUTO = "auto"
ENGINES = (AUTO, "litellm", "lm15")
PROVIDER_LM = "pipelines.lm.provider_lm"


def checked_engine(value: Any) -> str | None:
    """`serve lm_engine=` as an engine name, or None (keep the registered one); refused, naming the options."""
    if value in (None, "") or str(value).lower() in ("none", "null"):
        return None
    if value not in ENGINES:
        raise ValueError(f"serve lm_engine must be one of {list(ENGINES)} or null (the registered one), got {value!r}")
    return value


def served_lm_config(lm_config: dict[str, Any], env=os.environ) -> dict[str, Any]:
    """The registered LM config, with the engine `serve` asked for (none asked: unchanged)."""
    engine = checked_engine(env.get(ENV))
    if engine is None:
        return lm_config
    if lm_config.get("_target_") != PROVIDER_LM:
        if engine == AUTO:
            return lm_config  # not a provider LM: its engine is the only one it has
        raise ValueError(
            f"serve lm_engine={engine} applies to a provider LM ({PROVIDER_LM}); this model's LM is "
            f"{lm_config.get('_target_')!r}. Serve it with lm_engine=auto or null."
        )
    return lm_config | {"engine": engine}
