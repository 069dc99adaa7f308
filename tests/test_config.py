"""The real Hydra configs: every root config and group option composes, resolves and instantiates.

No LM is ever called: local LM configs are composed and resolved but not instantiated (that would
assemble the 491 MB embedded model); provider LMs are instantiated with fake keys (no network).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import get_args

import dspy
import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pipelines.config import CONF_DIR, PROJECT_ROOT, REDACTED, flatten, is_secret_key, redact, to_container
from pipelines.data.contract import Contract
from pipelines.data.splits import ROW_ID, SPLITS, Splits
from pipelines.data.task import Task
from pipelines.evaluation.metrics import WithFeedback, exact_match, numeric_match
from pipelines.lm import MissingAPIKeyError, provider_lm
from pipelines.optimizers.compile import OptimizerSpec, build_optimizer
from pipelines.programs import (
    DraftThenVerify,
    ExtractThenClassify,
    MathAgent,
    NeighbourTally,
    NeighbourVote,
    RetrievedDemos,
    SingleStep,
    VoteOrPredict,
    build_program,
)

from .fakes import fake_lm

ROOT_CONFIGS = ["train", "optimize", "evaluate", "register", "serve", "main"]
GROUPS = ["lm", "task", "program", "optimizer", "tracking"]
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"
LABELS = ["book_flight", "cancel_booking", "check_in"]
# The task each shipped program is built for (ExtractThenClassify needs a label output and a free one).
PROGRAM_TASK = {"extract_then_classify": "travel_requests", "math_agent": "gsm8k"}
PROGRAM_CLASS = {
    "predict": SingleStep,
    "chain_of_thought": SingleStep,
    "draft_verify": DraftThenVerify,
    "extract_then_classify": ExtractThenClassify,
    "math_agent": MathAgent,
    "retrieved_demos": RetrievedDemos,
    "neighbour_vote": NeighbourVote,
    "neighbour_tally": NeighbourTally,
    "vote_or_predict": VoteOrPredict,
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GROUP_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def resolved(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def group_yaml(group: str, option: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))


def config_contract(cfg) -> Contract:
    """The task's contract from the composed config alone (no data read): label sets left open."""
    task = OmegaConf.to_container(cfg.task, resolve=True)
    return Contract.from_config(task["inputs"], task["outputs"], task["instructions"])


# -- root configs ---------------------------------------------------------------------------------


def test_every_group_has_options():
    # Guards the parametrisation below against a renamed folder silently testing nothing.
    for group in GROUPS:
        assert options(group), group
    assert "local" in options("lm") and "travel_intents" in options("task")
    assert set(PROGRAM_CLASS) == set(options("program")), "a program option without a test expectation"
    assert PRESET_CASES, "no presets in experiments/*.yaml"


@pytest.mark.parametrize("config_name", ROOT_CONFIGS)
def test_root_config_composes_and_resolves(make_cfg, config_name):
    cfg = make_cfg(config_name, fake=False)
    assert "hydra" not in cfg  # compose() drops the hydra node (its ${hydra:...} would not resolve)
    container = resolved(cfg)
    assert container["paths"]["root"] == str(PROJECT_ROOT)
    assert container["lm"]["_target_"] == "pipelines.lm.local_lm"
    assert container["task"]["name"] == "travel_intents"
    assert container["task"]["data"]["path"] == str(PROJECT_ROOT / "data/travel_intents/intents.csv")
    assert Path(container["task"]["data"]["path"]).is_file()
    # The task owns the contract; the program gets it (signature: null is filled by build_program).
    assert container["task"]["inputs"] == {"text": {"type": "str", "desc": "the customer's message"}}
    assert container["task"]["outputs"] == {"label": {"type": "label"}}
    assert "target" not in container["task"]
    assert container["program"]["_target_"] == "pipelines.programs.SingleStep"
    assert container["program"]["signature"] is None
    assert container["registry"]["name"] == "travel_intents"
    assert container["tracking"]["uri"].startswith("sqlite:///")
    assert container["seed"] == container["task"]["data"]["seed"] == 0
    # Four split roles, all sized (the fixture shrinks them).
    assert all(container["task"]["data"][f"{split}_size"] == 16 for split in SPLITS)


