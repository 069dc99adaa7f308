"""The MLflow model format for a DSPy program: JSON program state + the config to rebuild it.

Why not the stock `mlflow.dspy` flavor: it refuses multi-row input (no batch scoring, no
`spark_udf`) and cloudpickles `dspy.settings`, API keys included. Here the model holds:

- `program.json`: DSPy's own saved state (instructions, demos) of the compiled program;
- `spec.json`: the task's contract (the model's typed inputs and outputs), the configs of the program,
  the DSPy adapter and the LM (secrets redacted; a provider LM keeps only the NAME of its key variable,
  read from the serving environment), and the task's data settings (lineage);
- as `code_paths`, the `pipelines` package and the user's own program package (`log.py`);
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
import os
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from pipelines.config import instantiate
from pipelines.data.contract import Contract
from pipelines.guards import GuardSet, hit_labels, text_fields
from pipelines.model.errors import serving_error
from pipelines.model.inputs import bad_input, output_value, validate_rows
from pipelines.model.limits import ServingLimits, in_scoring_server
from pipelines.model.lm_engine import ENV as LM_ENGINE_ENV
from pipelines.model.lm_engine import served_lm_config
from pipelines.model.row_runner import RowRunner, bound_attempts, row_concurrency
from pipelines.model.server_threads import ServerThreads
from pipelines.model.spec import LORA_ARTIFACT
from pipelines.model.streaming import StreamResponse, stream_program_sync
from pipelines.programs.asynchronous import runnable_sync

log = logging.getLogger(__name__)


class DSPyProgramModel(mlflow.pyfunc.PythonModel):
    """Rebuilds the LM and program from `spec.json` at load time; holds no state when pickled."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        if LORA_ARTIFACT in context.artifacts:  # the fine-tuned weights, wherever MLflow put them
            spec["lm"]["lora_path"] = context.artifacts[LORA_ARTIFACT]
        self.spec = spec
        self.contract = Contract.from_dict(spec["contract"])
        # The bounds saved with the model (its `model_config`), as overridden where it loads (`limits`).
        self.limits = ServingLimits.from_config(getattr(context, "model_config", None)).with_environment()
        served = in_scoring_server() or os.environ.get(LM_ENGINE_ENV)  # an operator's variable applies anywhere
        engine = {LM_ENGINE_ENV: self.limits.lm_engine or "none"} if served else {}
        self.lm = instantiate(served_lm_config(spec["lm"], engine))  # a server may pick a lighter engine
        self.adapter = instantiate(spec["adapter"]) if spec.get("adapter") else None
        self.program = runnable_sync(instantiate(spec["program"]))  # an async program (`aforward`) too
        self.program.load(context.artifacts["program"])
        # Warm before the scoring server answers /ping: the embedded model's llama.cpp context loads now, not
        # on the first request (DSPy's `launch`; a provider LM's is a no-op).
        self.lm.launch()
        # Guards travel in the spec (`guard=` group at training time); a model logged before them has none.
        self.guards = GuardSet.from_config(spec.get("guard"))
        self._last = threading.local()  # per thread: the scoring server answers requests on several
        self.runner = RowRunner(self.limits.row_threads)
        self.server_threads = None
        if self.limits.configure_process and in_scoring_server():
            self.server_threads = ServerThreads(self.limits.request_threads)
            self.server_threads.at_load()
        if (seconds := self.limits.request_seconds()) is not None:
            bound_attempts(self.lm, seconds)  # no LM attempt outlives a request
        self.limits.apply()  # last: DSPy's caches and history, and in a server the whole loaded heap frozen

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
            raise bad_input(f"Expected a table with columns {names}, got {type(model_input).__name__}")
        rows = validate_rows(model_input, self.contract.inputs)
        too_many = getattr(self, "limits", None) and self.limits.check_rows(len(rows))
        if too_many:
            raise bad_input(too_many)
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
        answer = {f: output_value(getattr(prediction, f, None)) for f in self.contract.output_names}
        return self._guard(answer, "outputs")

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.server_threads is not None:
            self.server_threads.at_request()
        seconds = self.limits.request_seconds()  # in a scoring server: this request's time; elsewhere none
        deadline = time.monotonic() + seconds if seconds is not None else None
        rows, input_hits = self.guarded_rows(model_input)
        concurrency = row_concurrency(self.lm, self.limits.concurrency)
        try:
            predictions = self.runner.run(
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
        rows, _ = self.guarded_rows(model_input)
        if len(rows) != 1:
            raise bad_input(f"Streaming answers one row at a time, got {len(rows)}; send many rows to predict")
        outputs = self.contract.output_names
        for item in stream_program_sync(self.program, rows[0], lm=self.lm, adapter=self.adapter, outputs=outputs):
            if isinstance(item, StreamResponse):
                if item.chunk and self.streams_tokens():
                    yield {"field": item.signature_field_name, "delta": str(item.chunk)}
            else:
                yield {"prediction": self.guarded_outputs(item)[0]}
