"""What MLflow itself shows, read back through its public client: scores on logged models per dataset,
prompts in the Prompt Registry that follow the aliases, a version description that tells its story, and
the console summary with the run's UI link. Fake LM throughout: fast."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines.evaluate import evaluate
from pipelines.register import register
from pipelines.registry.prompts import chat_template, prompt_name, register_program_prompts
from pipelines.tracking.summary import NOTE_TAG, report
from pipelines.train import train

PREDICTOR = "travel_intents.predict"  # <registered model name>.<predictor name> of the default program


def load_prompt(uri: str):
    return mlflow.genai.load_prompt(uri, cache_ttl_seconds=0, link_to_model=False)  # aliases move within the test


def system_text(prompt) -> str:
    return prompt.template[0]["content"]


def test_logged_model_carries_its_scores_per_dataset(make_cfg):
    trained = train(make_cfg("train", ["optimizer=labeled_fewshot"]))
    tested = evaluate(make_cfg("evaluate"), model_uri=trained.model_uri, split="test")
    run = MlflowClient().get_run(trained.run_id)
    exp, digests = run.info.experiment_id, {s: run.data.tags[f"data.digest.{s}"] for s in ("dev", "test")}

    def models_scored_on(split):
        datasets = [{"dataset_name": f"travel_intents-{split}", "dataset_digest": digests[split]}]
        return mlflow.search_logged_models(experiment_ids=[exp], datasets=datasets, output_format="list")

    (model,) = models_scored_on("dev")
    assert trained.model_uri == f"models:/{model.model_id}"
    dev = {m.key: m.value for m in model.metrics if m.dataset_digest == digests["dev"]}
    assert dev["score/dev"] == pytest.approx(trained.selection_score)
    assert dev["score/dev/ci_low"] <= dev["score/dev"] <= dev["score/dev/ci_high"]
    assert dev["score/dev/ci_low"] == run.data.metrics["score/dev/ci_low"]
    (model,) = models_scored_on("test")  # evaluate scored the same logged model on test
    test = [m for m in model.metrics if m.key == "score/test" and m.dataset_digest == digests["test"]]
    assert [m.value for m in test] == [pytest.approx(tested.score)] and test[0].run_id == tested.run_id
    assert {m.key for m in model.metrics if m.dataset_name == "travel_intents-test"} >= {
        "score/test/ci_low",
        "score/test/ci_high",
    }
    # Models rank by a headline score, as the README shows.
    ranked = mlflow.search_logged_models(
        experiment_ids=[exp], order_by=[{"field_name": "metrics.score/test", "ascending": False}], output_format="list"
    )
    assert ranked[0].model_id == model.model_id
    # The run keeps its own metric names, and train shows its program readably, as optimize does.
    assert run.data.metrics["score/dev"] == trained.selection_score
    assert "## `predict`" in mlflow.artifacts.load_text(f"runs:/{trained.run_id}/program/program.md")


def test_prompts_follow_the_model_aliases_and_versions_tell_their_story(make_cfg):
    first_cfg = make_cfg("main", ["optimizer=none", "task.instructions='First: pick the intent.'"])
    second_cfg = make_cfg("main", ["optimizer=labeled_fewshot", "task.instructions='Second: pick the intent.'"])
    first = train(first_cfg)
    (prompt_uri,) = mlflow.models.get_model_info(first.model_uri).prompts  # linked to the logged model
    assert prompt_uri == f"prompts:/{PREDICTOR}/1"
    reg1 = register(first_cfg, run_id=first.run_id)
    assert system_text(load_prompt(f"prompts:/{PREDICTOR}@champion")).startswith("First: pick the intent.")

    second = train(second_cfg)
    tested = evaluate(second_cfg, model_uri=second.model_uri, split="test")
    reg2 = register(second_cfg, run_id=second.run_id)
    assert not reg2.promoted  # the fake LM ignores instructions: same answers, no evidence
    champion, challenger = (
        load_prompt(f"prompts:/{PREDICTOR}@champion"),
        load_prompt(f"prompts:/{PREDICTOR}@challenger"),
    )
    assert system_text(champion).startswith("First:") and system_text(challenger).startswith("Second:")
    assert len(challenger.template) == 2 * 8 + 2  # system, 8 labelled demos as user/assistant pairs, the input
    assert challenger.format(text="where is my bag")[-1] == {"role": "user", "content": "text: where is my bag"}
    assert set(challenger.response_format["properties"]["label"]["enum"]) >= {"lost_luggage", "refund_request"}

    client = MlflowClient()
    description = client.get_model_version(reg2.name, reg2.version).description
    assert description.startswith("kept champion: no improvement")  # the decision, in one sentence
    exp = client.get_run(reg2.run_id).info.experiment_id
    assert "| model | dev score [95% CI] | test score [95% CI] |" in description
    assert f"| challenger v{reg2.version} | {second.selection_score:.3f} [" in description
    assert f"| champion v{reg1.version} | {first.selection_score:.3f} [" in description
    assert f"{tested.score:.3f} [" in description  # the challenger's test score, from its logged model
    for run_id in (reg2.run_id, second.run_id, tested.run_id):
        assert f"(#/experiments/{exp}/runs/{run_id})" in description
    # The register run's scores belong to their own models, not to whichever model was loaded last.
    challenger_model = mlflow.get_logged_model(second.model_uri.split("/")[-1])
    assert "gate/challenger" in {m.key for m in challenger_model.metrics}

    # A forced promotion moves the prompts' champion alias too (and rewrites the description).
    forced = register(second_cfg, run_id=second.run_id, force=True)
    assert system_text(load_prompt(f"prompts:/{PREDICTOR}@champion")).startswith("Second:")
    assert client.get_model_version(forced.name, forced.version).description.startswith("promoted: forced")


def test_summary_has_score_interval_and_links(make_cfg, capsys):
    result = train(make_cfg("train", ["optimizer=none"]))
    text = report([result.run_id])
    run = MlflowClient().get_run(result.run_id)
    low, high = run.data.metrics["score/dev/ci_low"], run.data.metrics["score/dev/ci_high"]
    assert f"dev score             {result.selection_score:.3f} ± {(high - low) / 2:.3f} [{low:.3f}, " in text
    assert "n=16  errors 0  unparsed 0" in text and f"model                 {result.model_uri}" in text
    assert f"LM calls              {int(run.data.metrics['dev/lm_calls'])}" in text
    exp = run.info.experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{result.run_id}" in text
    assert f"http://127.0.0.1:5000/#/experiments/{exp}\n" in text + "\n"
    # The runs table opens on the headline scores: a shared view the UI reads from the experiment's tags.
    assert f"http://127.0.0.1:5000/#/experiments/{exp}/runs?viewStateShareKey=headline" in text
    view = json.loads(MlflowClient().get_experiment(exp).tags["mlflow.sharedViewState.headline"])
    assert view["selectedColumns"][1:4] == [
        "metrics.`score/dev`",
        "metrics.`score/dev/ci_low`",
        "metrics.`score/dev/ci_high`",
    ]
    assert all(
        c.split(".", 1)[1].strip("`") in run.data.params for c in view["selectedColumns"] if c.startswith("params.")
    )
    assert text in capsys.readouterr().out
    note = MlflowClient().get_run(result.run_id).data.tags[NOTE_TAG]
    dev = f"Dev score {result.selection_score:.3f} (95% CI {low:.3f}-{high:.3f}) on 16 examples"
    assert f"{dev} (errors 0, unparsed 0)." in note


def test_switched_off_logs_no_prompts_and_no_model_scores(make_cfg):
    result = train(make_cfg("train", ["optimizer=none", "tracking.genai_surfaces=false"]))
    assert not mlflow.models.get_model_info(result.model_uri).prompts
    model = mlflow.get_logged_model(result.model_uri.split("/")[-1])
    assert not [m for m in model.metrics if m.dataset_name]
    assert not mlflow.genai.search_prompts()


def test_prompt_names_and_templates_are_valid_for_any_program():
    import dspy

    assert prompt_name("my model", "stages[0].predict") == "my_model.stages_0_.predict"
    predictor = dspy.Predict("question, context -> answer: int")
    predictor.demos = [dspy.Example(question="1+1?", context="math", answer=2)]
    messages = chat_template(predictor)
    assert messages[1:3] == [
        {"role": "user", "content": "question: 1+1?\ncontext: math"},
        {"role": "assistant", "content": '{"answer": 2}'},
    ]
    assert messages[-1]["content"] == "question: {{question}}\ncontext: {{context}}"
    assert "- answer: integer" in messages[0]["content"]


def test_a_retrieval_pool_is_named_not_spelled_out_in_the_prompt(make_cfg):
    """814 pool demos would pass the registry's 100,000-character limit; the template says a pool is used."""
    import dspy

    predictor = dspy.Predict("text -> label")
    predictor.demos = [dspy.Example(text=f"message {i} " + "x" * 200, label="a") for i in range(814)]
    messages = chat_template(predictor)
    assert len(messages) == 2 and "retrieved per input from a pool of 814" in messages[0]["content"]
    mlflow.set_tracking_uri(make_cfg("train").tracking.uri)
    program = dspy.Module()
    program.predict = predictor
    (uri,) = register_program_prompts(program, "pool_model")
    assert mlflow.genai.load_prompt(uri).template[0]["content"] == messages[0]["content"]