def test_root_config_specifics(make_cfg):
    train = resolved(make_cfg("train", fake=False))
    assert train["optimizer"]["name"] == "bootstrap"
    assert train["eval"]["split"] == "dev"
    assert train["report_splits"] == ["dev"] and train["baseline"] is False

    optimize = resolved(make_cfg("optimize", fake=False))
    assert optimize["optimizer"]["name"] == "miprov2"
    assert optimize["report_splits"] == ["dev", "test"] and optimize["baseline"] is True
    assert optimize["tracking"]["autolog"]["log_compiles"] is True

    main = resolved(make_cfg("main", fake=False))
    assert main["optimizer"]["name"] == "bootstrap"
    assert main["test_split"] == "test" and main["force"] is False
    assert main["report_splits"] == ["dev"] and main["baseline"] is False  # main trains with the train preset

    evaluate = resolved(make_cfg("evaluate", fake=False))
    assert evaluate["eval"]["split"] == "test" and evaluate["extra_metrics"] == {}

    register = resolved(make_cfg("register", fake=False))
    assert register["eval"]["split"] == "dev" and register["run_id"] is None

    serve = resolved(make_cfg("serve", fake=False))
    assert serve["model_uri"] == "models:/travel_intents@champion"
    serve = resolved(make_cfg("serve", ["alias=challenger", "task=banking77"], fake=False))
    assert serve["model_uri"] == "models:/banking77@challenger"


def test_train_is_a_preset_of_optimize(make_cfg):
    """Same keys, same pipeline: train differs from optimize only in its preset values."""
    train = resolved(make_cfg("train", fake=False))
    optimize = resolved(make_cfg("optimize", fake=False))
    outside_optimizer = lambda c: {k for k in flatten(c) if not k.startswith("optimizer.")}  # noqa: E731
    assert outside_optimizer(train) == outside_optimizer(optimize)
    assert (train["report_splits"], train["baseline"]) == (["dev"], False)
    assert "test" not in train["report_splits"]  # train never looks at the held-out split
    # Setting the preset's values by hand gives optimize's config exactly.
    as_optimize = make_cfg(
        "train",
        [
            "optimizer=miprov2",
            "report_splits=[dev,test]",
            "baseline=true",
            "tracking.autolog.log_compiles=true",
            "tracking.autolog.log_evals=true",
        ],
        fake=False,
    )
    assert resolved(as_optimize) == optimize


def test_default_tracking_uri_is_the_project_store_unless_the_environment_says_otherwise(monkeypatch):
    # Composed without the test fixture's store overrides, to see the configured defaults.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        local = compose(config_name="train")
        server = compose(config_name="train", overrides=["tracking=server"])
    assert local.tracking.uri == f"sqlite:///{PROJECT_ROOT}/mlflow.db"
    assert server.tracking.uri == "http://127.0.0.1:5000"
    assert server.tracking.artifact_location is None
    assert server.tracking.autolog.log_traces is True  # inherited from tracking/local
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    assert local.tracking.uri == server.tracking.uri == "http://tracking.example:5000"
    assert local.tracking.experiment == "from-env"


# -- every option of every group ------------------------------------------------------------------


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_group_option_composes_and_resolves(make_cfg, group, option):
    cfg = make_cfg("train", [f"{group}={option}"], fake=False)
    container = resolved(cfg)
    own = group_yaml(group, option)
    # The option's own scalar values made it into the composed config (those not overridden by the test).
    # background_traces: train's own config sets it (it traces every row it scores), above the group's default.
    skip = {"uri", "artifact_location", "experiment", "background_traces"} if group == "tracking" else set()
    for key, value in own.items():
        if key in skip or key == "defaults" or isinstance(value, dict | list) or "${" in str(value):
            continue
        assert container[group][key] == value, f"{group}.{key}"


