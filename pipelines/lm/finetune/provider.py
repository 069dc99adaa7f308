"""A DSPy fine-tuning `Provider` for the embedded llama.cpp model: LoRA on the CPU, served by llama.cpp.

`BootstrapFinetune` (BetterTogether's `w` step) calls `lm.kill()`, `lm.finetune(rows)` and, on the new
LM, `lm.launch()`. Here:

- `finetune` trains a LoRA adapter on the chat rows (`pipelines.lm.finetune.lora`), writes it as a GGUF
  adapter for the quantised base (`gguf_adapter`), stores it content-addressed in the adapters folder,
  registers it with the engine and returns `local/<model>:ft-<digest>`; DSPy then copies the LM with
  that id, which shares our engine, and the engine routes the id to base + adapter.
- `launch`/`kill` load/free that model's llama.cpp context; both are idempotent.
- Each run's fine-tuning is logged to the MLflow run that started it (the job remembers the run:
  MLflow's active run is per thread and training runs in DSPy's job thread): loss per step, rows,
  settings, times, peak memory, and the adapter file itself.

Every fine-tune starts from the base weights: a second `w` step in a strategy trains a fresh adapter
on the new traces rather than stacking adapters.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from dspy.clients.provider import Provider, TrainingJob
from dspy.clients.utils_finetune import TrainDataFormat

from pipelines.lm.finetune.lora import LoRASettings
from pipelines.lm.llama_engine import FT_MARK, LlamaCppEngine
from pipelines.lm.weights import default_cache_dir, file_digest

log = logging.getLogger(__name__)

FINETUNE_EXTRA_HINT = (
    "Fine-tuning the embedded model needs the project's `finetune` extra: "
    "pip install -e '.[finetune]'  (torch==2.13.0 CPU, transformers, peft, gguf; `make setup` installs it)"
)


class FinetuningDependenciesMissing(ImportError):  # noqa: N818
    pass


def require_finetune_deps() -> None:
    missing = []
    for module in ("torch", "transformers", "peft", "gguf"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise FinetuningDependenciesMissing(f"Missing {', '.join(missing)}. {FINETUNE_EXTRA_HINT}")


def default_adapters_dir() -> Path:
    """Beside the embedded model's weights cache, shared by every process of the user."""
    return default_cache_dir().parent / "adapters"


class LoRATrainingJob(TrainingJob):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        active = mlflow.active_run()  # created in the caller's thread, where the run is active
        self.run_id = active.info.run_id if active else None
        self._client = mlflow.MlflowClient() if self.run_id else None
        self.state = "pending"
        self.losses: list[float] = []
        self._cancelled = False

    def status(self) -> str:
        return self.state

    def cancel(self) -> bool:
        self._cancelled = True  # checked between steps: torch offers no safe way to stop mid-step
        return super().cancel()

    def on_step(self, step: int, loss: float) -> None:
        if self._cancelled:
            raise RuntimeError("fine-tuning cancelled")
        self.losses.append(loss)
        if self._client:
            self._client.log_metric(self.run_id, "finetune_loss", loss, step=step)


