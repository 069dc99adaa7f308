"""`optimize` (and `train`, its preset) with each optimiser, budgets and sweeps, on tiny slices with the fake LM."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys

import dspy
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.config import PROJECT_ROOT
from pipelines.data.contract import Contract
from pipelines.data.task import Task
from pipelines.optimize import OptimizeResult, optimize
from pipelines.train import train

TINY = ["task.data.train_size=8", "task.data.val_size=8", "task.data.dev_size=8", "task.data.test_size=8"]
# Each optimiser shrunk to a handful of steps; the configs themselves are the shipped ones.
SHRINK = {
    "miprov2": [
        "optimizer.compiler.auto=null",
        "optimizer.compiler.num_candidates=2",
        "optimizer.compile_args.num_trials=3",
        "optimizer.compile_args.minibatch_size=4",
    ],
    "simba": ["optimizer.compiler.bsize=4", "optimizer.compiler.max_steps=2", "optimizer.compiler.num_candidates=2"],
    "gepa": ["optimizer.compiler.auto=null", "optimizer.compiler.max_metric_calls=40"],
    "bootstrap_rs": ["optimizer.compiler.num_candidate_programs=2"],
    "bootstrap": [],
    "labeled_fewshot": [],
}


def contract_of(cfg) -> Contract:
    return Contract.from_config(cfg.task.inputs, cfg.task.outputs, cfg.task.instructions)


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_each_optimizer_runs_end_to_end(make_cfg, name):
    cfg = make_cfg("optimize", [f"optimizer={name}", *TINY, *SHRINK[name]])
    result = optimize(cfg)
    run = MlflowClient().get_run(result.run_id)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["optimizer"] == name and tags["entry_point"] == "optimize"
    for split in ("dev", "test"):
        assert 0.0 <= m[f"baseline/{split}"] <= 1.0
        assert 0.0 <= m[f"score/{split}"] <= 1.0
        assert m[f"gain/{split}"] == pytest.approx(m[f"score/{split}"] - m[f"baseline/{split}"])
        assert result.scores[split] == pytest.approx(m[f"score/{split}"])
        assert result.baseline[split] == pytest.approx(m[f"baseline/{split}"])
    assert "score/val" not in m and "score/train" not in m  # the optimiser's own splits are never reported
    for stage in ("baseline", "compile", "evaluate"):
        assert m[f"wall_s/{stage}"] >= 0
    assert m["compile/cost_usd"] == 0.0
    if name != "labeled_fewshot":  # LabeledFewShot only copies examples
        assert m["compile/lm_calls"] > 0 and m["compile/input_tokens"] > 0
    assert tags["stopped_by_budget"] == "false"
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "program")}
    assert artifacts == {"program/program.json", "program/program.md"}
    assert tags["model_uri"] == result.model_uri
    assert mlflow.models.get_model_info(result.model_uri).signature == contract_of(cfg).mlflow_signature()


def test_train_is_optimize_with_the_train_preset(make_cfg):
    cfg = make_cfg("train", TINY)
    result = train(cfg)
    run = MlflowClient().get_run(result.run_id)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["entry_point"] == "train" and tags["optimizer"] == "bootstrap"
    # No baseline stage, scored on dev only: the held-out test split is never looked at.
    assert result.baseline == {} and set(result.scores) == {"dev"}
    assert 0.0 <= m["score/dev"] <= 1.0 and result.selection_score == pytest.approx(m["score/dev"])
    assert not {"baseline/dev", "wall_s/baseline", "gain/dev", "score/test", "baseline/test"} & set(m)
    assert m["wall_s/compile"] >= 0 and m["wall_s/evaluate"] >= 0
    assert m["compile/lm_calls"] > 0
    assert tags["model_uri"] == result.model_uri


@pytest.mark.parametrize(
    ("task", "outputs"),
    [("travel_intents", {"label": "string"}), ("travel_requests", {"intent": "string", "city": "string"})],
)
def test_the_model_signature_is_the_task_contract(make_cfg, task, outputs):
    cfg = make_cfg("train", [f"task={task}", "optimizer=none", *TINY])
    result = train(cfg)
    signature = mlflow.models.get_model_info(result.model_uri).signature
    assert {c.name: c.type.name for c in signature.inputs.inputs} == {"text": "string"}
    assert {c.name: c.type.name for c in signature.outputs.inputs} == outputs
    assert signature == contract_of(cfg).mlflow_signature()
    # The stored contract carries the label sets found in the data; the model answers every output.
    model = mlflow.pyfunc.load_model(result.model_uri)
    spec = model.unwrap_python_model().spec
    labels = Task.from_config(cfg.task).output_label_sets
    for name, field in spec["contract"]["outputs"].items():
        assert field.get("labels") == labels.get(name), name
    predictions = model.predict(pd.DataFrame({"text": ["my suitcase never arrived in Rome", "cancel my trip"]}))
    assert list(predictions.columns) == list(outputs) and len(predictions) == 2


def test_demos_change_the_fake_lms_answers():
    """Guards the fake itself: if demos stopped mattering, the optimiser tests would prove little."""
    from pipelines.programs import SingleStep

    from ..fakes import fake_lm

    contract = Contract.from_config(
        {"text": {"type": "str"}}, {"label": {"type": "label", "labels": ["book_flight", "flight_status"]}}
    )
    step = SingleStep(contract.to_dict())
    query = "any news about the arrival time of QR 8 tonight"  # no keyword rule fires
    with dspy.context(lm=fake_lm(), adapter=dspy.JSONAdapter()):
        assert step(text=query).label == "book_flight"  # the default
        step.predict.demos = [dspy.Example(text="what is the arrival time of LX 318", label="flight_status")]
        assert step(text=query).label == "flight_status"  # the nearest demo's label


class RecordingOptimizer(dspy.teleprompt.Teleprompter):
    """A tiny optimiser for `optimizer.compiler._target_`: records what `compile` receives, returns the student."""

    calls: list[dict] = []

    def __init__(self, **settings):
        super().__init__()
        self.settings = settings

    def compile(self, student, *, trainset, teacher=None, valset=None, **kwargs):
        RecordingOptimizer.calls.append({"trainset": trainset, "valset": valset, **kwargs})
        return student


@pytest.mark.parametrize(("name", "gets_valset"), [("bootstrap_rs", True), ("bootstrap", False)])
def test_the_optimizer_trains_on_train_and_selects_on_val_never_dev(make_cfg, monkeypatch, name, gets_valset):
    monkeypatch.setattr(RecordingOptimizer, "calls", [])
    target = f"{__name__}.RecordingOptimizer"
    cfg = make_cfg("optimize", [f"optimizer={name}", f"optimizer.compiler._target_={target}", *TINY])
    result = optimize(cfg)
    assert MlflowClient().get_run(result.run_id).info.status == "FINISHED"

    (call,) = RecordingOptimizer.calls
    task = Task.from_config(cfg.task)
    rows = lambda examples: [e.toDict() for e in examples]  # noqa: E731
    assert rows(call["trainset"]) == rows(task.examples("train"))
    if gets_valset:  # `uses_valset: true`: the val split, and only it
        assert rows(call["valset"]) == rows(task.examples("val"))
    else:
        assert call["valset"] is None
    # Neither the gate's evidence (dev) nor the held-out split (test) reaches the optimiser.
    given = {e.text for e in [*call["trainset"], *(call["valset"] or [])]}
    for split in ("dev", "test"):
        assert not given & {e.text for e in task.examples(split)}, split


def test_optimize_main_returns_the_dev_score_not_test(make_cfg):
    """What a sweeper (e.g. Optuna) maximises is `main`'s return: the dev score, never test."""
    from pipelines import optimize as optimize_module

    hydra_task = inspect.getclosurevars(optimize_module.main).nonlocals["wrapped"]
    sizes = ["task.data.train_size=8", "task.data.val_size=8", "task.data.dev_size=8", "task.data.test_size=24"]
    cfg = make_cfg("optimize", ["optimizer=none", *sizes])
    returned = hydra_task(cfg)  # Hydra's main with a config passed through: the task function's return
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    m = run.data.metrics
    assert m["score/dev"] != m["score/test"], "the splits score alike here: the test could not tell them apart"
    assert returned == pytest.approx(m["score/dev"])


