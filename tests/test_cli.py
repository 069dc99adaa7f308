"""The command line: MLproject's packed `-P overrides="a=1 b=2"` argument, and `--cfg` through `python -m`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from pipelines.cli import split_packed_overrides
from pipelines.config import PROJECT_ROOT

# -- split_packed_overrides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["optimizer=none seed=1"], ["optimizer=none", "seed=1"]),
        (["optimizer=none  task=banking77   seed=2"], ["optimizer=none", "task=banking77", "seed=2"]),
        # A quoted value with spaces is one override; Hydra gets it exactly as typed.
        (["task.instructions='Say hi there'"], ["task.instructions='Say hi there'"]),
        (["-m", "optimizer=a,b"], ["-m", "optimizer=a,b"]),
        (["seed=1"], ["seed=1"]),
        (["optimizer=none", "seed=1"], ["optimizer=none", "seed=1"]),
        ([], []),
        (["--cfg", "job", "optimizer=none seed=1"], ["--cfg", "job", "optimizer=none", "seed=1"]),
        (["-m optimizer=a,b"], ["-m", "optimizer=a,b"]),
        (["+extra=1 ~run_name"], ["+extra=1", "~run_name"]),
        # A whole override quoted the shell's way inside the packed string (as in the README).
        (
            ["""optimizer=bettertogether 'optimizer.compile_args.strategy="p -> w"' seed=1"""],
            ["optimizer=bettertogether", 'optimizer.compile_args.strategy="p -> w"', "seed=1"],
        ),
        # Not made only of overrides: left for Hydra to judge.
        (["hello world"], ["hello world"]),
        (["seed=1 stray"], ["seed=1 stray"]),
        # Unbalanced quotes: shlex cannot split it, so it is passed on untouched.
        (["task.instructions='unclosed seed=1"], ["task.instructions='unclosed seed=1"]),
    ],
)
def test_split_packed_overrides(argv, expected):
    assert split_packed_overrides(list(argv)) == expected


def test_packed_quoted_value_keeps_its_spaces():
    out = split_packed_overrides(["task.instructions='Say hi there' seed=1"])
    assert len(out) == 2
    assert out[1] == "seed=1"
    assert out[0].startswith("task.instructions=") and "Say hi there" in out[0]


# -- python -m pipelines.train --cfg job ----------------------------------------------------------


def run_cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/cli.db"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.train", *args],
        cwd=tmp_path,  # the configs and paths must not depend on the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def printed_config(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return yaml.safe_load(proc.stdout)


def test_cfg_job_prints_the_composed_config_without_running(tmp_path):
    proc = run_cli(tmp_path, "--cfg", "job", "--resolve", "optimizer=none")
    cfg = printed_config(proc)
    assert cfg["optimizer"] == {"name": "none", "uses_valset": False, "compiler": None, "compile_args": {}}
    assert cfg["seed"] == 0
    assert cfg["task"]["name"] == "travel_intents"
    assert cfg["paths"]["root"] == str(PROJECT_ROOT)
    # MLFLOW_TRACKING_URI in the environment wins over the project store.
    assert cfg["tracking"]["uri"] == f"sqlite:///{tmp_path}/cli.db"
    # --cfg only prints: no run, so no store was created and nothing was written to the working dir.
    assert not (tmp_path / "cli.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cfg_job_accepts_packed_overrides_as_one_argument(tmp_path):
    proc = run_cli(tmp_path, "--cfg", "job", "optimizer=none seed=3 task.instructions='Say hi there'")
    cfg = printed_config(proc)
    assert cfg["seed"] == 3
    assert cfg["optimizer"]["name"] == "none"
    assert cfg["task"]["instructions"] == "Say hi there"
    assert cfg["task"]["data"]["seed"] == "${seed}"  # unresolved without --resolve


def test_packed_quoted_value_with_a_comma(tmp_path):
    proc = run_cli(tmp_path, "--cfg", "job", "task.instructions='Hello, world' seed=1")
    cfg = printed_config(proc)
    assert cfg["task"]["instructions"] == "Hello, world"
    assert cfg["seed"] == 1