class LlamaCppLoRAProvider(Provider):
    def __init__(
        self,
        engine: LlamaCppEngine,
        settings: LoRASettings | dict | None = None,
        adapters_dir: str | Path | None = None,
    ):
        super().__init__()
        self.finetunable = True
        self.TrainingJob = LoRATrainingJob
        self.engine = engine
        self.settings = settings if isinstance(settings, LoRASettings) else LoRASettings(**(settings or {}))
        self.adapters_dir = Path(adapters_dir) if adapters_dir else default_adapters_dir()
        self.trained_tokens = 0  # tokens through the model in every fine-tune this provider ran (a benchmark's cost)

    @staticmethod
    def is_provider_model(model: str) -> bool:
        return model.startswith("local/")

    @staticmethod
    def check_ready() -> None:
        """Raise (naming the install command) when the fine-tuning extra is missing: checked before a run spends."""
        require_finetune_deps()

    def launch(self, lm, launch_kwargs: dict[str, Any] | None = None) -> None:
        self.engine.load(lm.model)

    def kill(self, lm, launch_kwargs: dict[str, Any] | None = None) -> None:
        # Frees the context's memory before training (BootstrapFinetune kills the LM it fine-tunes).
        self.engine.unload(lm.model)

    def adapter_path(self, model: str) -> str | None:
        return self.engine.adapter_for(model)

    def finetune(
        self,
        job: LoRATrainingJob,
        model: str,
        train_data: list[dict[str, Any]],
        train_data_format: TrainDataFormat | str | None,
        train_kwargs: dict[str, Any] | None = None,
    ) -> str:
        if train_data_format not in (TrainDataFormat.CHAT, "chat", None):
            raise ValueError(f"LoRA fine-tuning takes chat rows, got {train_data_format!r}")
        require_finetune_deps()
        settings = LoRASettings.merged(self.settings, train_kwargs)
        job.state = "running"
        start = time.perf_counter()
        try:
            result, path = self._train_and_store(job, train_data, settings)
        except BaseException:
            job.state = "failed"
            raise
        self.trained_tokens += result.tokens
        digest = path.stem
        self.engine.register_adapter(digest, str(path))
        new_model = f"{model.split(FT_MARK)[0]}{FT_MARK}{digest}"
        total = time.perf_counter() - start
        job.state = "succeeded"
        log.info(
            "fine-tuned %s -> %s: %d rows, %d steps, loss %.4f -> %.4f, %.0fs",
            model,
            new_model,
            result.encode.kept,
            result.steps,
            result.losses[0],
            result.losses[-1],
            total,
        )
        if job.run_id:
            self._log(job.run_id, settings, result, path, new_model, total)
        return new_model

    def _train_and_store(self, job: LoRATrainingJob, train_data: list[dict], settings: LoRASettings):
        """Train, write the GGUF adapter into the adapters folder under its content hash; (result, path)."""
        from pipelines.lm.finetune.gguf_lora import write_lora_gguf
        from pipelines.lm.finetune.lora import train_lora

        peft_model, result = train_lora(self.engine.model_path, train_data, settings, on_step=job.on_step)
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.adapters_dir, suffix=".gguf.part")
        os.close(fd)
        try:
            write_lora_gguf(peft_model, self.engine.model_path, tmp, alpha=settings.alpha)
            path = self.adapters_dir / f"{file_digest(tmp)}.gguf"
            os.replace(tmp, path)  # content-addressed: a concurrent writer of the same adapter is harmless
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        del peft_model  # ~4 GB of dequantised weights and optimiser state: give it back before serving resumes
        gc.collect()
        return result, path

    @staticmethod
    def _log(run_id: str, settings: LoRASettings, result, adapter: Path, new_model: str, total: float) -> None:
        client = mlflow.MlflowClient()
        summary = {
            "model": new_model,
            "settings": asdict(settings),
            "rows": asdict(result.encode),
            "steps": result.steps,
            "losses": result.losses,
            "load_seconds": result.load_seconds,
            "train_seconds": result.train_seconds,
            "total_seconds": total,
            "peak_rss_mb": result.peak_rss_mb,
            "tokens": result.tokens,
            "tokens_per_s": result.tokens_per_s,
            "resumed_from_step": result.resumed_from,
            "checkpoint": result.checkpoint,
            "adapter_bytes": adapter.stat().st_size,
        }
        metrics = {
            "finetune_train_rows": result.encode.kept,
            "finetune_rows_truncated": result.encode.truncated,
            "finetune_rows_dropped": result.encode.dropped,
            "finetune_steps": result.steps,
            "finetune_first_loss": result.losses[0],
            "finetune_final_loss": result.losses[-1],
            "finetune_load_s": result.load_seconds,
            "finetune_train_s": result.train_seconds,
            "finetune_total_s": total,
            "finetune_peak_rss_mb": result.peak_rss_mb,
            "finetune_tokens": result.tokens,  # this process's steps (a resumed run counts only its own)
            "finetune_tokens_per_s": result.tokens_per_s,
            "finetune_resumed_from_step": result.resumed_from,
        }
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        client.set_tag(run_id, "finetuned_model", new_model)
        with tempfile.TemporaryDirectory() as tmp:
            digest = new_model.rsplit(FT_MARK, 1)[1]
            summary_path = Path(tmp) / f"finetune-{digest}.json"
            summary_path.write_text(json.dumps(summary, indent=2))
            client.log_artifact(run_id, str(summary_path), "finetune")
        client.log_artifact(run_id, str(adapter), "finetune")
