"""train -> evaluate -> register with the fake LM: our orchestration logic, fast."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

import pipelines.optimizers.pipeline as optimizer_run
import pipelines.registry.promotion as promotion
from pipelines import cli
from pipelines.cli import adopt_recorded_task
from pipelines.config import PROJECT_ROOT
from pipelines.data.task import Task
from pipelines.evaluate import evaluate
from pipelines.register import register
from pipelines.registry.versions import existing_version, get_alias
from pipelines.tracking.lineage import task_overridden
from pipelines.tracking.store import configure_tracking
from pipelines.train import train
from tests.conftest import compose_cfg, reset_mlflow_state
from tests.fakes import KeywordEngine

SPLITS = ("train", "val", "dev", "test")


@pytest.fixture
def lm_calls(monkeypatch):
    """Every request any fake LM answers (the session's and each loaded model's own), as message lists."""
    seen: list[list] = []
    complete = KeywordEngine.complete

    def counting(self, request):
        seen.append(list(request.messages))
        return complete(self, request)

    monkeypatch.setattr(KeywordEngine, "complete", counting)
    return seen


MAIN = ("main", ["optimizer=none"])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A store holding two finished `main optimizer=none` training runs (the same program twice), trained once
    per module; `trained` copies it for each test, so what a test registers stays in its own store."""
    reset_mlflow_state()
    template = tmp_path_factory.mktemp("two_runs")
    cfg = compose_cfg(MAIN[0], template, MAIN[1])
    first, second = train(cfg), train(cfg)
    reset_mlflow_state()
    return template / "store" / "mlflow.db", first, second


@pytest.fixture
def trained(two_runs, tmp_path):
    """The two runs of `two_runs` in this test's store (the one `make_cfg` points at); their artifacts stay where
    they were logged, which nothing here writes to."""
    db, first, second = two_runs
    (tmp_path / "store").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, tmp_path / "store" / "mlflow.db")
    return first, second


def artifact_paths(run_id: str, path: str = "") -> set[str]:
    """Every artifact file of a run (recursively)."""
    client, out = MlflowClient(), set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(run_id, info.path) if info.is_dir else {info.path}
    return out


def versions_of(name: str) -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'"))


def runs_of(entry: str, experiment: str = "test"):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.entry_point = '{entry}'")


def test_train_logs_model_scores_and_lineage(make_cfg):
    cfg = make_cfg("train", ["optimizer=labeled_fewshot"])
    result = train(cfg)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert set(result.scores) == {"dev"}  # train scores on dev only: test is for evaluate
    assert 0.0 < result.selection_score <= 1.0
    assert run.data.metrics["score/dev"] == result.selection_score
    assert "score/test" not in run.data.metrics
    assert run.data.tags["optimizer"] == "labeled_fewshot"
    assert run.data.tags["entry_point"] == "train"
    assert run.data.tags["model_uri"] == result.model_uri
    assert all(run.data.tags[f"data.digest.{s}"] for s in SPLITS)
    assert run.data.params["optimizer.compiler.k"] == "8"
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {f"travel_intents-{s}" for s in SPLITS}
    # The four splits are recorded by source row id, 16 rows each, and never share a row.
    splits = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/data/splits.json")
    assert {s: len(ids) for s, ids in splits.items()} == dict.fromkeys(SPLITS, 16)
    all_ids = [i for ids in splits.values() for i in ids]
    assert len(set(all_ids)) == len(all_ids)
    # The per-example dev table: row ids, inputs, expected/predicted outputs, score, latency, error.
    table = mlflow.load_table("eval/dev_predictions.json", run_ids=[result.run_id])
    assert {"row_id", "text", "expected.label", "predicted.label", "score", "latency_s", "error"} <= set(table)
    assert sorted(table["row_id"]) == sorted(splits["dev"])
    assert table["score"].mean() == pytest.approx(result.selection_score, abs=1e-4)
    # The logged model scores a batch: one prediction per row, all valid labels.
    model = mlflow.pyfunc.load_model(result.model_uri)
    texts = ["I want a refund", "change my seat please", "where is my suitcase"]
    out = model.predict(pd.DataFrame({"text": texts}))
    assert list(out["label"]) == ["refund_request", "change_seat", "lost_luggage"]


