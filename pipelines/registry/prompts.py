"""Each predictor of a program as a prompt in MLflow's Prompt Registry: readable, diffable, usable without DSPy.

A logged program registers one prompt version per predictor, named `<model name>.<predictor>`, as a chat
template (the instructions and output format as the system message, each demo as a user/assistant pair,
the inputs as `{{field}}` variables) with the output fields as its `response_format`. The model links
them (`log_model(prompts=...)`), and `register` moves `challenger`/`champion` on them with the model's:

    >>> prompt = mlflow.genai.load_prompt("prompts:/travel_intents.predict@champion")   # doctest: +SKIP
    >>> prompt.format(text="my bag never arrived")          # messages for any chat API  # doctest: +SKIP
    [{'role': 'system', 'content': 'Classify ...'}, ..., {'role': 'user', 'content': 'text: my bag never arrived'}]
"""

from __future__ import annotations

import json
import re
from typing import Any

import dspy
import mlflow

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_.-]")  # MLflow's prompt names: mlflow.prompt.constants.PROMPT_NAME_RULE
PROMPT_URI = "prompts:/"


def prompt_name(model_name: str, predictor: str) -> str:
    """`travel_intents` + `predict.predict` -> `travel_intents.predict.predict` (other characters become `_`)."""
    return _NOT_ALLOWED.sub("_", f"{model_name}.{predictor}")


def _field_schema(annotation) -> dict[str, Any]:
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation).json_schema()
    except Exception:  # a custom type pydantic cannot describe: the prompt still says "a string"
        return {"type": "string"}


def response_format(signature: type[dspy.Signature]) -> dict[str, Any]:
    """The predictor's output fields as a JSON schema (what the program answers, typed)."""
    properties = {name: _field_schema(f.annotation) for name, f in signature.output_fields.items()}
    return {"type": "object", "properties": properties, "required": list(properties)}


def _format_line(name: str, schema: dict[str, Any]) -> str:
    kind = f"one of {', '.join(map(str, schema['enum']))}" if "enum" in schema else schema.get("type", "a value")
    return f"- {name}: {kind}"


def _user(signature: type[dspy.Signature], values: dict[str, Any]) -> str:
    return "\n".join(f"{name}: {values[name]}" for name in signature.input_fields if name in values)


MAX_TEMPLATE_DEMOS = 32  # more is a pool to retrieve from (`RetrievedDemos`), not a fixed prompt


def chat_template(predictor: dspy.Predict) -> list[dict[str, str]]:
    """System (instructions + output format), one user/assistant pair per demo, then the inputs as variables.

    A predictor holding more than `MAX_TEMPLATE_DEMOS` demos uses them as a pool, picking a few per input: no
    fixed prompt shows that, and hundreds of pairs would pass the registry's size limit, so the template says
    so in its system message and carries none of them (the model's `program.json` holds the pool)."""
    sig = predictor.signature
    fmt = response_format(sig)["properties"]
    system = "\n".join([sig.instructions, "", "Reply with one JSON object with these fields:"])
    system += "\n" + "\n".join(_format_line(n, s) for n, s in fmt.items())
    pool = len(predictor.demos) > MAX_TEMPLATE_DEMOS
    if pool:
        system += f"\n\n(Examples are retrieved per input from a pool of {len(predictor.demos)}; not shown here.)"
    messages = [{"role": "system", "content": system}]
    for demo in [] if pool else predictor.demos:
        values = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
        answer = {k: values[k] for k in sig.output_fields if k in values}
        if answer:  # a demo without outputs teaches nothing about the format
            messages.append({"role": "user", "content": _user(sig, values)})
            messages.append({"role": "assistant", "content": json.dumps(answer, default=str)})
    messages.append({"role": "user", "content": _user(sig, {n: f"{{{{{n}}}}}" for n in sig.input_fields})})
    return messages


def _model_config(lm_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The LM the prompt was optimised for: name and sampling settings only (never a key)."""
    lm_config = lm_config or {}
    config = {"model_name": lm_config.get("model")} | {
        k: lm_config[k] for k in ("temperature", "max_tokens") if lm_config.get(k) is not None
    }
    return config if isinstance(config["model_name"], str) else None


def register_program_prompts(
    program: dspy.Module, model_name: str, *, lm_config: dict | None = None, message: str | None = None
) -> list[str]:
    """Register every predictor of `program` as a new prompt version; returns their URIs (`prompts:/NAME/N`)."""
    run = mlflow.active_run()
    tags = {"run_id": run.info.run_id} if run else {}
    uris = []
    for name, predictor in program.named_predictors():
        kwargs = dict(
            name=prompt_name(model_name, name),
            template=chat_template(predictor),
            commit_message=message,
            tags=tags | {"predictor": name, "demos": str(len(predictor.demos))},
            response_format=response_format(predictor.signature),
            model_config=_model_config(lm_config),
        )
        try:
            version = mlflow.genai.register_prompt(**kwargs)
        except mlflow.exceptions.MlflowException as exc:
            # Two processes creating a prompt's first version at once (a sweep): the loser adds a version.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            version = mlflow.genai.register_prompt(**kwargs)
        uris.append(version.uri)
    return uris


def model_prompts(model_uri: str) -> list[tuple[str, int]]:
    """(name, version) of each prompt linked to the model at `model_uri` when it was logged."""
    out = []
    for uri in mlflow.models.get_model_info(model_uri).prompts or []:
        name, version = uri[len(PROMPT_URI) :].rsplit("/", 1)  # prompt names hold no "/"
        out.append((name, int(version)))
    return out


def move_prompt_aliases(model_uri: str, alias: str) -> None:
    """Point `alias` of each of the model's prompts at the version that model was logged with.

    A model logged without prompts (before this existed, or with `tracking.genai_surfaces=false`) moves none."""
    for name, version in model_prompts(model_uri):
        mlflow.genai.set_prompt_alias(name, alias, version)
