"""Which DSPy engine a served provider LM calls its provider through: `serve lm_engine=`.

    python -m pipelines.serve lm_engine=lm15      # DSPy's own HTTP client instead of LiteLLM, in this server only

A registered model keeps the LM config it was trained with (LiteLLM by default: the route to every provider, and
what `budget.max_lm_calls` counts requests through). A server spends no budget, and on a small machine its CPU is
what bounds throughput: a `dspy.Predict` call costs 5.3-6.0 ms of CPU through LiteLLM and 2.1 ms on DSPy's own
engine (`lm15`), and served on two workers at a 0.1 s fake provider 16 clients got 125 req/s on `lm15` against 92
on LiteLLM in the same run. Retries are DSPy's on either engine (it calls LiteLLM with `num_retries=0` and honours
`Retry-After` itself), and its typed LM errors, which `pipelines.serving.errors` maps to 5xx, are the same.

`serve` checks the name and passes it in an environment variable; the model reads it as it loads. The embedded
model has no such choice (its engine is ours), so asking for one there is refused as it loads.
"""

from __future__ import annotations

import os
from typing import Any

ENV = "PIPELINES_SERVE_LM_ENGINE"
ENGINES = ("litellm", "lm15")
PROVIDER_LM = "pipelines.lm.provider_lm"


def checked_engine(value: Any) -> str | None:
    """`serve lm_engine=` as an engine name, or None (keep the registered one); refused, naming the options."""
    if value in (None, ""):
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
        raise ValueError(
            f"serve lm_engine={engine} applies to a provider LM ({PROVIDER_LM}); this model's LM is "
            f"{lm_config.get('_target_')!r}. Serve it without lm_engine."
        )
    return lm_config | {"engine": engine}