def test_selection_score_is_the_dev_score_whatever_the_order():
    result = OptimizeResult("r", "runs:/r/model", scores={"test": 0.9, "dev": 0.4}, baseline={"test": 0.1})
    assert result.selection_score == 0.4


def test_selection_score_never_falls_back_to_test():
    result = OptimizeResult("r", "runs:/r/model", scores={"test": 0.9})
    assert math.isnan(result.selection_score)


def test_budget_stops_cleanly_with_best_so_far(make_cfg):
    cfg = make_cfg(
        "optimize",
        ["optimizer=bootstrap_rs", "optimizer.compiler.num_candidate_programs=4", "budget.max_lm_calls=20", *TINY],
    )
    result = optimize(cfg)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert result.stopped_by_budget and "max_lm_calls=20" in result.stopped_by_budget
    assert run.data.tags["stopped_by_budget"].startswith("max_lm_calls=20")
    assert run.data.metrics["compile/lm_calls"] == 20  # checked before each call: never one past
    assert "score/test" in run.data.metrics  # the kept program was still evaluated and logged
    assert "score/dev" in run.data.metrics and result.selection_score == run.data.metrics["score/dev"]


def sweep(tmp_path, optimizers: str) -> subprocess.CompletedProcess:
    """`optimize -m optimizer=<optimizers>` with the fake LM, in its own process, on a store under tmp_path."""
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pipelines.optimize",
        "-m",
        f"optimizer={optimizers}",
        "lm._target_=tests.fakes.fake_lm",
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_location={store}/artifacts",
        f"paths.dspy_cache_dir={tmp_path}/cache",
        f"hydra.sweep.dir={tmp_path}/multirun",
        "tracking.experiment=sweep-test",
        "eval.display_progress=false",
        *TINY,
    ]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


