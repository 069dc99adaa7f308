"""Fine-tuning the embedded model: LoRA on the CPU, back into llama.cpp as a GGUF adapter.

Needs the `finetune` extra (torch, transformers, peft, gguf); imported lazily, so the rest of the
project (and a served fine-tuned model, which only needs llama.cpp) works without it.
"""

from pipelines.lm.finetune.lora import LoRASettings
from pipelines.lm.finetune.provider import (
    FinetuningDependenciesMissing,
    LlamaCppLoRAProvider,
    LoRATrainingJob,
    default_adapters_dir,
)

__all__ = [
    "FinetuningDependenciesMissing",
    "LlamaCppLoRAProvider",
    "LoRASettings",
    "LoRATrainingJob",
    "default_adapters_dir",
]
