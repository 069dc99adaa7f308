"""A compiled program in readable form: each predictor's instructions and demos, as JSON and Markdown.

>>> describe(program)["predictors"][0]["instructions"]        # doctest: +SKIP
"Classify the airline customer's message into exactly one intent."
"""

from __future__ import annotations

from typing import Any

import dspy
import mlflow


def describe(program: dspy.Module) -> dict[str, Any]:
    predictors = []
    for name, predictor in program.named_predictors():
        demos = [demo.toDict() if hasattr(demo, "toDict") else dict(demo) for demo in predictor.demos]
        predictors.append(
            {
                "name": name,
                "instructions": predictor.signature.instructions,
                "inputs": list(predictor.signature.input_fields),
                "outputs": list(predictor.signature.output_fields),
                "demos": [{k: v for k, v in d.items() if not k.startswith("_")} for d in demos],
            }
        )
    return {"predictors": predictors}


def to_markdown(description: dict[str, Any]) -> str:
    lines = []
    for p in description["predictors"]:
        lines += [f"## `{p['name']}`", "", "**Instructions**", "", p["instructions"], ""]
        lines += [f"**Inputs** {', '.join(p['inputs'])} -> **outputs** {', '.join(p['outputs'])}", ""]
        lines += [f"**Demos** ({len(p['demos'])})", ""]
        if p["demos"]:
            keys = list(dict.fromkeys(k for d in p["demos"] for k in d))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for d in p["demos"]:
                cells = [str(d.get(k, "")).replace("|", "\\|").replace("\n", " ") for k in keys]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def log_program(program: dspy.Module, prefix: str = "program") -> None:
    description = describe(program)
    mlflow.log_dict(description, f"{prefix}/program.json")
    mlflow.log_text(to_markdown(description), f"{prefix}/program.md")
