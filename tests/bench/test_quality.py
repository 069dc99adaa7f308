"""The quality benchmark end to end on the fake LM and tiny splits: the real `benchmarks/conf/bench.yaml`, shrunk."""

from __future__ import annotations

import json

import pytest

from benchmarks.quality import quality

TINY = [
    "task=travel_intents",
    "task.data.train_size=24",
    "task.data.val_size=8",
    "task.data.dev_size=8",
    "task.data.test_size=24",
    "only=[zero_shot,labeled_k8,knn_k8]",
]


@pytest.fixture
def bench_cfg(make_cfg, tmp_path):
    return make_cfg("bench", [*TINY, f"out_dir={tmp_path}/bench"])


def test_bench_reports_every_recipe_against_the_best_anchor(bench_cfg, tmp_path, capsys):
    results = quality(bench_cfg)

    assert [r.name for r in results] == ["zero_shot", "labeled_k8", "knn_k8"]  # anchors first
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert report["sizes"]["test"] == 24 and report["split"] == "test"
    best = max((r for r in results if r.anchor), key=lambda r: r.accuracy)
    assert report["best_anchor"] == best.name
    for r in results:
        assert 0.0 <= r.ci95[0] <= r.accuracy <= r.ci95[1] <= 1.0
        assert r.n == 24 and len(r.predictions) == 24 and r.eval_lm_calls == 24
        assert r.peak_rss_mb > 0 and r.wall_s > 0
        if r is not best:  # paired on the same rows
            assert r.vs_best_anchor["anchor"] == best.name and r.vs_best_anchor["n"] == 24
    assert results[0].compile_lm_calls == 0  # zero-shot compiles nothing
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "knn_k8" in table and "(best anchor)" in table
    assert "knn_k8" in capsys.readouterr().out


def test_unknown_recipe_is_refused_before_any_lm_call(make_cfg, tmp_path):
    cfg = make_cfg("bench", [*TINY[:-1], "only=[no_such]", f"out_dir={tmp_path}/bench"])
    with pytest.raises(ValueError, match="no such recipe"):
        quality(cfg)


def test_agreement_compares_served_answers_row_by_row(bench_cfg, tmp_path, monkeypatch):
    import benchmarks.agreement as agreement_mod

    quality(bench_cfg)
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    predictions = report["results"][-1]["predictions"]
    assert set(report["inputs"]) == set(predictions)  # the scored rows' inputs travel with the report
    first = next(iter(predictions))
    served = {row_id: {"label": label} for row_id, label in predictions.items()} | {first: {"label": "other"}}
    by_text = {report["inputs"][row_id]["text"]: answer for row_id, answer in served.items()}
    monkeypatch.setattr(agreement_mod, "served_answer", lambda url, inputs: by_text[inputs["text"]])

    n, differ = agreement_mod.agreement(report, "knn_k8", "http://unused", rows=None)
    assert n == 24 and differ == [{"row_id": first, "benchmark": predictions[first], "served": "other"}]


def test_optimiser_rows_smoke_with_the_fake_lm(make_cfg, tmp_path):
    """Issue 25's rows, shrunk: each optimiser compiles, and reports its paired test against the program as
    written, its compile calls and fine-tune tokens (0 from the fake provider, which trains nothing)."""
    from omegaconf import open_dict

    rows = ["zero_shot", "miprov2_1_5b", "simba", "gepa_1_5b", "supervised_lora", "bettertogether"]
    shrink = [
        "recipes.miprov2_1_5b.optimizer.compiler.auto=null",
        "recipes.miprov2_1_5b.optimizer.compiler.num_candidates=2",
        "+recipes.miprov2_1_5b.optimizer.compile_args.num_trials=2",
        "recipes.miprov2_1_5b.optimizer.compile_args.minibatch_size=4",
        "recipes.simba.optimizer.compiler.bsize=4",
        "recipes.simba.optimizer.compiler.max_steps=1",
        "recipes.simba.optimizer.compiler.num_candidates=2",
        "recipes.gepa_1_5b.optimizer.compiler.auto=null",
        "recipes.gepa_1_5b.optimizer.compiler.max_metric_calls=20",
        'recipes.bettertogether.optimizer.compile_args.strategy="p -> w"',
    ]
    cfg = make_cfg("bench", [*TINY[:-1], f"only=[{','.join(rows)}]", *shrink, f"out_dir={tmp_path}/bench"])
    with open_dict(cfg):
        cfg.lm.finetune = "ok"
        for name in ("miprov2_1_5b", "gepa_1_5b"):  # the 1.5B proposer / reflection LM: the fake one here
            cfg.recipes[name].prompt_lm = {"_target_": "tests.fakes.fake_lm", "model": "fake/proposer"}
    results = {r.name: r for r in quality(cfg)}
    assert list(results) == rows
    for name in rows[1:]:
        r = results[name]
        assert r.vs_unoptimised["unoptimised"] == "zero_shot" and r.vs_unoptimised["n"] == 24, name
        assert (r.compile_lm_calls > 0) is (name != "supervised_lora") and r.finetune_tokens == 0, name
    assert results["zero_shot"].vs_unoptimised == {}
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "vs unoptimised" in table and "fine-tune tokens" in table
