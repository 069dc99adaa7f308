"""The three shipped multi-stage programs, each on its task, with the REAL embedded model on tiny slices:
optimize (BootstrapFewShot demos per predictor) -> register -> serve over HTTP, with one trace span per stage.

- `gsm8k_agent`: a ReAct agent calling a calculator and a unit converter;
- `gsm8k_draft_verify`: draft with reasoning, then check and correct;
- `travel_requests`: two outputs (intent, city): extract the city, then classify with it in view.
Scores are logged, not asserted (a 0.5B model on 2 examples is noise); shapes and stages are.
"""

from __future__ import annotations

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from pipelines.optimize import optimize
from pipelines.register import register
from tests.conftest import compose_cfg, reset_mlflow_state
from tests.helpers import serving_champion

pytestmark = pytest.mark.slow

CASES = {
    # experiment: (request rows, output fields, predictor names the program must have)
    "gsm8k_agent": (
        [{"question": "Tom has 3 boxes of 4 apples. How many apples?"}, {"question": "What is 12 minus 5?"}],
        {"answer"},
        {"react", "extract"},
    ),
    "gsm8k_draft_verify": (
        [{"question": "A pen costs 2 dollars. How much do 6 pens cost?"}, {"question": "What is 9 plus 10?"}],
        {"answer"},
        {"draft", "verify"},
    ),
    "travel_requests": (
        [{"text": "book me a flight to paris next friday"}, {"text": "what's the weather like in tokyo"}],
        {"intent", "city"},
        {"extract", "classify"},
    ),
}
SLICE = [
    "optimizer=bootstrap",
    "optimizer.compiler.max_bootstrapped_demos=1",
    "optimizer.compiler.max_labeled_demos=1",
    "task.data.train_size=2",
    "task.data.val_size=0",
    "task.data.dev_size=2",
    "task.data.test_size=1",
    "baseline=false",
    "report_splits=[dev]",
]


@pytest.mark.parametrize("experiment", list(CASES))
def test_multistage_program_optimizes_registers_and_serves(experiment, tmp_path):
    rows, outputs, stages = CASES[experiment]
    reset_mlflow_state()
    cfg = compose_cfg("optimize", tmp_path, [f"experiment={experiment}", *SLICE], fake=False)
    result = optimize(cfg)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["score/dev"] <= 1.0

    # Every stage is a predictor the optimiser could tune, and each left its own span in the dev traces.
    spec_program = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().program
    names = [name for name, _ in spec_program.named_predictors()]
    assert all(any(stage in name for name in names) for stage in stages), names
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=result.run_id, return_type="list")
    assert traces, "the dev evaluation left no traces"
    lm_spans = [s for s in traces[0].data.spans if str(s.span_type) in ("LLM", "CHAT_MODEL")]
    assert len(lm_spans) >= len(stages), [s.name for s in traces[0].data.spans]
    if experiment == "gsm8k_agent":
        assert any(str(s.span_type) == "TOOL" for t in traces for s in t.data.spans), "the agent never called a tool"

    registered = register(cfg, run_id=result.run_id)
    assert registered.promoted  # first registration of this model name
    # timeout: a ReAct agent makes several LM calls per row; on a loaded machine two rows pass the 60 s default.
    served = [f"registry.name={cfg.registry.name}", "timeout=600"]
    with serving_champion(cfg.tracking.uri, overrides=served) as url:
        reply = requests.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=600)
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert len(predictions) == len(rows)
        assert all(set(p) == outputs for p in predictions), predictions
