"""The MLflow model format for a DSPy program: JSON program state + the config to rebuild it.

Why not the stock `mlflow.dspy` flavor: it refuses multi-row input (no batch scoring, no
`spark_udf`) and cloudpickles `dspy.settings`, API keys included. Here the model holds:

- `program.json`: DSPy's own saved state (instructions, demos) of the compiled program;
- `spec.json`: the Hydra configs of the program, the adapter and the LM (secrets redacted; a
  provider LM keeps only the NAME of its key variable, read from the serving environment);
- the `pipelines` package as `code_paths`, so it loads wherever MLflow can load a pyfunc;
- for a fine-tuned program (BetterTogether's weight step), `lora_adapter.gguf`: the LoRA adapter that
  llama.cpp applies on the embedded base at load time, so a served champion runs the fine-tuned
  weights offline. (A provider-hosted fine-tune, e.g. OpenAI's, travels as its model id in spec.json.)

`predict` takes a DataFrame with the program's input columns and returns one row per input row.

    >>> model = mlflow.pyfunc.load_model("models:/travel-intents@champion")      # doctest: +SKIP
    >>> model.predict(pd.DataFrame({"text": ["where is my bag", "cancel my trip"]}))   # doctest: +SKIP
              label
    0  lost_luggage
    1  cancel_booking
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import dspy
import mlflow
import pandas as pd
from hydra.utils import instantiate
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from .config import PROJECT_ROOT, redact

PROGRAM_FILE = "program.json"
SPEC_FILE = "spec.json"
ADAPTER_ARTIFACT = "lora_adapter"


def program_fields(program: dspy.Module) -> tuple[list[str], list[str]]:
    """(input fields, output fields) of the program's predictors, in signature order."""
    inputs: list[str] = []
    outputs: list[str] = []
    for _, predictor in program.named_predictors():
        for name in predictor.signature.input_fields:
            if name not in inputs:
                inputs.append(name)
        for name in predictor.signature.output_fields:
            if name not in outputs and name != "reasoning":
                outputs.append(name)
    return inputs, outputs


def _bad_input(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    # INVALID_PARAMETER_VALUE is what MLflow's scoring server answers with HTTP 400.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def validate_rows(frame: pd.DataFrame, inputs: list[str]) -> list[dict[str, str]]:
    """Rows as dicts, refusing what the program cannot answer: missing columns, non-text, empty text."""
    missing = [c for c in inputs if c not in frame.columns]
    if missing:
        raise _bad_input(f"Missing input column(s) {missing}; the model expects {inputs}")
    if frame.empty:
        raise _bad_input(f"No rows to score; send at least one row with columns {inputs}")
    rows = frame[inputs].to_dict("records")
    for i, row in enumerate(rows):
        for col in inputs:
            value = row[col]
            if not isinstance(value, str):
                raise _bad_input(f"Row {i}, column {col!r}: expected a string, got {type(value).__name__}")
            if not value.strip():
                raise _bad_input(f"Row {i}, column {col!r}: empty text")
    return rows


class DSPyProgramModel(mlflow.pyfunc.PythonModel):
    """Rebuilds the LM and program from `spec.json` at load time; holds no state when pickled."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        if ADAPTER_ARTIFACT in context.artifacts:  # the fine-tuned weights, wherever MLflow put them
            spec["lm"]["lora_path"] = context.artifacts[ADAPTER_ARTIFACT]
        self.spec = spec
        self.lm = instantiate(spec["lm"])
        self.adapter = instantiate(spec["adapter"]) if spec.get("adapter") else None
        self.program = instantiate(spec["program"])
        self.program.load(context.artifacts["program"])
        self.inputs, self.outputs = spec["inputs"], spec["outputs"]
        self.num_threads = int(spec.get("num_threads", 1))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        elif not isinstance(model_input, pd.DataFrame):
            raise _bad_input(f"Expected a table with columns {self.inputs}, got {type(model_input).__name__}")
        rows = validate_rows(model_input, self.inputs)
        with dspy.context(lm=self.lm, adapter=self.adapter):
            if self.num_threads > 1 and len(rows) > 1:
                examples = [dspy.Example(**row).with_inputs(*self.inputs) for row in rows]
                predictions = self.program.batch(examples, num_threads=self.num_threads, disable_progress_bar=True)
            else:
                predictions = [self.program(**row) for row in rows]
        return pd.DataFrame([{f: getattr(p, f, None) for f in self.outputs} for p in predictions])


def project_requirements() -> list[str]:
    """The installed project's own pinned dependencies: what a serving environment needs."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("dspy-mlflow-pipelines") or []
    except PackageNotFoundError:
        return ["mlflow", "dspy", "pandas", "hydra-core", "llama-cpp-python"]
    return [r for r in reqs if "extra ==" not in r]


def build_spec(cfg, labels: list[str] | None, program: dspy.Module, num_threads: int = 1) -> dict[str, Any]:
    from .config import to_container

    program_cfg = to_container(cfg.program)
    if labels:
        program_cfg["labels"] = labels
    inputs, outputs = program_fields(program)
    return redact(
        {
            "program": program_cfg,
            "adapter": to_container(cfg.adapter) if cfg.get("adapter") else None,
            "lm": to_container(cfg.lm),
            "inputs": inputs,
            "outputs": outputs,
            "num_threads": num_threads,
            "task": str(cfg.task.name),
        }
    )


def finetuned_lm(program: dspy.Module) -> dspy.LM | None:
    """The fine-tuned LM the program's predictors carry (BetterTogether/BootstrapFinetune set it), if any."""
    from .lm.llama_engine import adapter_digest

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
        return {ADAPTER_ARTIFACT: path}
    spec["lm"]["model"] = lm.model  # a provider-hosted fine-tune is addressed by its id
    return {}


def log_program_model(
    program: dspy.Module, spec: dict[str, Any], input_example: pd.DataFrame | None = None, name: str = "model"
) -> str:
    """Log `program` as a pyfunc model in the active run; returns the model URI."""
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", f) for f in spec["inputs"]]),
        outputs=Schema([ColSpec("string", f) for f in spec["outputs"]]),
    )
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
            code_paths=[str(PROJECT_ROOT / "pipelines")],
            signature=signature,
            input_example=input_example,
            pip_requirements=project_requirements(),
        )
    return info.model_uri