def test_bootstrap_compiles_demos(make_cfg):
    cfg = make_cfg("train", ["optimizer=bootstrap"])
    result = train(cfg)
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert metrics["compile/lm_calls"] > 0
    assert metrics["dev/lm_calls"] > 0


def test_register_promotes_only_a_better_challenger(make_cfg, tmp_path, lm_calls, trained):
    cfg = make_cfg(*MAIN)
    first, second = trained
    configure_tracking(cfg.tracking)
    client = MlflowClient()

    # A first registration has nothing to compare with: it scores nothing and logs no scores.
    lm_calls.clear()
    reg1 = register(cfg, run_id=first.run_id)
    assert lm_calls == []
    assert reg1.promoted and reg1.reason == "no current champion"
    assert reg1.challenger_score is None and reg1.champion_score is None and reg1.p_value is None
    reg_run = client.get_run(reg1.run_id)
    assert reg_run.info.status == "FINISHED"
    assert not {"gate/challenger", "gate/champion", "gate/p_value"} & set(reg_run.data.metrics)
    assert not any(p.startswith("eval/") for p in artifact_paths(reg1.run_id))
    assert "promotion_report.html" in artifact_paths(reg1.run_id)
    tags1 = client.get_model_version(reg1.name, reg1.version).tags
    assert tags1["promotion.decision"] == "promoted" and tags1["promotion.champion_version"] == "none"
    assert "promotion.challenger_score" not in tags1 and "promotion.p_value" not in tags1
    assert str(client.get_model_version_by_alias(reg1.name, "champion").version) == reg1.version
    assert str(client.get_model_version_by_alias(reg1.name, "challenger").version) == reg1.version

    # Same program again: same score, so the champion stays. Both models' dev results are on record
    # from their training runs (same data digest), so the comparison makes no LM call.
    lm_calls.clear()
    reg2 = register(cfg, run_id=second.run_id)
    assert lm_calls == []
    assert not reg2.promoted
    assert reg2.version != reg1.version
    assert str(client.get_model_version_by_alias(reg2.name, "champion").version) == reg1.version
    assert str(client.get_model_version_by_alias(reg2.name, "challenger").version) == reg2.version
    version2 = client.get_model_version(reg2.name, reg2.version)
    tags = version2.tags
    assert tags["promotion.decision"] == "kept_champion"
    assert tags["promotion.test"] == "mcnemar_exact" and float(tags["promotion.p_value"]) == 1.0
    assert tags["promotion.paired_examples"] == "16" and tags["promotion.wins"] == "0"
    assert tags["promotion.champion_version"] == reg1.version
    assert float(tags["promotion.challenger_score"]) == pytest.approx(second.selection_score, abs=1e-4)
    assert float(tags["promotion.champion_score"]) == pytest.approx(first.selection_score, abs=1e-4)
    assert reg2.reason.startswith("no improvement")
    assert tags["promotion.reason"] == reg2.reason
    assert tags["source_run_id"] == second.run_id and tags["source_model_uri"] == second.model_uri
    assert tags["git_commit"] and tags["promotion.forced"] == "false"
    # The registry UI shows the description in full: the decision, its reason, the source run and data.
    assert version2.description.startswith("kept champion: no improvement")
    assert second.run_id in version2.description and tags["data_digest"] in version2.description
    # The register run holds the scores, the p-value and the decision.
    run2 = client.get_run(reg2.run_id)
    assert run2.data.metrics["gate/challenger"] == pytest.approx(second.selection_score, abs=1e-4)
    assert run2.data.metrics["gate/champion"] == pytest.approx(first.selection_score, abs=1e-4)
    assert run2.data.metrics["gate/p_value"] == 1.0
    assert run2.data.tags["promotion.decision"] == "kept_champion"
    assert run2.data.tags["model_version"] == reg2.version

    # Forcing is explicit and recorded; the comparison report can be written to a path. The run is
    # registered already: its version is reused, not duplicated.
    report = tmp_path / "report.html"
    reg3 = register(cfg, run_id=second.run_id, force=True, report_path=str(report))
    assert "forced by the user" in report.read_text() and "champion v" in report.read_text()
    assert reg3.promoted and reg3.version == reg2.version
    assert versions_of(reg3.name) == sorted([reg1.version, reg2.version])
    assert client.get_model_version(reg3.name, reg3.version).tags["promotion.forced"] == "true"
    assert str(client.get_model_version_by_alias(reg3.name, "champion").version) == reg3.version


