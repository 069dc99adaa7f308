"""Build `dspy.LM` objects from config: the embedded llama.cpp model or a provider (DSPy's HTTP engine or LiteLLM).

Keys never enter config: a provider config names the environment variable that holds its key
(`api_key_env: OPENAI_API_KEY`) and the key is read here, at build time, into the in-memory LM only.
MLflow's DSPy tracing drops `api_key` from span attributes, and our model format (see
`pipelines.model`) stores this config, not the LM object, so the key stays in the environment.
The key's value is also registered with `pipelines.lm.secrets`, which scrubs it from error text (a provider
may echo it back) before that text reaches a trace, a tag, a log or a results table.

Every provider call is bounded: `timeout` seconds per request (LiteLLM's own default is 6,000 s) and
`num_retries` retries of transient failures (DSPy's retry loop: exponential backoff, 1, 2, 4 ... s, or the
provider's `Retry-After` on a 429).
"""

from __future__ import annotations

import os
from pathlib import Path

import dspy

from pipelines.lm.async_engine import ThreadedAsyncEngine
from pipelines.lm.llama_engine import FT_MARK, LlamaCppEngine
from pipelines.lm.secrets import register_secret
from pipelines.lm.self_hosted import declare_self_hosted
from pipelines.lm.usage import install_request_hook
from pipelines.lm.weights import check_gguf, file_digest, resolve_model_path


class MissingAPIKeyError(RuntimeError):
    pass


# One engine per model file and settings, per process: the session's LM and a loaded model's LM (evaluate,
# register, serving) share the llama.cpp contexts instead of loading the weights again.
_ENGINES: dict[tuple, LlamaCppEngine] = {}


def shared_engine(
    model_path: str, n_ctx: int, n_threads: int | None, seed: int, model_name: str, n_contexts: int = 1
) -> LlamaCppEngine:
    key = (model_path, n_ctx, n_threads, seed, model_name, n_contexts)
    if key not in _ENGINES:
        _ENGINES[key] = LlamaCppEngine(
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            seed=seed,
            model_name=model_name,
            n_contexts=n_contexts,
        )
    return _ENGINES[key]


def local_lm(
    model: str = "qwen2.5-coder-0.5b-instruct",
    model_path: str | None = None,
    lora_path: str | None = None,
    weights_cache_dir: str | None = None,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    temperature: float = 0.0,
    max_tokens: int = 256,
    seed: int = 0,
    cache: bool = True,
    num_retries: int = 1,
    finetune: dict | None = None,
    adapters_dir: str | None = None,
    n_contexts: int = 1,
) -> dspy.LM:
    """The embedded default: a GGUF model in-process (any GGUF file via `model_path`).

    `lora_path` applies a GGUF LoRA adapter (a fine-tuned model: the LM's id becomes
    `local/<model>:ft-<digest>`). `finetune` holds the LoRA settings our fine-tuning provider uses when
    BetterTogether/BootstrapFinetune fine-tunes this LM (see `pipelines.lm.finetune`).
    """
    from pipelines.lm.finetune.provider import LlamaCppLoRAProvider  # imports no torch: that waits for a fine-tune

    path = resolve_model_path(model_path, cache_dir=weights_cache_dir, model=model)
    engine = shared_engine(str(path), n_ctx, n_threads, seed, model, n_contexts)
    # "local/" rather than "openai/": DSPy would otherwise pick the OpenAI fine-tuning provider.
    model_id = f"local/{model}"
    if lora_path:
        check_gguf(Path(lora_path))
        digest = file_digest(lora_path)
        engine.register_adapter(digest, str(lora_path))
        model_id = f"{model_id}{FT_MARK}{digest}"
    return dspy.LM(
        model_id,
        engine=engine,
        async_engine=ThreadedAsyncEngine(engine),  # async programs (`aforward`) call it as well
        provider=LlamaCppLoRAProvider(engine, finetune, adapters_dir),
        temperature=temperature,
        max_tokens=max_tokens,
        cache=cache,
        num_retries=num_retries,
    )


def provider_lm(
    model: str,
    api_key_env: str | None = None,
    api_base: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 512,
    num_retries: int = 3,
    timeout: float | None = 30.0,
    cache: bool = True,
    engine: str = "auto",
    require_key: bool = True,
    self_hosted: bool = False,
    **extra,
) -> dspy.LM:
    """A hosted or self-served model (`openai/...`, `anthropic/...`, vLLM, Ollama).

    `engine` is DSPy's: `auto` (its default) sends what DSPy's own HTTP client can carry through it and the rest
    through LiteLLM, which is then imported on first use; `litellm` sends everything through LiteLLM; `lm15`
    refuses what DSPy's client cannot send. Budgets count requests on every engine (`pipelines.lm.usage`).

    `timeout` (seconds) bounds each request, hung or slow; `num_retries` retries the transient failures
    (timeouts, 429, 5xx, connection errors) with backoff. `timeout=None` waits as long as LiteLLM does.
    `self_hosted` declares the model's prefix as your own OpenAI-compatible server at `api_base`
    (`pipelines.lm.self_hosted`: priced at nothing, described by no provider's metadata)."""
    if timeout is not None and not timeout > 0:
        raise ValueError(f"lm.timeout must be a positive number of seconds or null, got {timeout!r}")
    if self_hosted:
        declare_self_hosted(model, api_base)
    kwargs = dict(extra)
    if timeout is not None:
        kwargs["timeout"] = float(timeout)  # dspy.LM hands it to LiteLLM with every request
    if api_key_env:
        key = os.environ.get(api_key_env)
        if key:
            register_secret(key)  # before any call can fail with it in the error text
            kwargs["api_key"] = key
        elif require_key:
            raise MissingAPIKeyError(
                f"LM {model!r} reads its API key from the environment variable {api_key_env}, which is not set. "
                f"Export it (export {api_key_env}=...) or point lm.api_key_env at the variable that holds it."
            )
    if "api_key" not in kwargs and not require_key:
        # A keyless self-hosted server: send a placeholder, never whatever OPENAI_API_KEY the
        # client library would otherwise pick up from the environment and send to that server.
        kwargs["api_key"] = "no-key"
    if api_base:
        kwargs["api_base"] = api_base
    install_request_hook()  # budgets count every request this LM sends, retries included
    return dspy.LM(
        model,
        temperature=temperature,
        max_tokens=max_tokens,
        num_retries=num_retries,
        cache=cache,
        engine=engine,
        **kwargs,
    )
