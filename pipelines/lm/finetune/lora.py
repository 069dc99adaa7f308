"""LoRA training on the CPU: the GGUF base dequantised into transformers, a plain PyTorch loop, peft.

Why a plain loop rather than `transformers.Trainer`/TRL: a few dozen steps on a CPU need no
accelerate plumbing, and the loop is where we report each step's loss (to MLflow, by callback).
"""

from __future__ import annotations

import logging
import math
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

    batches_per_epoch = math.ceil(len(data) / settings.batch_size)
    total = batches_per_epoch * settings.epochs
    if settings.max_steps:
        total = min(total, settings.max_steps)
    rng = random.Random(settings.seed)
    losses: list[float] = []
    start = time.perf_counter()
    while len(losses) < total:
        order = list(range(len(data)))
        rng.shuffle(order)
        for b in range(0, len(order), settings.batch_size):
            if len(losses) >= total:
                break
            loss = answer_loss(model, *collate([data[i] for i in order[b : b + settings.batch_size]], pad_id))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step:
                on_step(len(losses), losses[-1])
            log.info("fine-tune step %d/%d loss %.4f", len(losses), total, losses[-1])
    model.eval()
    result = TrainResult(losses, report, len(losses), time.perf_counter() - start, load_seconds, peak_rss_mb())
    return model, result