def test_registering_the_same_run_twice_reuses_its_version(make_cfg, lm_calls, trained):
    cfg = make_cfg(*MAIN)
    trained, _ = trained
    lm_calls.clear()
    reg1 = register(cfg, run_id=trained.run_id)
    reg2 = register(cfg, run_id=trained.run_id)
    assert reg2.version == reg1.version
    assert versions_of(reg1.name) == [reg1.version]
    # The version is the champion already: comparing it with itself would prove nothing, so nothing is scored.
    assert lm_calls == []
    assert str(MlflowClient().get_model_version_by_alias(reg1.name, "champion").version) == reg1.version
    assert str(existing_version(reg1.name, trained.run_id, trained.model_uri).version) == reg1.version
    assert existing_version(reg1.name, trained.run_id, "runs:/elsewhere/model") is None


def test_a_failure_while_recording_leaves_no_new_version(make_cfg, monkeypatch, trained):
    cfg = make_cfg(*MAIN)
    name = str(cfg.registry.name)
    first, second = trained

    def broken(*args, **kwargs):
        raise RuntimeError("registry went away mid-way")

    with monkeypatch.context() as patch:
        patch.setattr(promotion, "record_decision", broken)
        with pytest.raises(RuntimeError, match="registry went away"):
            register(cfg, run_id=first.run_id)
    assert versions_of(name) == []  # the version this run created was deleted again
    assert get_alias(name, "champion") is None
    (failed,) = runs_of("register")
    assert failed.info.status == "FAILED"
    assert "registry went away" in failed.data.tags["error"]

    # The same run registers cleanly afterwards; it is then the champion.
    reg1 = register(cfg, run_id=first.run_id)
    assert versions_of(name) == [reg1.version] and reg1.promoted

    # A challenger whose decision fails to record leaves the registry as it was: one version, same aliases.
    with monkeypatch.context() as patch:
        patch.setattr(promotion, "record_decision", broken)
        with pytest.raises(RuntimeError):
            register(cfg, run_id=second.run_id)
    assert versions_of(name) == [reg1.version]
    assert str(get_alias(name, "champion").version) == reg1.version
    assert str(get_alias(name, "challenger").version) == reg1.version
    assert sorted(r.info.status for r in runs_of("register")) == ["FAILED", "FAILED", "FINISHED"]

    # Re-registering the champion's run touches nothing (so nothing can fail half-way), and keeps its version.
    with monkeypatch.context() as patch:
        patch.setattr(promotion, "record_decision", broken)
        again = register(cfg, run_id=first.run_id)
    assert again.version == reg1.version and "already the champion" in again.reason
    assert versions_of(name) == [reg1.version]


def test_get_alias_is_none_only_when_missing(make_cfg, monkeypatch):
    cfg = make_cfg("register")
    configure_tracking(cfg.tracking)
    client = MlflowClient()
    assert get_alias("no_such_model", "champion") is None
    client.create_registered_model("empty_model")
    assert get_alias("empty_model", "champion") is None
    assert existing_version("no_such_model", "some-run", "runs:/some-run/model") is None

    # Any other registry error must never read as "no champion".
    def down(self, name, alias):
        raise MlflowException("the registry database is unavailable", error_code=INTERNAL_ERROR)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", down)
    with pytest.raises(MlflowException, match="unavailable") as info:
        get_alias("empty_model", "champion")
    assert info.value.error_code == "INTERNAL_ERROR"


