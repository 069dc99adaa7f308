"""`hydra_main`: `@hydra.main` for our entry points, plus the one MLproject quirk it needs.

`mlflow run . -e train -P overrides="optimizer=none seed=1"` hands the whole string to the command as
ONE argument; Hydra would read it as a single override with a space in its value. An argument made
only of `key=value` words is split back into separate overrides before Hydra parses the command line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import mlflow
from omegaconf import DictConfig

from pipelines.config import CONF_DIR, to_container
from pipelines.tracking.run_lifecycle import run_tags, started_run

_HYDRA_FLAGS = ("-m", "--multirun", "--cfg", "--info", "-c", "--help", "--hydra-help")


def _is_override(word: str) -> bool:
    return "=" in word or word.startswith(("~", "+")) or word in _HYDRA_FLAGS


# Whitespace-separated words; quoted parts stay whole AND keep their quotes, which Hydra needs
# to read `task.instructions='Hello, world'` as one string rather than a list.
_WORD = re.compile(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""")


def _unwrap(word: str) -> str:
    """`'key="a -> b"'` -> `key="a -> b"`: a whole override quoted the shell's way, as a user types it
    inside the packed string. Hydra keys are never quoted, so a word that starts with a quote is one."""
    if len(word) > 2 and word[0] == word[-1] and word[0] in "'\"" and "=" in word[1:-1]:
        return word[1:-1]
    return word


def split_packed_overrides(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        words = [_unwrap(w) for w in _WORD.findall(arg)]
        out.extend(words if len(words) > 1 and all(_is_override(w) for w in words) else [arg])
    return out


def searchpath_override() -> str:
    """The override that puts the project's `conf/` on Hydra's search path, for a root config kept elsewhere."""
    return f"hydra.searchpath=[file://{CONF_DIR}]"


def hydra_main(config_name: str, config_dir: Path = CONF_DIR) -> Callable:
    """Decorate `main(cfg)`; the result is a zero-argument callable for `python -m`.

    A root config outside `conf/` (`config_dir`: the benchmarks' own) still composes the project's groups:
    `conf/` goes on Hydra's search path."""

    def decorate(fn: Callable) -> Callable:
        wrapped = hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")(fn)
        searchpath = [] if Path(config_dir) == CONF_DIR else [searchpath_override()]

        def run():
            sys.argv = [sys.argv[0], *split_packed_overrides(sys.argv[1:]), *searchpath]
            try:
                return wrapped()
            except (SystemExit, KeyboardInterrupt) as exc:
                from pipelines.tracking.signals import exit_if_signalled  # imported by every entry point anyway

                exit_if_signalled(exc)
                raise

        run.__doc__ = fn.__doc__
        return run

    return decorate


def command_line_overrides() -> list[str]:
    """The Hydra overrides of the running entry point (empty when called as a library)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig not set: not under @hydra.main
        return []


def adopt_recorded_task(cfg, run_id: str | None) -> bool:
    """Replace `cfg.task` with the task settings `run_id` recorded, unless the command line changed the task:
    `register` and `evaluate` score a model on the data it was trained on. Returns whether it did."""
    from omegaconf import OmegaConf, open_dict

    from pipelines.tracking.lineage import recorded_task

    task = recorded_task(run_id, command_line_overrides())
    if task is None:
        return False
    with open_dict(cfg):
        cfg.task = OmegaConf.create(task)
    return True


def check_split_names(cfg: DictConfig) -> None:
    """`eval.split` and `report_splits` name split roles; refuse any other name, listing the roles."""
    from pipelines.data.splits import SPLITS, DataError

    named = {"eval.split": [cfg.eval.split]} if "eval" in cfg and cfg.eval.get("split") else {}
    if cfg.get("report_splits") is not None:
        named["report_splits"] = list(cfg.report_splits)
    for key, splits in named.items():
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise DataError(f"{key}: unknown split(s) {unknown}; choose from {list(SPLITS)}")


@contextmanager
def tracked_run(cfg: DictConfig, entry: str, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under `mlflow run`, resume) the run for one entry point and record its config.

    The entry points' one unpacking of `cfg` for a run: the tracking settings and the few names it tags."""
    check_split_names(cfg)  # a typo in a split name fails here, before the run spends anything
    tags = run_tags(
        entry,
        task=cfg.task.name if "task" in cfg else None,
        optimizer=cfg.optimizer.name if "optimizer" in cfg and entry in ("train", "optimize") else None,
        lm=cfg.lm.get("model") if "lm" in cfg else None,
    )
    with started_run(cfg.tracking, run_name, tags, to_container(cfg)) as run:
        yield run
