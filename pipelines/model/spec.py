"""What a logged model stores to rebuild itself: the artifact names and `spec.json`.

`spec.json` holds the task's contract (the model's typed inputs and outputs), the configs of the program, the DSPy
adapter and the LM (secrets redacted; a provider LM keeps only the NAME of its key variable, read from the
serving environment), and the task's data settings (lineage).
"""

from __future__ import annotations

from typing import Any

from pipelines.config import redact
from pipelines.data.contract import Contract

PROGRAM_FILE = "program.json"
SPEC_FILE = "spec.json"
LORA_ARTIFACT = "lora_weights"  # a fine-tuned program's LoRA file (not to be confused with DSPy's adapter)


def build_spec(
    *,
    program_config: dict[str, Any],
    contract: Contract,
    lm_config: dict[str, Any],
    adapter_config: dict[str, Any] | None,
    task_config: dict[str, Any],
    num_threads: int = 1,
    guard_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the model stores to rebuild itself: plain, secret-free config (the task's settings travel too,
    so `evaluate` and `register` can score it on the same data it was chosen on)."""
    return redact(
        {
            "program": program_config,
            "contract": contract.to_dict(),
            "adapter": adapter_config,
            "lm": lm_config,
            "task": task_config,
            "num_threads": num_threads,
            "guard": guard_config or None,  # the `guard` group: the served model guards as it was evaluated
        }
    )