@pytest.mark.parametrize("task", options("task"))
def test_every_task_composes_with_its_data(make_cfg, task):
    """`Task.from_config` on each shipped task at its own split sizes: contract, four splits, metric."""
    sizes = group_yaml("task", task).get("data", {})
    as_override = {None: "null"}  # `train_size: null` (train takes the rest) is Hydra's null, not the string "None"
    overrides = [f"task={task}"] + [
        f"task.data.{s}_size={as_override.get(sizes[f'{s}_size'], sizes[f'{s}_size'])}"
        for s in SPLITS
        if f"{s}_size" in sizes
    ]
    cfg = make_cfg("train", overrides, fake=False)
    path = Path(resolved(cfg)["task"]["data"]["path"])
    if not path.is_file():
        pytest.skip(f"dataset for task={task} not present on this machine: {path}")
    task_obj = Task.from_config(cfg.task)
    contract, splits = task_obj.contract, task_obj.splits
    assert task_obj.name == splits.name == task
    assert isinstance(splits, Splits) and splits.source == str(path.resolve())
    assert contract.input_names == list(cfg.task.inputs) and contract.output_names == list(cfg.task.outputs)
    assert contract.instructions == cfg.task.instructions
    assert callable(task_obj.metric) and task_obj.metric.__name__ == cfg.task.metric._target_.rsplit(".", 1)[-1]

    # Four disjoint splits at the configured sizes, each row keeping its source row number.
    assert list(splits.frames) == list(SPLITS)
    seen: set[int] = set()
    for split in SPLITS:
        frame = splits.frame(split)
        size = cfg.task.data[f"{split}_size"]
        if size is not None:
            assert len(frame) == size, split
        ids = set(splits.ids(split))
        assert len(ids) == len(frame) and not ids & seen, f"{split} overlaps an earlier split"
        seen |= ids
        # The contract's fields, then the derived extras (GSM8K's demo-only `reasoning`).
        assert list(frame.columns) == [ROW_ID, *contract.input_names, *contract.output_names, *splits.extras]
    assert set(splits.extras) == set(cfg.task.data.get("derive") or {}) - set(
        contract.input_names + contract.output_names
    )

    example = task_obj.examples("train")[0]
    assert set(example.inputs().keys()) == set(contract.input_names)
    assert set(example.labels().keys()) == set(contract.output_names + splits.extras)
    # The metric scores a perfect prediction 1 (feedback metric: the same score, with text).
    perfect = dspy.Prediction(**{f: example[f] for f in contract.output_names})
    assert task_obj.metric(example, perfect) == 1.0
    feedback = instantiate(cfg.task.feedback_metric)(example, perfect)
    assert feedback.score == 1.0 and feedback.feedback

    if not contract.label_fields:  # free-text answers (GSM8K)
        assert splits.labels == {} and task_obj.output_label_sets == {}
        return
    # Label outputs become Literals over the labels found in the data (or listed in the config).
    for name in contract.label_fields:
        labels = splits.labels[name]
        assert len(labels) >= 2
        assert list(contract.field(name).labels) == labels
        assert get_args(contract.field(name).annotation()) == tuple(labels)
        for split in SPLITS:
            assert set(splits.frame(split)[name]) <= set(labels)
    expected_labels = cfg.task.data.labels
    stratify = contract.label_fields[0]
    if expected_labels is not None:
        assert splits.labels[stratify] == sorted(str(label).lower() for label in expected_labels)
    # Stratified: a train split at least as big as the label set covers every label.
    train_labels = splits.frame("train")[stratify]
    if len(train_labels) >= len(splits.labels[stratify]):
        assert set(train_labels) == set(splits.labels[stratify])


