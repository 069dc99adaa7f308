"""The real Hydra configs: every root config and group option composes, resolves and instantiates.

No LM is ever called: local LM configs are composed and resolved but not instantiated (that would
assemble the 491 MB embedded model); provider LMs are instantiated with fake keys (no network).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import get_args

import dspy
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pipelines.config import CONF_DIR, PROJECT_ROOT, REDACTED, flatten, is_secret_key, redact, to_container
from pipelines.data.splits import Splits
from pipelines.lm import MissingAPIKeyError, provider_lm
from pipelines.evaluation.metrics import exact_match
from pipelines.programs import Classifier, build_program

ROOT_CONFIGS = ["train", "evaluate", "register", "serve", "main"]
GROUPS = ["lm", "task", "program", "optimizer", "tracking"]
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"
LABELS = ["book_flight", "cancel_booking", "check_in"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GROUP_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]
EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")) or [
    pytest.param(None, marks=pytest.mark.skip(reason="no presets in experiments/*.yaml yet"))
]


def resolved(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def group_yaml(group: str, option: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))


# -- root configs ---------------------------------------------------------------------------------


def test_every_group_has_options():
    # Guards the parametrisation below against a renamed folder silently testing nothing.
    for group in GROUPS:
        assert options(group), group
    assert "local" in options("lm") and "travel_intents" in options("task")


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
    assert container["program"]["instructions"] == container["task"]["instructions"]
    assert container["registry"]["name"] == "travel_intents"
    assert container["tracking"]["uri"].startswith("sqlite:///")
    assert container["seed"] == container["task"]["data"]["seed"] == 0


def test_root_config_specifics(make_cfg):
    train = resolved(make_cfg("train", fake=False))
    assert train["optimizer"]["name"] == "bootstrap"
    assert train["eval"]["split"] == "dev"

    main = resolved(make_cfg("main", fake=False))
    assert main["optimizer"]["name"] == "bootstrap"
    assert main["test_split"] == "test" and main["force"] is False

    evaluate = resolved(make_cfg("evaluate", fake=False))
    assert evaluate["eval"]["split"] == "test" and evaluate["extra_metrics"] == {}

    register = resolved(make_cfg("register", fake=False))
    assert register["eval"]["split"] == "dev" and register["run_id"] is None

    serve = resolved(make_cfg("serve", fake=False))
    assert serve["model_uri"] == "models:/travel_intents@champion"
    serve = resolved(make_cfg("serve", ["alias=challenger", "task=banking77"], fake=False))
    assert serve["model_uri"] == "models:/banking77@challenger"


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
    skip = {"uri", "artifact_location", "experiment"} if group == "tracking" else set()
    for key, value in own.items():
        if key in skip or key == "defaults" or isinstance(value, dict | list) or "${" in str(value):
            continue
        assert container[group][key] == value, f"{group}.{key}"


@pytest.mark.parametrize("task", options("task"))
def test_every_task_data_instantiates(make_cfg, task):
    sizes = group_yaml("task", task).get("data", {})
    overrides = [f"task={task}"] + [
        f"task.data.{k}={sizes[k]}" for k in ("train_size", "dev_size", "test_size") if k in sizes
    ]
    cfg = make_cfg("train", overrides, fake=False)
    path = Path(resolved(cfg)["task"]["data"]["path"])
    if not path.is_file():
        pytest.skip(f"dataset for task={task} not present on this machine: {path}")
    splits = instantiate(cfg.task.data)
    assert isinstance(splits, Splits)
    assert splits.name == task
    if cfg.task.data.get("classification") is False:  # free-text answers (GSM8K)
        assert splits.labels is None and splits.target in splits.frames["train"]
        return
    expected_labels = cfg.task.data.labels
    if expected_labels is not None:
        assert splits.labels == sorted(str(label).lower() for label in expected_labels)
    assert len(splits.labels) >= 2
    for split in ("train", "dev", "test"):
        size = cfg.task.data[f"{split}_size"]
        if size is not None:
            assert len(splits.frames[split]) == size
        assert set(splits.frames[split]["label"]) <= set(splits.labels)
    # Stratified: a train split at least as big as the label set covers every label.
    if len(splits.frames["train"]) >= len(splits.labels):
        assert set(splits.frames["train"]["label"]) == set(splits.labels)
    example = splits.train[0]
    assert set(example.inputs().keys()) == {"text"} and example.label in splits.labels


def test_banking77_reads_the_shared_dataset_subset(make_cfg):
    cfg = make_cfg("train", ["task=banking77"], fake=False)
    path = Path(resolved(cfg)["task"]["data"]["path"])
    assert path == (PROJECT_ROOT / ".." / "shared/datasets/banking77/train.csv")
    assert cfg.task.data.columns == {"text": "text", "label": "category"}
    assert len(cfg.task.data.labels) == 10
    assert cfg.task.metric._target_ == "pipelines.evaluation.metrics.exact_match"  # inherited from travel_intents


@pytest.mark.parametrize("program", options("program"))
def test_every_program_instantiates(make_cfg, program):
    cfg = make_cfg("train", [f"program={program}"], fake=False)
    if not cfg.program._target_.endswith("Classifier"):
        module = build_program(cfg.program, None)
        assert module.predictors() and module.predictors()[0].signature.instructions == cfg.task.instructions
        return
    module = build_program(cfg.program, LABELS)
    assert isinstance(module, Classifier)
    assert module.labels == LABELS
    (predictor,) = module.predictors()
    signature = predictor.signature
    assert signature.instructions == cfg.task.instructions
    assert set(get_args(signature.output_fields["label"].annotation)) == set(LABELS)
    if cfg.program.reasoning:
        assert isinstance(module.predict, dspy.ChainOfThought)
    else:
        assert type(module.predict) is dspy.Predict


def _build(cfg):
    """The optimiser exactly as `optimize`/`train` build it (with the fake LM as task LM)."""
    from pipelines.optimizers.compile import build_optimizer
    from pipelines.session import Session

    from .fakes import fake_lm

    lm = fake_lm()
    with dspy.context(lm=lm):
        return build_optimizer(cfg, Session(lm=lm, adapter=None)), lm


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_compiler_instantiates(make_cfg, optimizer):
    cfg = make_cfg("train", [f"optimizer={optimizer}"], fake=False)
    assert cfg.optimizer.name == optimizer
    assert isinstance(resolved(cfg)["optimizer"].get("compile_args", {}), dict)
    compiler_cfg = cfg.optimizer.compiler
    if compiler_cfg is None:
        assert _build(cfg)[0] is None
        return
    compiler, lm = _build(cfg)
    target = compiler_cfg._target_
    assert f"{type(compiler).__module__}.{type(compiler).__name__}".endswith(target.rsplit(".", 1)[-1])
    assert isinstance(compiler, dspy.teleprompt.Teleprompter)
    if "metric" in compiler_cfg and hasattr(compiler, "metric"):  # GEPA keeps its own as metric_fn
        # The metric comes from the config, named so MLflow can label trace assessments with it.
        assert compiler.metric.__name__ in ("exact_match", "exact_match_with_feedback")
        assert isinstance(compiler.metric, functools.partial)
    if cfg.optimizer.get("prompt_lm_arg"):
        # With prompt_lm null, the proposer/reflection LM is the task LM itself.
        arg = cfg.optimizer.prompt_lm_arg
        assert getattr(compiler, arg) is lm


def test_optimizer_settings_reach_the_compiler(make_cfg):
    bootstrap = instantiate(
        make_cfg("train", ["optimizer=bootstrap"], fake=False).optimizer.compiler, metric=exact_match
    )
    assert (bootstrap.max_bootstrapped_demos, bootstrap.max_labeled_demos, bootstrap.max_rounds) == (4, 8, 1)
    fewshot = instantiate(make_cfg("train", ["optimizer=labeled_fewshot", "optimizer.compiler.k=3"]).optimizer.compiler)
    assert fewshot.k == 3


# -- provider LMs and keys ------------------------------------------------------------------------

PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "openai/gpt-4o-mini"),
    "anthropic": ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-haiku-latest"),
    "openai_compatible": ("OPENAI_COMPATIBLE_API_KEY", "openai/served-model"),
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


def test_unknown_experiment_is_an_error(make_cfg):
    with pytest.raises(MissingConfigException, match="experiment/definitely_not_a_preset"):
        make_cfg("train", ["experiment=definitely_not_a_preset"], fake=False)


@pytest.mark.parametrize("config_name", ["train", "main", "evaluate", "register"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
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
    # ...and so did its values (except the sizes the test fixture shrinks on the command line).
    for key, value in flatten(preset).items():
        if not key.startswith("task.data.") or not key.endswith("_size"):
            node = container
            for part in key.split("."):
                node = node[part]
            assert node == value, key

    assert container["optimizer"]["name"] in options("optimizer")
    if cfg.optimizer.compiler is not None:
        assert _build(cfg)[0] is not None
    build_program(cfg.program, LABELS if cfg.program._target_.endswith("Classifier") else None)
    if config_name == "train":
        path = Path(container["task"]["data"]["path"])
        if not path.is_file():
            pytest.skip(f"dataset of experiment={experiment} not present on this machine: {path}")
        splits = instantiate(cfg.task.data)
        assert len(splits.frames["train"]) == cfg.task.data.train_size


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
