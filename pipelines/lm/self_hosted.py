"""An OpenAI-compatible server of your own (vLLM, llama.cpp's server, Ollama), declared to DSPy as a provider.

    lm=openai_compatible lm.model=self-hosted/Qwen2.5-7B-Instruct lm.api_base=http://gpu-box:8000/v1

DSPy reads a model name's prefix as the provider whose metadata prices each call and describes the model. Under
`openai/<served name>` a model on your own box is looked up in OpenAI's entries after every call: a name OpenAI does
not list makes each lookup scan DSPy's whole metadata table (a served model pays it on every call, holding the GIL:
`python -m benchmarks.speed only=[serving]`), and a name OpenAI does list would be priced at OpenAI's rates.
`lm.self_hosted: true` declares the prefix (`self-hosted` above, or any name of your own) with DSPy's public
`dspy.lm15.register_provider`: an OpenAI chat server at `api_base` whose models no metadata describes
(`metadata_namespaces=()`), so nothing prices them and no lookup runs. Every engine reaches it: DSPy's own HTTP
client, and LiteLLM through its generic OpenAI door at the same address.

Declaring is per process and idempotent. The declaration is rebuilt from the LM config wherever a model loads
(training, `evaluate`, a serving worker), so nothing but the config travels with a registered model.
"""

from __future__ import annotations

from pipelines.lm.usage import unpriced_provider


def declare_self_hosted(model: str, api_base: str | None) -> None:
    """Declare `model`'s prefix as an OpenAI-compatible provider at `api_base`."""
    provider, _, served_name = model.partition("/")
    if not provider or not served_name:
        raise ValueError(
            f"lm.self_hosted needs lm.model as <server>/<served name>, e.g. self-hosted/Qwen2.5-7B-Instruct; "
            f"got {model!r}"
        )
    if not api_base:
        raise ValueError(f"lm.self_hosted needs lm.api_base, the server's OpenAI-compatible URL (for {model!r})")
    from dspy.lm15 import AccessPolicy, LM15Error, OpenAIChatCompat, ProviderDefinition, register_provider

    try:
        definition = ProviderDefinition.chat(
            AccessPolicy(provider=provider, env_keys=(), base_url=api_base), compat=OpenAIChatCompat()
        )
        # replace=True: another LM of this process may name the same prefix at another address. An LM binds the
        # declarations standing when it is built, and DSPy sends each LM's own api_base either way.
        register_provider(definition, metadata_namespaces=(), replace=True)
        unpriced_provider(provider)  # nor our own cost, nor the traces' (MLflow prices spans by the model's name)
    except (LM15Error, TypeError, ValueError) as exc:  # lm15 refuses a spelling a built-in provider has
        raise ValueError(
            f"lm.self_hosted cannot declare {provider!r} (from lm.model={model!r}) as your server: {exc}. "
            f"Name the server with a prefix of its own, e.g. lm.model=self-hosted/{served_name}, or set "
            f"lm.self_hosted=false to reach it as {model!r} through LiteLLM's provider of that name."
        ) from exc
