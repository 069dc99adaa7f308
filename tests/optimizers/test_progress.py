"""Optimiser progress in MLflow: each evaluation a named child of its optimise run, a best-so-far curve per trial."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pipelines.optimize import optimize
from pipelines.optimizers.progress import best_so_far, trial_scores

from .test_optimize import SHRINK, TINY


@pytest.mark.parametrize("name", ["miprov2", "simba", "gepa"])
def test_each_evaluation_is_a_named_child_and_the_best_score_is_a_curve(make_cfg, name):
    result = optimize(make_cfg("optimize", [f"optimizer={name}", *TINY, *SHRINK[name]]))
    client = MlflowClient()
    experiment = client.get_run(result.run_id).info.experiment_id
    others = [r for r in client.search_runs([experiment]) if r.info.run_id != result.run_id]
    for run in others:  # nothing at the experiment's top level but the optimise run itself
        assert run.data.tags.get("mlflow.parentRunId") == result.run_id, run.info.run_name
        assert run.info.run_name.startswith(f"{name}: ") and run.info.status == "FINISHED"
        assert 0.0 <= run.data.metrics["eval/score"] <= 1.0
    if name == "miprov2":  # MIPROv2 scores its candidates through dspy.Evaluate: full and mini-batch evals
        kinds = {r.data.tags["eval_kind"] for r in others}
        assert kinds == {"eval_full", "eval_minibatch"}
        assert f"{name}: full eval 0" in {r.info.run_name for r in others}
    if name == "gepa":
        assert [r.info.run_name for r in others] == ["gepa: full eval 0"]  # the valset; mini-batches are not logged
    curve = client.get_metric_history(result.run_id, "compile/best_score")
    trials = client.get_metric_history(result.run_id, "compile/trial_score")
    # GEPA on the fake LM proposes the same text each time: only its seed candidate is ever scored on the valset.
    assert len(curve) == len(trials) >= (1 if name == "gepa" else 2), name
    steps = [m.step for m in sorted(curve, key=lambda m: m.step)]
    values = [m.value for m in sorted(curve, key=lambda m: m.step)]
    assert steps == sorted(set(steps)) and values == sorted(values)  # a best-so-far never falls
    assert values[-1] == max(m.value for m in trials) and 0.0 <= values[-1] <= 1.0


def test_best_so_far_and_trial_scores_from_what_optimisers_keep():
    assert best_so_far([(1, 0.5), (2, 0.4), (4, 0.7), (5, 0.6)]) == [(1, 0.5), (2, 0.5), (4, 0.7), (5, 0.7)]

    class Mipro:  # MIPROv2 keeps full-eval scores in percent, by trial number
        trial_logs = {1: {"full_eval_score": 50.0}, 2: {"mb_score": 80.0}, 4: {"full_eval_score": 75.0}}

    assert trial_scores(Mipro()) == [(1, 0.5), (4, 0.75)]

    class Gepa:
        class detailed_results:  # noqa: N801
            val_aggregate_scores = [0.5, 0.625]

    assert trial_scores(Gepa()) == [(0, 0.5), (1, 0.625)]
    assert trial_scores(object()) == []
