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