def test_banking77_reads_the_shared_dataset_subset(make_cfg):
    cfg = make_cfg("train", ["task=banking77"], fake=False)
    path = Path(resolved(cfg)["task"]["data"]["path"])
    assert path == (PROJECT_ROOT / ".." / "shared/datasets/banking77/train.csv")
    assert cfg.task.data.columns == {"text": "text", "label": "category"}
    assert len(cfg.task.data.labels) == 10
    assert cfg.task.metric._target_ == "pipelines.evaluation.metrics.exact_match"  # inherited from travel_intents
    # The contract is inherited from travel_intents too.
    assert resolved(cfg)["task"]["inputs"] == group_yaml("task", "travel_intents")["inputs"]
    assert resolved(cfg)["task"]["outputs"] == {"label": {"type": "label"}}


def test_gsm8k_reads_the_shared_dataset_and_scores_numbers(make_cfg):
    cfg = make_cfg("train", ["task=gsm8k"], fake=False)
    container = resolved(cfg)
    path = Path(container["task"]["data"]["path"])
    assert path == (PROJECT_ROOT / ".." / "shared/datasets/gsm8k/train.jsonl")
    assert list(container["task"]["inputs"]) == ["question"] and list(container["task"]["outputs"]) == ["answer"]
    assert container["task"]["metric"]["_target_"] == "pipelines.evaluation.metrics.numeric_match"
    if not path.is_file():
        pytest.skip(f"GSM8K not present on this machine: {path}")
    task = Task.from_config(cfg.task)
    example = task.examples("dev")[0]
    # The number after "####" is the answer; the worked solution before it is the demo-only reasoning.
    assert isinstance(example.answer, int) and example.reasoning and "####" not in example.reasoning
    assert task.metric(example, dspy.Prediction(answer=str(example.answer))) == 1.0
    assert task.metric(example, dspy.Prediction(answer="-123456789")) == 0.0


@pytest.mark.parametrize("program", options("program"))
def test_every_program_instantiates(make_cfg, program):
    task = PROGRAM_TASK.get(program, "travel_intents")
    cfg = make_cfg("train", [f"program={program}", f"task={task}"], fake=False)
    contract = config_contract(cfg)
    if "label" in contract.output_names:
        contract = contract.with_labels({"label": LABELS})
    module, program_config = build_program(cfg.program, contract)
    assert isinstance(module, PROGRAM_CLASS[program])
    # The resolved config carries the contract: what the logged model rebuilds the program from.
    assert program_config["signature"] == contract.to_dict()
    assert program_config["_target_"] == cfg.program._target_
    rebuilt = instantiate(program_config, _convert_="all")
    assert [n for n, _ in rebuilt.named_predictors()] == [n for n, _ in module.named_predictors()]
    predictors = module.predictors()
    assert predictors
    # Every predictor works on the task's fields and keeps the task's instructions.
    for predictor in predictors:
        assert contract.instructions in predictor.signature.instructions
    # Between them the predictors write every task output (a multi-stage program splits them up).
    written = {name for predictor in predictors for name in predictor.signature.output_fields}
    assert set(contract.output_names) <= written
    if program in ("predict", "chain_of_thought"):
        (predictor,) = predictors
        signature = predictor.signature
        assert signature.instructions == cfg.task.instructions
        assert set(signature.input_fields) == {"text"}
        assert set(get_args(signature.output_fields["label"].annotation)) == set(LABELS)
        if cfg.program.reasoning:
            assert isinstance(module.predict, dspy.ChainOfThought)
        else:
            assert type(module.predict) is dspy.Predict


