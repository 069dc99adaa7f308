"""The speed benchmark end to end at smoke size: the real `benchmarks/conf/bench_speed.yaml`, shrunk, the fake
LM throughout (and the embedded model for the engine row, a couple of tokens). Properties of the output, never
its timings."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.engine_speed import call_by_call
from benchmarks.speed import speed

SMOKE = [
    "repeats=1",
    "task.data.dev_size=8",
    "fake.latency_s=0.05",
    "parallel.num_threads=4",
    "cached.lm=fake",
    "cached.n=4",
    "serving.clients=[1,4]",
    "serving.duration_s=1",
    "serving.warmup_s=0.5",
]


def run(make_cfg, tmp_path, *overrides, fake=True):
    overrides = [*SMOKE, f"out_dir={tmp_path}/speed", f"out={tmp_path}/speed.json", *overrides]
    cfg = make_cfg("bench_speed", overrides, fake=fake)
    rows = speed(cfg)
    return {r.name: r for r in rows}, json.loads((tmp_path / "speed.json").read_text())


def test_every_fake_lm_measurement_has_a_row_with_a_positive_ratio(make_cfg, tmp_path, capsys):
    rows, report = run(make_cfg, tmp_path, "only=[framework,parallel,cached,serving,cold_start]")

    expected = {"framework", "parallel", "cached", "serving_1", "serving_4"} | {
        "cold_start_load_model",
        "cold_start_serve",
    }
    assert set(rows) == expected
    assert {r["name"] for r in report["rows"]} == expected  # the JSON holds the same rows
    for r in report["rows"]:
        assert len(r["values"]) == len(r["anchors"]) == 1  # one per repeat
        assert r["ratio"] > 0 and math.isfinite(r["ratio"]) and r["ratio"] == r["ratios"][0]
    # The bounds the issue sets, judged (not hard-coded) on the measured ratio.
    assert rows["framework"].threshold == 1.05 and rows["framework"].holds == (rows["framework"].ratio <= 1.05)
    assert rows["cached"].threshold == 0.10 and rows["serving_4"].threshold is None

    # Nothing beats its ideal: every row of the parallel evaluation waits the fake LM's latency at least once.
    assert rows["parallel"].ratio >= 1.0
    assert rows["parallel"].anchors == [math.ceil(8 / 4) * 0.05]
    # The rerun is answered from the cache directory: the LM sees every row once, then none.
    assert rows["cached"].details["lm_calls"] == [[4, 0]] and rows["cached"].details["same_scores"] == [True]
    for clients in (1, 4):
        serving = rows[f"serving_{clients}"]
        assert serving.details["errors"] == 0 and serving.details["runs"][0]["requests"] > 0
        assert serving.anchors == [clients / 0.05]  # ideal requests/s
        assert 0 < serving.details["p50_s"] <= serving.details["p99_s"]
    assert all(r.values[0] > 0 for r in rows.values())

    table = capsys.readouterr().out
    for name in expected:
        assert f"| {name} |" in table
    assert report["table"] in table


def test_the_engine_row_compares_our_engine_with_raw_llama_cpp(make_cfg, tmp_path):
    rows, report = run(make_cfg, tmp_path, "only=[engine]", "engine.max_tokens=2", "engine.calls=1", fake=False)

    engine = rows["engine"]
    assert engine.unit == "s/call" and engine.anchor == "raw llama-cpp-python"
    assert engine.ratio > 0 and math.isfinite(engine.ratio)
    # Same file, same prompt, temperature 0: the same answers, or the comparison would be of different work.
    assert engine.details["same_answers"] is True
    assert report["rows"][0]["name"] == "engine"


def test_the_contexts_row_compares_contexts_side_by_side_with_one(make_cfg, tmp_path):
    rows, _ = run(make_cfg, tmp_path, "only=[contexts]", "contexts.n=2", fake=False)

    contexts = rows["contexts"]
    assert contexts.anchor == "one llama.cpp context, rows one at a time"
    assert contexts.details["n_contexts"] == 2 and contexts.details["n"] == 2
    assert contexts.ratio > 0 and math.isfinite(contexts.ratio)
    # Temperature 0 on the same file: side by side or alone, every row gets the same score.
    assert contexts.details["same_scores"] is True


def test_the_contexts_row_needs_more_than_one_context(make_cfg, tmp_path):
    with pytest.raises(ValueError, match="set lm.n_contexts above 1"):
        run(make_cfg, tmp_path, "only=[contexts]", "lm.n_contexts=1", fake=False)


def test_an_unknown_measurement_is_refused_before_anything_runs(make_cfg, tmp_path):
    with pytest.raises(ValueError, match="no such measurement"):
        run(make_cfg, tmp_path, "only=[engine,warp_speed]")


def test_the_serving_rows_run_on_the_engine_serve_is_given(make_cfg, tmp_path):
    """`serving.lm_engine=lm15` reaches `serve lm_engine=lm15`, whose server process starts and answers every request.
    Which client the provider then sees is checked in `tests/serving/test_upstream_errors.py`."""
    rows, _ = run(make_cfg, tmp_path, "only=[serving]", "serving.clients=[2]", "serving.lm_engine=lm15")
    serving = rows["serving_2"]
    assert serving.details["lm_engine"] == "lm15"
    assert serving.details["errors"] == 0 and serving.details["runs"][0]["requests"] > 0


def test_the_engine_sides_take_turns_call_by_call():
    # Whatever the machine does meanwhile (burners reaching speed) must fall on both sides, not on whichever
    # runs its calls first.
    order: list[str] = []

    def ours(prompt):
        order.append(f"ours {prompt}")

    def raw(prompt):
        order.append(f"raw {prompt}")

    medians = call_by_call((ours, raw), ["a", "b", "c"])
    assert order == ["ours a", "raw a", "ours b", "raw b", "ours c", "raw c"]
    assert set(medians) == {ours, raw} and all(seconds >= 0 for seconds in medians.values())