def _text_fields(messages) -> set[str]:
    """Every `text` input a prompt carried: the example asked about and any demos."""
    found = set()
    for message in messages:
        for match in re.finditer(r"\[\[ ## text ## \]\]\s*(.*?)(?:\n\n|\[\[|$)", message.text or "", re.S):
            found.add(match.group(1).strip())
    return found


def test_the_gate_compares_on_dev_which_the_optimiser_never_saw(make_cfg, monkeypatch, lm_calls):
    overrides = ["optimizer=bootstrap_rs", "optimizer.compiler.num_candidate_programs=1"]
    cfg = make_cfg("main", overrides)
    task = Task.from_config(cfg.task)
    dev_texts = {e.text for e in task.examples("dev")}
    train_texts, val_texts = ({e.text for e in task.examples(s)} for s in ("train", "val"))
    assert len(dev_texts) == 16 and not dev_texts & (train_texts | val_texts)

    compile_prompts: list[list] = []
    given: list[tuple[list, list]] = []
    compile_program = optimizer_run.compile_program

    def watched(spec, program, trainset, valset=None, **kwargs):
        given.append((trainset, valset))
        start = len(lm_calls)
        try:
            return compile_program(spec, program, trainset, valset, **kwargs)
        finally:
            compile_prompts.extend(lm_calls[start:])

    monkeypatch.setattr(optimizer_run, "compile_program", watched)
    first = train(cfg)
    register(cfg, run_id=first.run_id)
    second = train(cfg)
    reg = register(cfg, run_id=second.run_id)

    # The optimiser got train as its trainset and val as its valset; no prompt it sent held a dev example.
    assert len(given) == 2
    for trainset, valset in given:
        assert {e.text for e in trainset} == train_texts and {e.text for e in valset} == val_texts
    seen = set().union(*(_text_fields(m) for m in compile_prompts))
    assert seen and seen <= train_texts | val_texts
    assert not seen & dev_texts
    # The gate's evidence is dev: the same rows the training run scored, with its data digest.
    tags = MlflowClient().get_model_version(reg.name, reg.version).tags
    assert tags["data_split"] == "dev"
    assert tags["promotion.paired_examples"] == "16"
    assert tags["data_digest"] == MlflowClient().get_run(second.run_id).data.tags["data.digest.dev"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["task.data.dev_size=4"], True),
        (["task=banking77"], True),
        (["+task.extra=1"], True),
        (["experiment=smoke"], True),
        (["registry.gate.alpha=0.1"], False),
        (["tracking.experiment=x", "force=true"], False),
        ([], False),
    ],
)
def test_task_overridden(overrides, expected):
    assert task_overridden(overrides) is expected