def _build(cfg, prompt_lm=None) -> tuple[OptimizerSpec, dspy.LM]:
    """The optimiser exactly as `optimize`/`train` build it (with the fake LM as task LM)."""
    lm = fake_lm()
    with dspy.context(lm=lm):
        return build_optimizer(cfg.optimizer, lm, prompt_lm), lm


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_builds(make_cfg, optimizer):
    cfg = make_cfg("train", [f"optimizer={optimizer}"], fake=False)
    assert cfg.optimizer.name == optimizer
    assert isinstance(resolved(cfg)["optimizer"].get("compile_args", {}), dict)
    spec, lm = _build(cfg)
    assert isinstance(spec, OptimizerSpec)
    assert spec.name == optimizer
    assert spec.uses_valset is cfg.optimizer.uses_valset
    assert spec.compile_args == resolved(cfg)["optimizer"]["compile_args"]
    compiler_cfg = cfg.optimizer.compiler
    if compiler_cfg is None:
        assert spec.optimizer is None
        return
    compiler = spec.optimizer
    target = compiler_cfg._target_
    assert f"{type(compiler).__module__}.{type(compiler).__name__}".endswith(target.rsplit(".", 1)[-1])
    assert isinstance(compiler, dspy.teleprompt.Teleprompter)
    if "metric" in compiler_cfg and hasattr(compiler, "metric"):  # GEPA keeps its own as metric_fn
        # The metric comes from the config, named so MLflow can label trace assessments with it.
        assert compiler.metric.__name__ == "exact_match"
        assert isinstance(compiler.metric, functools.partial) and compiler.metric.func is exact_match
    if cfg.optimizer.get("prompt_lm_arg"):
        # With prompt_lm null, the proposer/reflection LM is the task LM itself...
        arg = cfg.optimizer.prompt_lm_arg
        assert getattr(compiler, arg) is lm
        # ...and a separate prompt_lm goes under the argument name that optimiser takes.
        other = fake_lm()
        assert getattr(_build(cfg, prompt_lm=other)[0].optimizer, arg) is other
    if cfg.optimizer.get("finetune_step"):
        # A composite optimiser (BetterTogether) names the step among its strategy's; a plain one fine-tunes as a whole.
        assert spec.set_student_lm
        assert spec.finetune_step in spec.strategy_steps or not spec.strategy_steps


def test_gepa_metric_is_the_tasks_feedback_metric(make_cfg):
    cfg = make_cfg("train", ["optimizer=gepa"], fake=False)
    assert resolved(cfg)["optimizer"]["compiler"]["metric"] == resolved(cfg)["task"]["feedback_metric"]
    gepa = _build(cfg)[0].optimizer
    metric = gepa.metric_fn
    assert isinstance(metric, WithFeedback) and metric.__name__ == "exact_match"
    assert isinstance(metric.metric, functools.partial) and metric.metric.func is exact_match
    gold = dspy.Example(text="my bag is lost", label="lost_luggage").with_inputs("text")
    # GEPA calls it with five arguments, DSPy's evaluators with three: both give a score and feedback.
    wrong = metric(gold, dspy.Prediction(label="book_flight"), None, "predict", None)
    assert wrong.score == 0.0
    assert "label" in wrong.feedback and "book_flight" in wrong.feedback and "lost_luggage" in wrong.feedback
    right = metric(gold, dspy.Prediction(label="lost_luggage"))
    assert right.score == 1.0 and right.feedback

    # Another task's metric is wrapped the same way (GSM8K: numeric match).
    gsm8k = _build(make_cfg("train", ["optimizer=gepa", "task=gsm8k"], fake=False))[0].optimizer.metric_fn
    assert isinstance(gsm8k, WithFeedback) and gsm8k.metric.func is numeric_match
    question = dspy.Example(question="2+2?", answer="so #### 4", reasoning="2 and 2").with_inputs("question")
    scored = gsm8k(question, dspy.Prediction(answer="4", reasoning="no idea"), None, None, None)
    assert scored.score == 1.0 and "reasoning" not in scored.feedback  # the demo-only field: not scored, not fed back
    # Other optimisers keep the plain task metric.
    assert _build(make_cfg("train", ["optimizer=miprov2"], fake=False))[0].optimizer.metric.func is exact_match


