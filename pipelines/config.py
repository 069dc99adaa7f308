"""Config plumbing shared by every entry point: the project root, secret redaction, flat params.

`${project_root:}` is registered as an OmegaConf resolver so that paths (the sqlite tracking store,
the default dataset) are absolute and do not move with the working directory; that is the fix
lightning-hydra-template adopted for MLflow runs scattered across Hydra output folders.
"""

from __future__ import annotations

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
