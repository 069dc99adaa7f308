"""LM layer: the embedded llama.cpp model and LiteLLM providers, as `dspy.LM` objects."""

from pipelines.lm.factories import MissingAPIKeyError, local_lm, provider_lm
from pipelines.lm.llama_engine import LlamaCppEngine
from pipelines.lm.weights import ModelWeightsError, embedded_model_path, resolve_model_path

__all__ = [
    "LlamaCppEngine",
    "MissingAPIKeyError",
    "ModelWeightsError",
    "embedded_model_path",
    "local_lm",
    "provider_lm",
    "resolve_model_path",
]
