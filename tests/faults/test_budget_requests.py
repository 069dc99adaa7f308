"""`budget.max_lm_calls` bounds the requests a compile SENDS (retries included), counted at the provider."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from benchmarks.fake_provider import FakeProvider
from pipelines.data.task import Task
from pipelines.optimize import optimize
from pipelines.optimizers.budget import Budget
from pipelines.optimizers.compile import build_optimizer
from pipelines.optimizers.pipeline import compile_within_budget
from pipelines.programs import build_program
from pipelines.session import Session
from pipelines.tracking.store import configure_tracking

N = 5


@pytest.mark.parametrize(
    ("faults", "engine"),
    [({"fail_every": (1, 4, 7)}, "auto"), ({"fail_all": True}, "auto"), ({"fail_all": True}, "litellm")],
    ids=["30pct_failing", "all_failing", "all_failing_litellm"],
)
def test_a_budget_of_n_calls_sends_at_most_n_requests(make_cfg, monkeypatch, faults, engine):
    monkeypatch.setenv("FAKE_KEY", "fk-budget-0001")
    with FakeProvider(**faults) as fake:
        overrides = [*fake.overrides(), "optimizer=bootstrap", "lm.cache=false", "lm.num_retries=1"]
        overrides.append(f"lm.engine={engine}")
        cfg = make_cfg("train", overrides, fake=False)
        session = Session.start(cfg)
        task = Task.from_config(cfg.task)
        program, _ = build_program(cfg.program, task.contract)
        spec = build_optimizer(cfg.optimizer, session.lm)
        configure_tracking(cfg.tracking)
        with mlflow.start_run() as run:
            _, stopped = compile_within_budget(spec, program, task, lm=session.lm, budget=Budget(max_lm_calls=N))
    print(f"budget {N}, {'+'.join(faults)}: the provider saw {fake.requests} requests ({fake.statuses})")
    assert stopped and f"max_lm_calls={N} reached" in stopped
    assert fake.requests == N  # at most N, and the budget was really what stopped it
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics["compile/lm_requests"] == N
    assert metrics["compile/lm_calls"] == fake.statuses.count(200) < N  # answered calls undercount what was sent


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lm_calls": 0},
        {"max_lm_calls": -60},
        {"max_lm_calls": 2.5},
        {"max_lm_calls": True},
        {"max_cost_usd": 0},
        {"max_cost_usd": -1.0},
    ],
)
def test_zero_or_negative_budgets_are_config_errors(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"budget.{name} must be a positive"):
        Budget(**kwargs)


def test_positive_and_null_budgets_are_accepted():
    assert Budget(max_lm_calls=1, max_cost_usd=0.01).exceeded({"lm_calls": 0, "requests": 1, "cost_usd": 0.0})
    assert Budget().exceeded({"lm_calls": 10**6, "requests": 10**6, "cost_usd": 1e6}) is None


def test_a_negative_budget_stops_optimize_before_any_run(make_cfg):
    cfg = make_cfg("train", ["budget.max_lm_calls=-60"])
    with pytest.raises(ValueError, match="budget.max_lm_calls must be a positive whole number"):
        optimize(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("test")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
