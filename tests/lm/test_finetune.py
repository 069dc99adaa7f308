"""Our fine-tuning logic without training a model: row encoding, adapter layout, engine routing,
stage records, and BetterTogether's weight step through `optimize` with a fake fine-tuning provider."""

from __future__ import annotations

import logging
import types

import dspy
import numpy as np
import pytest
from dspy.lm15 import Config, Message, Request
from mlflow import MlflowClient
from omegaconf import open_dict

from pipelines.lm.finetune.chat_data import IGNORE_INDEX, encode_chat_rows
from pipelines.lm.finetune.lora import LoRASettings
from pipelines.lm.finetune.provider import LlamaCppLoRAProvider
from pipelines.lm.llama_engine import ContextPool, LlamaCppEngine, adapter_digest
from pipelines.optimize import optimize
from pipelines.optimizers.compile import FinetuningUnavailable, build_optimizer, check_finetuning
from pipelines.optimizers.stages import StageLog, stage_table

from .test_lm_layer import FakeLlama

TINY = ["task.data.train_size=8", "task.data.val_size=8", "task.data.dev_size=8", "task.data.test_size=8"]


class CharTokenizer:
    """One token per character and a ChatML template: enough to check what the loss sees."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def chat(user: str, answer: str | None, system: str = "sys") -> dict:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


def decode(ids) -> str:
    return "".join(chr(i) for i in ids if i != IGNORE_INDEX)


def test_loss_falls_on_the_assistant_turn_only():
    (row,), report = encode_chat_rows([chat("where is my bag", '{"label": "lost"}')], CharTokenizer(), 512)
    assert decode(row.input_ids) == '<system>sys</><user>where is my bag</><assistant>{"label": "lost"}</>'
    assert decode(row.labels) == '{"label": "lost"}</>'  # the answer and its end marker, nothing else
    assert report.kept == 1 and report.truncated == 0


def test_long_prompts_lose_their_start_never_the_answer():
    rows = [chat("x" * 100, "yes"), chat("q", None), chat("q", "a" * 80)]
    encoded, report = encode_chat_rows(rows, CharTokenizer(), max_seq_len=60)
    (row,) = encoded
    assert len(row.input_ids) == 60
    assert decode(row.labels) == "yes</>" and decode(row.input_ids).endswith("x</><assistant>yes</>")
    assert (report.rows, report.kept, report.truncated, report.dropped) == (3, 1, 1, 2)


def test_lora_permutation_is_what_transformers_undoes_on_load():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from pipelines.lm.finetune.gguf_lora import _permute

    rng = np.random.default_rng(0)
    for n_head, n_kv in ((9, 9), (9, 3)):
        b = rng.normal(size=((n_kv if n_kv != n_head else n_head) * 8, 4)).astype(np.float32)
        permuted = _permute(b, n_head, n_kv)
        assert not np.array_equal(permuted, b)
        restored = LlamaTensorProcessor()._reverse_permute_weights(permuted, n_head, n_kv)
        np.testing.assert_array_equal(restored, b)


def test_settings_overrides_are_checked():
    base = LoRASettings(epochs=2, rank=8)
    assert LoRASettings.merged(base, {"epochs": 5}).epochs == 5
    assert LoRASettings.merged(base, None) == base
    with pytest.raises(ValueError, match="Unknown fine-tuning setting.*'epoch'.*known"):
        LoRASettings.merged(base, {"epoch": 5})


def test_engine_routes_a_fine_tuned_model_id_to_its_adapter(tmp_path):
    engine = LlamaCppEngine(model_path=str(tmp_path / "base.gguf"))
    engine.register_adapter("ab12", "ab12.gguf")
    engine._llamas[None] = ContextPool([base := FakeLlama(content="base")])
    engine._llamas["ab12.gguf"] = ContextPool([tuned := FakeLlama(content="tuned")])
    ask = lambda model: engine.complete(  # noqa: E731
        Request(model=model, messages=(Message.user("hi"),), config=Config(max_tokens=8))
    )
    assert ask("local/m").message.text == "base"
    assert ask("local/m:ft-ab12").message.text == "tuned"
    assert len(base.calls) == len(tuned.calls) == 1
    assert adapter_digest("local/m:ft-ab12") == "ab12" and adapter_digest("local/m") is None
    with pytest.raises(KeyError, match="adapter 'zz99'.*known: \\['ab12'\\]"):
        ask("local/m:ft-zz99")
    engine.unload("local/m:ft-ab12")
    engine.unload("local/m:ft-ab12")  # idempotent
    assert tuned.closed and list(engine._llamas) == [None]


def test_missing_finetune_extra_stops_before_spending(make_cfg, monkeypatch):
    import pipelines.lm.finetune.provider as provider_module

    def missing():
        raise provider_module.FinetuningDependenciesMissing("Missing peft. " + provider_module.FINETUNE_EXTRA_HINT)

    monkeypatch.setattr(provider_module, "require_finetune_deps", missing)
    cfg = make_cfg("optimize", ["optimizer=bettertogether", *TINY])
    lm = types.SimpleNamespace(model="local/m", provider=LlamaCppLoRAProvider(LlamaCppEngine("m.gguf")))
    spec = build_optimizer(cfg.optimizer, lm)
    with pytest.raises(FinetuningUnavailable, match=r"Missing peft.*pip install -e '\.\[finetune\]'"):
        check_finetuning(spec, lm)
    # A prompts-only strategy needs no fine-tuning: nothing to check.
    spec.compile_args["strategy"] = "p"
    check_finetuning(spec, lm)


def test_a_weight_step_needs_a_provider_that_can_fine_tune(make_cfg):
    cfg = make_cfg("optimize", ["optimizer=bettertogether", *TINY])
    lm = types.SimpleNamespace(model="openai/served-model", provider=None)
    spec = build_optimizer(cfg.optimizer, lm)
    assert spec.finetune_step == "w" and spec.strategy_steps == ["p", "w", "p"]
    with pytest.raises(FinetuningUnavailable, match=r"strategy 'p -> w -> p'.*'w'.*openai/served-model"):
        check_finetuning(spec, lm)
    # The check belongs to the spec: an optimiser without a weight step never asks.
    check_finetuning(build_optimizer(make_cfg("optimize", ["optimizer=bootstrap"]).optimizer, lm), lm)


def test_stage_table_and_swallowed_step_errors():
    stages = StageLog()
    stages.steps = [
        {"step": "p", "optimizer": "BootstrapFewShot", "seconds": 1.0},
        {"step": "w", "optimizer": "BootstrapFinetune", "seconds": 9.0},
    ]
    compiled = types.SimpleNamespace(
        candidate_programs=[
            {"strategy": "p -> w", "score": 75.0},
            {"strategy": "", "score": 50.0},
            {"strategy": "p", "score": 62.5},
        ]
    )
    rows = stage_table(compiled, stages)
    assert [(r["strategy"], r["valset_score"]) for r in rows] == [("", 0.5), ("p", 0.625), ("p -> w", 0.75)]
    with stages.catching_step_errors():
        try:
            raise RuntimeError("out of memory") from ValueError("rank too big")
        except RuntimeError:
            logging.getLogger("dspy.teleprompt.bettertogether").error("step failed", exc_info=True)
    assert stages.errors == ["ValueError: rank too big"]


def _with_fake_finetuning(cfg, mode: str):
    with open_dict(cfg):
        cfg.lm.finetune = mode
    return cfg


def test_bettertogether_weight_step_is_logged_and_travels_with_the_model(make_cfg):
    cfg = _with_fake_finetuning(make_cfg("optimize", ["optimizer=bettertogether", *TINY]), "ok")
    result = optimize(cfg)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["compile_step_error"] == "false"
    walls = client.get_metric_history(result.run_id, "compile/stage_wall_s")
    assert sorted(m.step for m in walls) == [1, 2, 3]  # each step of "p -> w -> p" (stages.json names them)
    scores = client.get_metric_history(result.run_id, "compile/stage_valset_score")
    assert sorted(m.step for m in scores) == [0, 1, 2, 3]  # baseline + after each step
    assert all(0.0 <= m.value <= 1.0 for m in scores)


def test_the_fine_tuned_program_is_logged_with_the_model_it_runs_on(make_cfg):
    import mlflow

    # Without a valset BetterTogether keeps the last program: here the fine-tuned one.
    overrides = ["optimizer=bettertogether", "optimizer.uses_valset=false", "+optimizer.compile_args.valset_ratio=0"]
    cfg = _with_fake_finetuning(
        make_cfg("optimize", [*overrides, 'optimizer.compile_args.strategy="p -> w"', *TINY]), "ok"
    )
    result = optimize(cfg)
    model = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model()
    assert model.spec["finetuned_model"] == model.spec["lm"]["model"] == "fake/keyword:ft-fake1"
    assert model.lm.provider is None or not model.lm.provider.jobs  # loading trains nothing


def test_a_failed_weight_step_fails_the_run_with_the_reason(make_cfg):
    from pipelines.optimizers.stages import CompileStepFailed

    cfg = _with_fake_finetuning(make_cfg("optimize", ["optimizer=bettertogether", *TINY]), "fail")
    with pytest.raises(CompileStepFailed, match="fake fine-tuning backend is down"):
        optimize(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name("test")
    (run,) = client.search_runs([exp.experiment_id], "tags.entry_point = 'optimize'")
    assert run.info.status == "FAILED"
    assert "fake fine-tuning backend is down" in run.data.tags["compile_step_error"]
    # What happened is logged before the run fails: the weight step's wall time (step 2 of "p -> w -> p").
    assert 2 in {m.step for m in client.get_metric_history(run.info.run_id, "compile/stage_wall_s")}


def test_a_program_on_a_provider_hosted_fine_tune_records_its_model_id():
    from pipelines.model.finetuned import attach_finetuned_weights

    program = dspy.Predict("text -> label")
    program.lm = dspy.LM("openai/ft:gpt-4o-mini:org::abc", cache=False)
    spec = {"lm": {"model": "openai/gpt-4o-mini"}}
    assert attach_finetuned_weights(spec, program) == {}  # no file to carry
    assert spec["lm"]["model"] == spec["finetuned_model"] == "openai/ft:gpt-4o-mini:org::abc"


def test_a_program_on_a_local_fine_tune_carries_its_lora_file(tmp_path):
    from pipelines.model.finetuned import attach_finetuned_weights
    from pipelines.model.spec import LORA_ARTIFACT

    lora = tmp_path / "ab12.gguf"
    lora.write_bytes(b"GGUF")
    engine = LlamaCppEngine(str(tmp_path / "base.gguf"))
    engine.register_adapter("ab12", str(lora))
    program = dspy.Predict("text -> label")
    program.lm = dspy.LM("local/m:ft-ab12", engine=engine, provider=LlamaCppLoRAProvider(engine), cache=False)
    spec = {"lm": {"model": "qwen"}}
    assert LORA_ARTIFACT == "lora_weights"
    assert attach_finetuned_weights(spec, program) == {LORA_ARTIFACT: str(lora)}
    # The base model stays what the spec names; the LoRA file is applied on it at load time.
    assert spec["lm"]["model"] == "qwen" and spec["finetuned_model"] == "local/m:ft-ab12"
    # A program on the base model carries nothing.
    program.lm = dspy.LM("local/m", engine=engine, provider=LlamaCppLoRAProvider(engine), cache=False)
    assert attach_finetuned_weights(plain := {"lm": {"model": "qwen"}}, program) == {}
    assert "finetuned_model" not in plain


def test_answer_only_logits_give_the_same_loss_as_full_logits():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipelines.lm.finetune.chat_data import Encoded, collate
    from pipelines.lm.finetune.lora import answer_loss

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    model = LlamaForCausalLM(config).eval()
    batch = [
        Encoded([5, 6, 7, 8, 9, 10, 11], [IGNORE_INDEX] * 5 + [10, 11]),
        Encoded([12, 13, 14, 15], [IGNORE_INDEX, IGNORE_INDEX, 14, 15]),
    ]
    ours = answer_loss(model, *collate(batch, pad_id=0))
    # Reference: each row alone, unpadded, with the model's own loss over its labels (token-weighted).
    total = sum(model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss * 2 for e in batch)
    torch.testing.assert_close(ours, total / 4)


def test_a_failed_fine_tune_says_so(monkeypatch, tmp_path):
    import pipelines.lm.finetune.lora as lora_module

    def no_rows(*args, **kwargs):
        raise ValueError("No usable fine-tuning rows")

    monkeypatch.setattr(lora_module, "train_lora", no_rows)
    engine = LlamaCppEngine(str(tmp_path / "m.gguf"))
    lm = dspy.LM("local/m", engine=engine, provider=LlamaCppLoRAProvider(engine, adapters_dir=tmp_path))
    job = lm.finetune([chat("a", "b")], "chat")
    result = job.result(timeout=60)
    assert isinstance(result, ValueError) and "No usable" in str(result)
    assert job.status() == "failed"
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written left behind