def test_sweep_makes_one_parent_with_children_and_comparison(tmp_path):
    store = tmp_path / "store"
    proc = sweep(tmp_path, "bootstrap_rs,labeled_fewshot")
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("entry_point") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["optimizer"] for r in children) == ["bootstrap_rs", "labeled_fewshot"]
    assert all(r.info.status == "FINISHED" and r.data.tags["entry_point"] == "optimize" for r in children)
    assert parent.info.status == "FINISHED"
    paths = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.html", "comparison.json"} <= paths
    table = json.loads(open(client.download_artifacts(parent.info.run_id, "comparison.json", str(tmp_path))).read())
    assert {row["optimizer"] for row in table} == {"bootstrap_rs", "labeled_fewshot"}
    assert all(row["score"] is not None and row["baseline"] is not None for row in table)
    # The comparison is on dev (a validation split), never on test.
    dev = {r.data.tags["optimizer"]: r.data.metrics["score/dev"] for r in children}
    assert {row["optimizer"]: row["score"] for row in table} == pytest.approx(dev)
    html = open(client.download_artifacts(parent.info.run_id, "comparison.html", str(tmp_path))).read()
    assert "plotly" in html.lower() and "bootstrap_rs" in html
    assert len(html) < 200_000  # plotly.js (4.8 MB) is not inlined: it is loaded from the experiment's one copy
    assert parent.data.tags["best_optimizer"] in {"bootstrap_rs", "labeled_fewshot"}


def test_bettertogether_weight_step_without_finetuning_provider_fails_before_spending(make_cfg):
    from pipelines.optimizers.compile import FinetuningUnavailable

    cfg = make_cfg("optimize", ["optimizer=bettertogether", *TINY])
    with pytest.raises(FinetuningUnavailable, match="no fine-tuning provider"):
        optimize(cfg)
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("test")
    # Refused before any data or LM call, and visibly: the run is FAILED with the reason.
    (run,) = client.search_runs([exp.experiment_id], "tags.entry_point = 'optimize'")
    assert run.info.status == "FAILED"
    assert "no fine-tuning provider" in run.data.tags["error"]
    assert "compile/lm_calls" not in run.data.metrics and not run.inputs.dataset_inputs


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("simba", ["optimizer.compiler.bsize=16"], "fewer than SIMBA's mini-batch"),
        ("miprov2", ["optimizer.compile_args.minibatch_size=25"], "fewer than MIPROv2's mini-batch"),
    ],
)
def test_splits_smaller_than_the_optimizers_minibatch_fail_before_spending(make_cfg, name, overrides, message):
    from pipelines.optimizers.compile import SplitTooSmall

    cfg = make_cfg("optimize", [f"optimizer={name}", *overrides, *TINY])
    with pytest.raises(SplitTooSmall, match=message):
        optimize(cfg)
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FAILED" and message in run.data.tags["error"]
    assert "baseline/dev" not in run.data.metrics and "compile/lm_calls" not in run.data.metrics


def test_a_sweep_with_a_failing_job_ends_its_parent_failed_naming_the_job(tmp_path):
    store = tmp_path / "store"
    proc = sweep(tmp_path, "labeled_fewshot,simba")  # SIMBA's default mini-batch (16) > the 8-row train split
    assert proc.returncode != 0

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweep-test").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("entry_point") == "sweep"]
    assert parent.info.status == "FAILED"
    assert "optimizer=simba" in parent.data.tags["error"] and "SplitTooSmall" in parent.data.tags["error"]
    children = {r.data.tags["optimizer"]: r.info.status for r in runs if r.data.tags.get("entry_point") == "optimize"}
    assert children == {"labeled_fewshot": "FINISHED", "simba": "FAILED"}
    # The jobs that did finish are still compared on the parent.
    assert "comparison.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_bettertogether_prompts_only_strategy_runs(make_cfg):
    cfg = make_cfg(
        "optimize",
        [
            "optimizer=bettertogether",
            "optimizer.compile_args.strategy=p",
            *TINY,
        ],
    )
    result = optimize(cfg)
    assert MlflowClient().get_run(result.run_id).info.status == "FINISHED"
