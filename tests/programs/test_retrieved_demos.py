"""RetrievedDemos: per-input demos from a pool that is saved with the program and rebuilt identically.

The fake LM copies the label of the demo sharing most words with the input, so a program that
retrieves the right neighbours answers right: our wiring is what is tested, never a model's quality.
"""

from __future__ import annotations

import typing
from concurrent.futures import ThreadPoolExecutor

import dspy
import mlflow
import pandas as pd
from omegaconf import OmegaConf

from pipelines.config import CONF_DIR
from pipelines.data.contract import Contract
from pipelines.lm.json_adapter import JSONAdapter
from pipelines.model.log import log_program_model
from pipelines.model.spec import build_spec
from pipelines.programs import RetrievedDemos, build_program
from tests.fakes import fake_lm

LABELS = ["card_arrival", "exchange_rate", "pin_blocked"]
CONTRACT = Contract.from_config({"text": {"type": "str"}}, {"label": {"type": "label", "labels": LABELS}}, "Classify.")
POOL = [
    ("when will my new card arrive in the post", "card_arrival"),
    ("my card delivery is taking weeks", "card_arrival"),
    ("what exchange rate do you give for euros", "exchange_rate"),
    ("how are currency exchange rates calculated", "exchange_rate"),
    ("my pin got blocked after three tries", "pin_blocked"),
    ("unblock my pin please", "pin_blocked"),
]
PROGRAM_YAML = CONF_DIR / "program" / "retrieved_demos.yaml"
QUERIES = ["the card delivery has not come", "which exchange rates apply", "pin is blocked, help"]


def pool() -> list[dspy.Example]:
    return [dspy.Example(text=t, label=lab).with_inputs("text") for t, lab in POOL]


def program(k: int = 2) -> RetrievedDemos:
    cfg = OmegaConf.load(PROGRAM_YAML)
    built, _ = build_program(OmegaConf.merge(cfg, {"k": k}), CONTRACT)
    built.predict.demos = pool()
    return built


def test_retrieves_the_nearest_examples_nearest_last():
    demos = program(k=2).retrieve({"text": "when does my card arrive"})
    assert [d.label for d in demos] == ["card_arrival", "card_arrival"]
    assert demos[-1].text == "when will my new card arrive in the post"  # the most similar, right before the input


def test_retrieval_never_refits_the_vectorizer_that_threads_share():
    # Evaluate's threads call one program: a vectorizer refitted in place by one thread (a new pool) while another
    # transforms a query with it raised NotFittedError. Each index fits a copy; the shared one stays as configured.
    built = program(k=2)
    with ThreadPoolExecutor(4) as threads:
        answers = list(threads.map(lambda q: [d.label for d in built.retrieve({"text": q})], QUERIES * 4))
    assert answers == [["card_arrival"] * 2, ["exchange_rate"] * 2, ["pin_blocked"] * 2] * 4
    assert not hasattr(built.vectorizer, "vocabulary_")  # never fitted: no thread can catch it half-fitted
    built.predict.demos = pool()[:4]  # a new pool: a new index, fitted on its own copy
    assert [d.label for d in built.retrieve({"text": "pin blocked"})][-1] in {"card_arrival", "exchange_rate"}
    assert not hasattr(built.vectorizer, "vocabulary_")


def test_no_pool_means_zero_shot():
    assert RetrievedDemos(CONTRACT.to_dict()).retrieve({"text": "anything"}) == []


def test_the_pool_travels_in_program_json_and_retrieval_is_identical(tmp_path):
    original = program(k=3)
    original.save(str(tmp_path / "program.json"))
    cfg = OmegaConf.merge(OmegaConf.load(PROGRAM_YAML), {"k": 3})
    loaded, _ = build_program(cfg, CONTRACT)
    loaded.load(str(tmp_path / "program.json"))
    assert len(loaded.predict.demos) == len(POOL)

    def pairs(demos):  # loaded demos are plain dicts, the originals Examples
        return [(d["text"], d["label"]) for d in demos]

    for query in QUERIES:
        assert pairs(loaded.retrieve({"text": query})) == pairs(original.retrieve({"text": query}))