def test_optimizer_settings_reach_the_compiler(make_cfg):
    bootstrap = instantiate(
        make_cfg("train", ["optimizer=bootstrap"], fake=False).optimizer.compiler, metric=exact_match
    )
    assert (bootstrap.max_bootstrapped_demos, bootstrap.max_labeled_demos, bootstrap.max_rounds) == (4, 8, 1)
    fewshot = instantiate(make_cfg("train", ["optimizer=labeled_fewshot", "optimizer.compiler.k=3"]).optimizer.compiler)
    assert fewshot.k == 3
    spec, _ = _build(make_cfg("optimize", ["optimizer=miprov2", "optimizer.compile_args.minibatch_size=7"]))
    assert spec.compile_args == {"num_trials": None, "minibatch_size": 7}
    assert spec.uses_valset is True


# -- provider LMs and keys ------------------------------------------------------------------------

PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "openai/gpt-4o-mini"),
    "anthropic": ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-haiku-latest"),
    "openai_compatible": ("OPENAI_COMPATIBLE_API_KEY", "self-hosted/served-model"),
}
SECRET = "sk-test-DO-NOT-LEAK-0123456789"


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_provider_lm_reads_its_key_from_the_environment_only(make_cfg, monkeypatch, provider):
    env, model = PROVIDERS[provider]
    monkeypatch.setenv(env, SECRET)
    cfg = make_cfg("train", [f"lm={provider}"], fake=False)
    assert cfg.lm.api_key_env == env
    lm = instantiate(cfg.lm)
    assert isinstance(lm, dspy.LM)
    assert lm.model == model
    assert lm.kwargs["api_key"] == SECRET
    # The key lives in the LM object only: never in the config, its YAML or the logged (redacted) form.
    assert SECRET not in OmegaConf.to_yaml(cfg)
    assert SECRET not in OmegaConf.to_yaml(cfg, resolve=True)
    assert SECRET not in str(redact(to_container(cfg)))
    if provider == "openai_compatible":
        assert lm.kwargs["api_base"] == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_provider_lm_without_its_key_names_the_variable(make_cfg, monkeypatch, provider):
    env, _ = PROVIDERS[provider]
    monkeypatch.delenv(env, raising=False)
    cfg = make_cfg("train", [f"lm={provider}"], fake=False)
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.lm, resolve=True).items() if k != "_target_"}
    with pytest.raises(MissingAPIKeyError) as info:
        provider_lm(**kwargs)
    assert env in str(info.value)
    # Through Hydra (as start_session builds it) the cause and the variable name survive.
    with pytest.raises(Exception) as wrapped:
        instantiate(cfg.lm)
    assert env in str(wrapped.value)
    assert isinstance(wrapped.value, MissingAPIKeyError) or isinstance(wrapped.value.__cause__, MissingAPIKeyError)


def test_self_hosted_lm_needs_no_key(make_cfg, monkeypatch):
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    cfg = make_cfg("train", ["lm=openai_compatible", "lm.api_base=http://gpu-box:8000/v1"], fake=False)
    lm = instantiate(cfg.lm)
    # A placeholder, so the client library never falls back to OPENAI_API_KEY for a foreign server.
    assert lm.kwargs["api_key"] == "no-key"
    assert lm.kwargs["api_base"] == "http://gpu-box:8000/v1"


