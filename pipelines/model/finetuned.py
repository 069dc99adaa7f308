"""A fine-tuned program's weights travel with its model.

BetterTogether's weight step (or BootstrapFinetune) sets a fine-tuned LM on the program's predictors. Ours is a
GGUF LoRA file that llama.cpp applies on the embedded base at load time, logged as the `lora_weights` artifact, so
a served champion runs the fine-tuned weights offline; a provider-hosted fine-tune (OpenAI's) travels as its model
id in spec.json.
"""

from __future__ import annotations

from typing import Any

import dspy

from pipelines.model.spec import LORA_ARTIFACT


def finetuned_lm(program: dspy.Module) -> dspy.LM | None:
    """The fine-tuned LM the program's predictors carry (BetterTogether/BootstrapFinetune set it), if any."""
    from pipelines.lm.llama_engine import adapter_digest

    lms = {p.lm.model: p.lm for _, p in program.named_predictors() if p.lm is not None}
    # Ours: `local/<model>:ft-<digest>`; OpenAI's: `openai/ft:<base>:<org>::<id>`.
    tuned = {m: lm for m, lm in lms.items() if adapter_digest(m) or m.split("/")[-1].startswith("ft:")}
    if len(tuned) > 1:
        raise ValueError(
            f"The program's predictors use {len(tuned)} different fine-tuned models ({sorted(tuned)}); "
            "one model per program is supported (BootstrapFinetune's default multitask=True gives one)"
        )
    return next(iter(tuned.values()), None)


def attach_finetuned_weights(spec: dict[str, Any], program: dspy.Module) -> dict[str, str]:
    """Point `spec` at the program's fine-tuned model; returns extra model artifacts (the LoRA adapter)."""
    lm = finetuned_lm(program)
    if lm is None:
        return {}
    spec["finetuned_model"] = lm.model
    adapter_path = getattr(lm.provider, "adapter_path", None)  # ours: the LoRA file behind the id
    if adapter_path is not None and (path := adapter_path(lm.model)):
        return {LORA_ARTIFACT: path}
    spec["lm"]["model"] = lm.model  # a provider-hosted fine-tune is addressed by its id
    return {}