def test_a_registered_model_answers_as_the_program_did(tmp_path):
    lm_cfg = {"_target_": "tests.fakes.fake_lm", "model": "fake/keyword", "default": "pin_blocked"}
    built = program(k=2)
    with dspy.context(lm=fake_lm(default="pin_blocked"), adapter=JSONAdapter()):
        expected = [built(text=q).label for q in QUERIES]
    assert expected == ["card_arrival", "exchange_rate", "pin_blocked"]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("retrieved_demos")  # not an id an earlier test left behind in this process
    cfg = OmegaConf.merge(OmegaConf.load(PROGRAM_YAML), {"k": 2})
    _, program_config = build_program(cfg, CONTRACT)
    spec = build_spec(
        program_config=program_config,
        contract=CONTRACT,
        lm_config=lm_cfg,
        adapter_config={"_target_": "pipelines.lm.json_adapter.JSONAdapter"},
        task_config={},
    )
    with mlflow.start_run():
        info = log_program_model(built, spec)
    served = mlflow.pyfunc.load_model(info.model_uri)
    answers = [served.predict(pd.DataFrame({"text": [q]}))["label"].iloc[0] for q in QUERIES]
    assert answers == expected


def test_restrict_labels_limits_the_schema_to_the_neighbours_labels():
    built = program(k=2)
    demos = built.retrieve({"text": "when does my card arrive"})
    narrowed = built.narrowed(demos)
    assert typing.get_args(narrowed.output_fields["label"].annotation) == ("card_arrival",)
    assert built.narrowed(pool()) is None  # every label present: nothing to cut

    built.restrict_labels = True
    seen = []
    with dspy.context(lm=fake_lm(default="pin_blocked"), adapter=JSONAdapter()):
        original = built.predict.forward

        def spy(**kwargs):
            seen.append(kwargs.get("signature"))
            return original(**kwargs)

        built.predict.forward = spy
        built(text="the card delivery has not come")
    assert typing.get_args(seen[0].output_fields["label"].annotation) == ("card_arrival",)


def test_neighbour_vote_answers_the_neighbours_majority_without_an_lm():
    cfg = OmegaConf.load(CONF_DIR / "program" / "neighbour_vote.yaml")
    assert cfg._target_ == "pipelines.programs.NeighbourVote" and "defaults" in cfg  # retrieved_demos + the class
    program, _ = build_program(
        OmegaConf.create(
            {
                **OmegaConf.to_container(OmegaConf.load(PROGRAM_YAML)),
                "_target_": "pipelines.programs.NeighbourVote",
                "k": 3,
            }
        ),
        CONTRACT,
    )
    program.predict.demos = pool()
    with dspy.context(lm=None):  # any LM call would fail
        answers = [program(text=q).label for q in QUERIES]
    assert answers == ["card_arrival", "exchange_rate", "pin_blocked"]
    # k=1: the nearest example alone; a tie (k=2, two labels) goes to the nearer one.
    program.k = 1
    assert program(text="card delivery weeks").label == "card_arrival"
    program.k = 2
    nearest = program.retrieve({"text": "exchange rate for my card"})[-1]  # nearest_last
    assert program(text="exchange rate for my card").label == nearest.label


def vote_or_predict(k: int, min_agreement: int):
    from pipelines.programs import VoteOrPredict

    cfg = {**OmegaConf.to_container(OmegaConf.load(PROGRAM_YAML)), "_target_": "pipelines.programs.VoteOrPredict"}
    built, _ = build_program(OmegaConf.create(cfg | {"k": k, "min_agreement": min_agreement}), CONTRACT)
    assert isinstance(built, VoteOrPredict)
    built.predict.demos = pool()
    return built


def test_vote_or_predict_asks_the_lm_only_where_the_neighbours_disagree():
    import pytest

    # "card delivery weeks": its 3 nearest are two card rows and one other (2 of 3 agree).
    agreeing = vote_or_predict(k=3, min_agreement=2)
    with dspy.context(lm=None):  # any LM call would fail
        assert agreeing(text="card delivery weeks").label == "card_arrival"

    disputed = vote_or_predict(k=3, min_agreement=3)
    lm = fake_lm(default="pin_blocked")
    with dspy.context(lm=lm, adapter=JSONAdapter()):
        answer = disputed(text="card delivery weeks").label
    assert answer == "card_arrival" and len(lm.history) == 1
    # The LM got exactly the request RetrievedDemos sends (so a cache or a benchmark replay matches it).
    plain_lm = fake_lm(default="pin_blocked")
    with dspy.context(lm=plain_lm, adapter=JSONAdapter()):
        program(k=3)(text="card delivery weeks")
    assert plain_lm.history[0]["messages"] == lm.history[0]["messages"]

    with pytest.raises(Exception, match="min_agreement must be between 1 and k=3"):  # Hydra wraps it
        vote_or_predict(k=3, min_agreement=4)