def test_api_key_env_can_point_at_another_variable(make_cfg, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MY_TEAM_OPENAI_KEY", SECRET)
    cfg = make_cfg("train", ["lm=openai", "lm.api_key_env=MY_TEAM_OPENAI_KEY"], fake=False)
    assert instantiate(cfg.lm).kwargs["api_key"] == SECRET


# -- bad options and experiments ------------------------------------------------------------------


@pytest.mark.parametrize("group", ["optimizer", "lm", "task", "program", "tracking"])
def test_bad_group_option_lists_the_available_ones(make_cfg, group):
    with pytest.raises(MissingConfigException) as info:
        make_cfg("train", [f"{group}=nope"], fake=False)
    message = str(info.value)
    assert f"{group}/nope" in message
    for option in options(group):
        assert option in message
    assert isinstance(info.value, HydraException)


def test_bad_group_option_on_the_command_line_names_the_options():
    """Through an entry point (our `hydra_main`), Hydra's message reaches the user and the exit code is non-zero."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.optimize", "optimizer=nope"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Could not find 'optimizer/nope'" in proc.stderr
    assert "Available options in 'optimizer'" in proc.stderr
    for option in options("optimizer"):
        assert option in proc.stderr


def test_unknown_experiment_is_an_error(make_cfg):
    with pytest.raises(MissingConfigException, match="experiment/definitely_not_a_preset"):
        make_cfg("train", ["experiment=definitely_not_a_preset"], fake=False)


def preset_optimizer(experiment: str) -> str | None:
    preset = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS_DIR / f"{experiment}.yaml"))
    for entry in preset.get("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                if key.removeprefix("override").strip().lstrip("/") == "optimizer":
                    return option
    return None


PRESET_CASES = [
    pytest.param(config_name, experiment, id=f"{experiment}-{config_name}")
    for experiment in sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    for config_name in ["train", "optimize", "main", "evaluate", "register"]
]


@pytest.mark.parametrize(("config_name", "experiment"), PRESET_CASES)
def test_experiment_preset_composes(make_cfg, config_name, experiment):
    cfg = make_cfg(config_name, [f"experiment={experiment}"], fake=False)
    container = resolved(cfg)
    # Without `# @package _global_` a preset's keys land under `experiment.` and change nothing.
    assert "experiment" not in container, f"experiments/{experiment}.yaml lacks '# @package _global_'"
    assert container != resolved(make_cfg(config_name, fake=False)), "the preset changed nothing"

    preset = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS_DIR / f"{experiment}.yaml"))
    # Its group choices (`override /optimizer: none`) took effect...
    for entry in preset.pop("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                group = key.removeprefix("override").strip().lstrip("/")
                if group in container and isinstance(container[group], dict) and "name" in container[group]:
                    assert container[group]["name"] == option, f"{group}={option}"
                elif group == "program":  # programs have no name: compare with the option composed alone
                    alone = resolved(make_cfg(config_name, [f"program={option}"], fake=False))
                    assert container["program"] == alone["program"], f"program={option}"
    # ...and so did its values (except the sizes the test fixture shrinks on the command line).
    for key, value in flatten(preset).items():
        if not key.startswith("task.data.") or not key.endswith("_size"):
            node = container
            for part in key.split("."):
                node = node[part]
            assert node == value, key

    assert container["optimizer"]["name"] in options("optimizer")
    spec, _ = _build(cfg)
    assert (spec.optimizer is None) == (cfg.optimizer.compiler is None)
    program, _ = build_program(cfg.program, config_contract(cfg))
    assert isinstance(program, dspy.Module) and program.predictors()
    if config_name == "train":
        path = Path(container["task"]["data"]["path"])
        if not path.is_file():
            pytest.skip(f"dataset of experiment={experiment} not present on this machine: {path}")
        task = Task.from_config(cfg.task)
        for split in SPLITS:
            assert len(task.examples(split)) == cfg.task.data[f"{split}_size"], split
        # The program built on the task's contract (label sets from the data) still builds.
        build_program(cfg.program, task.contract)


# -- redact / flatten -----------------------------------------------------------------------------


def test_redact_hides_secret_values_anywhere():
    value = {
        "lm": {"model": "openai/gpt-4o-mini", "api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "max_tokens": 512},
        "servers": [{"url": "http://a", "token": "t-1", "password": "p-1"}, {"API-KEY": "k-2"}],
        "client_secret": "s-1",
        "Authorization": "Bearer x",
        "access_token": "a-1",
        "token_env": "HF_TOKEN",
        "nothing": None,
        "api_key": None,
        "tuple": ({"secret": "s-2"}, 3),
    }
    out = redact(value)
    assert out["lm"] == {
        "model": "openai/gpt-4o-mini",
        "api_key": REDACTED,
        "api_key_env": "OPENAI_API_KEY",
        "max_tokens": 512,
    }
    assert out["servers"] == [{"url": "http://a", "token": REDACTED, "password": REDACTED}, {"API-KEY": REDACTED}]
    assert out["client_secret"] == out["Authorization"] == out["access_token"] == REDACTED
    assert out["token_env"] == "HF_TOKEN"
    assert out["nothing"] is None and out["api_key"] is None  # nothing to hide
    assert out["tuple"] == [{"secret": REDACTED}, 3]
    for secret in ("sk-1", "t-1", "p-1", "k-2", "s-1", "s-2", "a-1", "Bearer x"):
        assert secret not in str(out)
    # The input is left alone.
    assert value["lm"]["api_key"] == "sk-1" and value["servers"][0]["token"] == "t-1"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("apikey", True),
        ("OPENAI_API_KEY", True),
        ("hf_token", True),
        ("db_password", True),
        ("secret", True),
        ("api_key_env", False),
        ("token_env", False),
        ("max_tokens", False),
        ("model", False),
        ("secret_name_env", False),
    ],
)
def test_is_secret_key(key, secret):
    assert is_secret_key(key) is secret


def test_redact_works_on_a_composed_config(make_cfg, monkeypatch):
    cfg = make_cfg("train", ["lm=openai", "+lm.api_key=sk-inline-secret"], fake=False)
    out = redact(to_container(cfg))
    assert out["lm"]["api_key"] == REDACTED
    assert out["lm"]["api_key_env"] == "OPENAI_API_KEY"
    assert out["task"]["name"] == "travel_intents"


def test_flatten():
    nested = {"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": None}
    assert flatten(nested) == {"a.b": 1, "a.c.d": "x", "e": [1, 2], "f": None}
    assert flatten({"a": {"b": 1}}, sep="/") == {"a/b": 1}
    assert flatten({"b": 1}, prefix="root") == {"root.b": 1}
    assert flatten({}) == {}


def test_flatten_a_composed_config_gives_mlflow_params(make_cfg):
    flat = flatten(to_container(make_cfg("train", ["optimizer=labeled_fewshot"], fake=False)))
    assert flat["optimizer.compiler.k"] == 8
    assert flat["optimizer.name"] == "labeled_fewshot"
    assert flat["task.data.train_size"] == 16
    assert flat["lm._target_"] == "pipelines.lm.local_lm"
    assert all(not isinstance(v, dict) for v in flat.values())


@pytest.mark.parametrize(
    ("entry", "override", "key"),
    [
        ("train", "eval.split=validation", "eval.split"),
        ("evaluate", "eval.split=validation", "eval.split"),
        ("optimize", "report_splits=[dev,validation]", "report_splits"),
    ],
)
def test_a_misnamed_split_fails_before_any_run_or_lm_call(make_cfg, entry, override, key):
    from pipelines.data.splits import DataError
    from pipelines.evaluate import evaluate
    from pipelines.optimize import optimize
    from tests.fakes import KeywordEngine

    cfg = make_cfg(entry, [override])
    calls = []
    original = KeywordEngine.complete
    KeywordEngine.complete = lambda self, request: calls.append(request) or original(self, request)
    try:
        roles = r"\['train', 'val', 'dev', 'test'\]"
        with pytest.raises(DataError, match=rf"{key}: unknown split\(s\) \['validation'\]; choose from {roles}"):
            (evaluate if entry == "evaluate" else optimize)(cfg)
    finally:
        KeywordEngine.complete = original
    assert calls == []
    assert mlflow.MlflowClient(cfg.tracking.uri).get_experiment_by_name("test") is None


def test_an_unknown_optimizer_setting_names_the_options_before_any_run(make_cfg):
    from hydra.errors import InstantiationException

    from pipelines.optimize import optimize

    cfg = make_cfg("optimize", ["optimizer=miprov2", "optimizer.compiler.auto=superheavy"])
    with pytest.raises(InstantiationException, match="Invalid value for auto: superheavy. Must be one of"):
        optimize(cfg)
    assert mlflow.MlflowClient(cfg.tracking.uri).get_experiment_by_name("test") is None
