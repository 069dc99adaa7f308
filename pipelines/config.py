"""Config plumbing shared by every entry point: the project root, secret redaction, flat params, and
`instantiate` for the `_target_` configs a logged model rebuilds itself from.

`${project_root:}` is registered as an OmegaConf resolver so that paths (the sqlite tracking store,
the default dataset) are absolute and do not move with the working directory; that is the fix
lightning-hydra-template adopted for MLflow runs scattered across Hydra output folders.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)

# Key names whose values are secrets wherever they appear. `api_key_env` is allowed through: it
# holds the NAME of an environment variable, never its value.
_SECRET_KEY = re.compile(
    r"(api[_-]?key|secret([_-]?(access[_-]?)?key)?|private[_-]?key|access[_-]?key|token|password|passwd"
    r"|credentials?|authorization)$",
    re.IGNORECASE,
)
REDACTED = "***REDACTED***"


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not key.endswith("_env")


def to_container(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Resolved plain-Python copy of a config (a dict passes through)."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def redact(value: Any) -> Any:
    """Copy of `value` with every secret-looking key's value replaced."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(str(k)) and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def flatten(value: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and other leaves are kept as they are (callers stringify)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{sep}{k}" if prefix else str(k), sep))
        return out
    return {prefix: value}


def locate(path: str) -> Any:
    """The object a dotted `_target_` names: `pipelines.lm.provider_lm`, `pipelines.programs.SingleStep`."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:cut]).startswith(exc.name):
                raise  # the module exists but something it imports does not: say that, not "no such target"
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot locate _target_ {path!r}")


def instantiate(config: Any, **kwargs: Any) -> Any:
    """Hydra's `instantiate` for plain configs, as a logged model stores them (`spec.json`): nested `_target_`
    mappings are built first, `_args_` are positional, `_partial_: true` gives a `functools.partial`; `kwargs`
    override the config's keys. So a served model rebuilds its LM, adapter, program and guards without Hydra
    (not among its requirements). Hydra's `_convert_` and `_recursive_` are accepted and ignored: configs here
    are plain, and always built recursively."""
    if isinstance(config, DictConfig | ListConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, list | tuple):
        return [instantiate(item) for item in config]
    if not isinstance(config, Mapping):
        return config
    config = {**config, **kwargs}
    if "_target_" not in config:
        return {k: instantiate(v) for k, v in config.items()}
    target = locate(str(config.pop("_target_")))
    args = [instantiate(a) for a in config.pop("_args_", [])]
    partial = bool(config.pop("_partial_", False))
    for special in ("_convert_", "_recursive_"):
        config.pop(special, None)
    params = {k: instantiate(v) for k, v in config.items()}
    return functools.partial(target, *args, **params) if partial else target(*args, **params)
