"""LoRA training on the CPU: the GGUF base dequantised into transformers, a plain PyTorch loop, peft.

Why a plain loop rather than `transformers.Trainer`/TRL: a few dozen steps on a CPU need no
accelerate plumbing, and the loop is where we report each step's loss (to MLflow, by callback).

Resumable: with `checkpoint_dir`, the adapter weights, the optimiser's state, the step and the losses so far
are saved every `checkpoint_every` steps under `<checkpoint_dir>/<digest>/`, the digest hashing the base model,
the rows and every setting that changes the result. The batch order is drawn from the seed for all steps up
front, so a fine-tune killed at step k and started again with the same rows and settings continues at k+1 with
the batches it would have had (`TrainResult.resumed_from`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.lm.finetune.chat_data import EncodeReport, collate, encode_chat_rows

log = logging.getLogger(__name__)


@dataclass
class LoRASettings:
    """Training settings; `lm.finetune` in config, overridden per run by BootstrapFinetune's train_kwargs."""

    epochs: int = 2
    max_steps: int | None = None  # stops earlier than `epochs` when set
    learning_rate: float = 2e-4
    batch_size: int = 2
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    max_seq_len: int = 1024
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    seed: int = 0
    num_threads: int | None = None  # torch threads; null: torch's default (all cores)
    per_label: int | None = None  # at most this many rows per distinct answer (per class); null: every row
    checkpoint_dir: str | None = None  # resumable fine-tunes: a folder per rows+settings digest under it
    checkpoint_every: int = 20  # steps between checkpoints (and one at the end)

    # Settings that change nothing in the trained weights: left out of the checkpoint digest.
    RUN_ONLY = ("num_threads", "checkpoint_dir", "checkpoint_every")

    @classmethod
    def merged(cls, base: LoRASettings, overrides: dict | None) -> LoRASettings:
        values = asdict(base)
        unknown = set(overrides or {}) - set(values)
        if unknown:
            raise ValueError(f"Unknown fine-tuning setting(s) {sorted(unknown)}; known: {sorted(values)}")
        return cls(**(values | dict(overrides or {})))


@dataclass
class TrainResult:
    losses: list[float]
    encode: EncodeReport
    steps: int
    train_seconds: float
    load_seconds: float
    peak_rss_mb: float
    tokens: int = 0  # tokens through the model in the steps this process ran (prompt + answer, no padding)
    resumed_from: int = 0  # the checkpoint's step this fine-tune started from (0: from scratch)
    checkpoint: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def subsample_per_label(rows: list[dict], per_label: int | None, seed: int = 0) -> list[dict]:
    """At most `per_label` rows per distinct final answer (the class, for a classifier), drawn with `seed`,
    in the rows' own order."""
    if not per_label:
        return list(rows)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    kept, counts = set(), {}
    for i in order:
        messages = rows[i]["messages"] if isinstance(rows[i], dict) else rows[i]
        answer = messages[-1]["content"] if messages else ""
        if counts.get(answer, 0) < per_label:
            counts[answer] = counts.get(answer, 0) + 1
            kept.add(i)
    return [row for i, row in enumerate(rows) if i in kept]


def run_digest(gguf_path: str | Path, rows: list[dict], settings: LoRASettings) -> str:
    """What a checkpoint belongs to: the base model file (name and size), the rows and the settings that matter."""
    path = Path(gguf_path)
    values = {k: v for k, v in asdict(settings).items() if k not in LoRASettings.RUN_ONLY}
    size = path.stat().st_size if path.exists() else None
    blob = json.dumps({"base": [path.name, size], "rows": rows, "settings": values}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def batch_schedule(n_rows: int, settings: LoRASettings) -> list[list[int]]:
    """Every step's row indices, drawn from the seed up front: a resumed run takes the same batches."""
    total = math.ceil(n_rows / settings.batch_size) * settings.epochs
    if settings.max_steps:
        total = min(total, settings.max_steps)
    rng, schedule = random.Random(settings.seed), []
    while len(schedule) < total:
        order = list(range(n_rows))
        rng.shuffle(order)
        schedule += [order[b : b + settings.batch_size] for b in range(0, n_rows, settings.batch_size)]
    return schedule[:total]


def save_checkpoint(path: Path, model, optimizer, step: int, losses: list[float]) -> None:
    import torch
    from peft import get_peft_model_state_dict

    path.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "losses": list(losses),
        "adapter": get_peft_model_state_dict(model),
        "optimizer": optimizer.state_dict(),
    }
    tmp = path / "state.pt.part"
    torch.save(state, tmp)
    os.replace(tmp, path / "state.pt")  # a kill mid-write leaves the previous checkpoint whole


def load_checkpoint(path: Path, model, optimizer) -> tuple[int, list[float]]:
    """(step, losses) of the checkpoint in `path`, loaded into model and optimiser; (0, []) when there is none."""
    import torch
    from peft import set_peft_model_state_dict

    file = path / "state.pt"
    if not file.is_file():
        return 0, []
    state = torch.load(file, weights_only=False)
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("fine-tune resumed from %s at step %d", file, state["step"])
    return int(state["step"]), list(state["losses"])


def load_base(gguf_path: str | Path):
    """(model, tokenizer) in fp32 from a GGUF file, offline; LoRA is trained on these dequantised weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    return model, tokenizer


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def answer_loss(model, ids, mask, positions, labels, answer_width: int):
    """Mean next-token cross-entropy over the answer tokens, from the last positions' logits only."""
    import torch.nn.functional as F

    keep = answer_width + 1  # the logit before each answer token predicts it
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    targets = labels[:, -keep + 1 :]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)


def train_lora(
    gguf_path: str | Path,
    rows: list[dict],
    settings: LoRASettings,
    on_step: Callable[[int, float], None] | None = None,
):
    """Train a LoRA adapter on chat rows; returns (peft model, TrainResult)."""
    import torch
    from peft import LoraConfig, get_peft_model

    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    model, tokenizer = load_base(gguf_path)
    load_seconds = time.perf_counter() - start

    rows = subsample_per_label(rows, settings.per_label, settings.seed)
    data, report = encode_chat_rows(rows, tokenizer, settings.max_seq_len)
    if not data:
        raise ValueError(f"No usable fine-tuning rows: {report}")
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    schedule = batch_schedule(len(data), settings)
    checkpoint = None
    if settings.checkpoint_dir:
        checkpoint = Path(settings.checkpoint_dir) / run_digest(gguf_path, rows, settings)
    resumed_from, losses = load_checkpoint(checkpoint, model, optimizer) if checkpoint else (0, [])
    for step, loss in enumerate(losses, start=1):  # the run that resumes shows the whole curve
        if on_step:
            on_step(step, loss)
    tokens = 0
    start = time.perf_counter()
    for step in range(resumed_from, len(schedule)):
        batch = [data[i] for i in schedule[step]]
        loss = answer_loss(model, *collate(batch, pad_id))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        tokens += sum(len(e.input_ids) for e in batch)
        if on_step:
            on_step(step + 1, losses[-1])
        log.info("fine-tune step %d/%d loss %.4f", step + 1, len(schedule), losses[-1])
        if checkpoint and ((step + 1) % settings.checkpoint_every == 0 or step + 1 == len(schedule)):
            save_checkpoint(checkpoint, model, optimizer, step + 1, losses)
    model.eval()
    result = TrainResult(
        losses,
        report,
        len(losses),
        time.perf_counter() - start,
        load_seconds,
        peak_rss_mb(),
        tokens=tokens,
        resumed_from=resumed_from,
        checkpoint=str(checkpoint) if checkpoint else None,
    )
    return model, result