def test_register_adopts_the_source_runs_task_settings(make_cfg, monkeypatch, tmp_path):
    champion = train(make_cfg("main", ["optimizer=none"]))  # dev: 16 rows
    client = MlflowClient()
    register(make_cfg("register"), run_id=champion.run_id)
    challenger = train(make_cfg("main", ["optimizer=none", "task.data.dev_size=8"]))

    # A command-line task override wins over the recorded task settings.
    cfg = make_cfg("register")
    monkeypatch.setattr(cli, "command_line_overrides", lambda: ["task.data.dev_size=4"])
    assert adopt_recorded_task(cfg, challenger.run_id) is False
    assert cfg.task.data.dev_size == 16
    monkeypatch.setattr(cli, "command_line_overrides", lambda: ["registry.gate.alpha=0.1"])
    assert adopt_recorded_task(cfg, None) is False

    # As the register main does it: the task the challenger was trained with, so dev is its 8 rows.
    assert adopt_recorded_task(cfg, challenger.run_id) is True
    assert cfg.task.data.dev_size == 8
    reg = register(cfg, run_id=challenger.run_id)
    tags = client.get_model_version(reg.name, reg.version).tags
    assert tags["promotion.paired_examples"] == "8"
    assert tags["data_digest"] == client.get_run(challenger.run_id).data.tags["data.digest.dev"]
    # The challenger's 8 results are on record from its training run; the champion's 16-row results
    # are not for these 8 rows, so it was scored now, and the table is pointed to from its version.
    artifacts = artifact_paths(reg.run_id)
    assert "eval/champion_dev_predictions.json" in artifacts
    assert not any(p.startswith("eval/challenger_") for p in artifacts)
    champion_tags = client.get_model_version(reg.name, "1").tags
    assert champion_tags["eval.dev.digest"] == tags["data_digest"]
    assert champion_tags["eval.dev.table_run"] == reg.run_id

    # Without adoption the same challenger is compared on the config's 16 dev rows (re-scored for them).
    plain = register(make_cfg("register"), run_id=challenger.run_id)
    assert plain.version == reg.version
    assert client.get_model_version(plain.name, plain.version).tags["promotion.paired_examples"] == "16"
    assert "eval/challenger_dev_predictions.json" in artifact_paths(plain.run_id)

    # The register main itself: a task override on its command line wins over the recorded settings.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.register",
            f"run_id={challenger.run_id}",
            "task.data.dev_size=4",
            "lm._target_=tests.fakes.fake_lm",
            f"tracking.uri={cfg.tracking.uri}",
            f"tracking.experiment={cfg.tracking.experiment}",
            f"paths.dspy_cache_dir={cfg.paths.dspy_cache_dir}",
            f"hydra.run.dir={tmp_path}/register_main",
        ],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )
    latest = runs_of("register")[0]  # newest first
    assert latest.info.run_id not in {reg.run_id, plain.run_id}
    assert latest.data.tags["model_version"] == reg.version
    assert latest.data.params["task.data.dev_size"] == "4"
    assert client.get_model_version(reg.name, reg.version).tags["promotion.paired_examples"] == "4"


def test_register_defaults_to_latest_run_and_evaluate_to_champion(make_cfg, trained):
    cfg = make_cfg(*MAIN)
    _, trained = trained  # the latest of the two
    reg = register(cfg)  # no run id: the latest finished train run
    assert MlflowClient().get_model_version(reg.name, reg.version).tags["source_run_id"] == trained.run_id
    result = evaluate(make_cfg("evaluate"))  # no model uri: the champion, on the test split
    assert result.model_uri == f"models:/{cfg.registry.name}@champion"
    assert result.split == "test"
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["model_version"] == reg.version
    assert run.data.tags["model_name"] == reg.name
    assert "score/test" in run.data.metrics
    assert set(result.outcome.table["row_id"]) == set(
        mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/data/splits.json")["test"]
    )


def test_a_failure_after_the_aliases_moved_restores_them(make_cfg, monkeypatch, trained):
    cfg = make_cfg(*MAIN)
    first, _ = trained
    reg1 = register(cfg, run_id=first.run_id)
    small = make_cfg("main", ["optimizer=none", "task.data.dev_size=8"])
    challenger = train(small)

    def broken(*args, **kwargs):
        raise RuntimeError("could not point the version at its results")

    # The champion has no results on these 8 dev rows, so it is scored and its table recorded: that fails.
    monkeypatch.setattr(promotion, "record_predictions", broken)
    with pytest.raises(RuntimeError, match="could not point"):
        register(small, run_id=challenger.run_id, force=True)
    assert versions_of(reg1.name) == [reg1.version]
    champion = get_alias(reg1.name, "champion")
    assert champion is not None and str(champion.version) == reg1.version


def test_registering_the_champions_run_again_keeps_its_promotion_record(make_cfg, trained):
    cfg = make_cfg(*MAIN)
    first, second = trained
    register(cfg, run_id=first.run_id)
    forced = register(cfg, run_id=second.run_id, force=True)
    client = MlflowClient()
    before = client.get_model_version(forced.name, forced.version)
    register(cfg, run_id=second.run_id)  # e.g. `main` re-run, or register called twice
    after = client.get_model_version(forced.name, forced.version)
    assert after.tags["promotion.forced"] == before.tags["promotion.forced"] == "true"
    assert after.tags["promotion.reason"] == before.tags["promotion.reason"]
    assert "no current champion" not in after.description
