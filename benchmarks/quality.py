"""`bench quality`: plain-DSPy anchors and the project's recipes on the same seeded splits, compared fairly.

    python -m benchmarks.quality                                   # Banking77, 10 intents, 400 test rows
    python -m benchmarks.quality only=[zero_shot,knn_k8]           # a subset of the recipes
    python -m benchmarks.quality task=travel_intents split=dev     # any task, any split

Every recipe (`benchmarks/conf/bench.yaml: recipes`, each a `program` and an `optimizer` from their config groups)
is compiled on `train` (and `val`, if its optimiser selects) and scored on `split` (held-out `test` by
default) with the project's own `evaluate_program`. Reported per recipe: accuracy with a 95% bootstrap
interval, a paired test (exact McNemar, one-sided) against the BEST anchor on the same rows and against the
same program unoptimised (the recipe named by its `unoptimised`), compile LM calls (cached ones included: what
a cold run sends), fine-tune tokens, wall time and peak memory (RSS, whole process).
The table goes to stdout and `bench.md`, everything else (per-row predictions too) to `bench.json`
under `out_dir`, and both to an MLflow run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy
from omegaconf import DictConfig

from benchmarks import CONF_DIR
from benchmarks.measure import counted_calls, peak_rss
from pipelines.cli import hydra_main
from pipelines.data.task import Task
from pipelines.evaluation.runner import EvalOutcome, EvalSettings, evaluate_program
from pipelines.evaluation.stats import paired_test
from pipelines.optimizers.compile import build_optimizer, compile_program
from pipelines.programs import build_program

log = logging.getLogger(__name__)


@dataclass
class RecipeResult:
    name: str
    anchor: bool
    accuracy: float
    ci95: tuple[float, float]
    n: int
    errors: int
    compile_lm_calls: int
    eval_lm_calls: int
    compile_s: float
    eval_s: float
    peak_rss_mb: float
    vs_best_anchor: dict[str, Any] = field(default_factory=dict)  # a PairedTest as a dict; empty for that anchor
    vs_unoptimised: dict[str, Any] = field(default_factory=dict)  # the same, against the recipe's `unoptimised`
    finetune_tokens: int = 0  # tokens the LM's fine-tuning provider trained on while compiling
    predictions: dict[str, Any] = field(default_factory=dict, repr=False)  # row_id -> predicted output(s)
    scores: list[float] = field(default_factory=list, repr=False)  # per row, in row order (paired tests)

    @property
    def wall_s(self) -> float:
        return self.compile_s + self.eval_s


def run_recipe(
    name: str,
    recipe,
    task: Task,
    *,
    lm: dspy.LM,
    prompt_lm: dspy.LM | None,
    settings: EvalSettings,
    split: str,
    anchor: bool,
    limit: int | None = None,
) -> tuple[RecipeResult, EvalOutcome]:
    """Compile one recipe on `train`/`val` and score it on `split` (its first `limit` rows; None: all)."""
    program, _ = build_program(recipe.program, task.contract)
    spec = build_optimizer(recipe.optimizer, lm, prompt_lm)
    provider = getattr(lm, "provider", None)
    tokens_before = getattr(provider, "trained_tokens", 0)
    with peak_rss() as peak:
        start = time.perf_counter()
        with counted_calls() as compile_calls:
            compiled = compile_program(spec, program, task.examples("train"), task.examples("val"), lm=lm)
        compile_s = time.perf_counter() - start
        with counted_calls() as eval_calls:
            outcome = evaluate_program(
                compiled,
                task.examples(split)[:limit],
                task.metric,
                outputs=task.contract.output_names,
                ids=task.splits.ids(split)[:limit],
                lm=lm,
                num_threads=settings.num_threads,
                display_progress=settings.display_progress,
                label_sets=task.output_label_sets,
                max_error_rate=settings.max_error_rate,
            )
    outputs = task.contract.output_names
    table = outcome.table
    predictions = {
        str(row["row_id"]): (
            row[f"predicted.{outputs[0]}"] if len(outputs) == 1 else {f: row[f"predicted.{f}"] for f in outputs}
        )
        for row in table.to_dict("records")
    }
    result = RecipeResult(
        name=name,
        anchor=anchor,
        accuracy=outcome.score,
        ci95=outcome.ci(),
        n=len(table),
        errors=outcome.errors,
        compile_lm_calls=compile_calls.calls,
        eval_lm_calls=eval_calls.calls,
        compile_s=compile_s,
        eval_s=outcome.wall_s,
        peak_rss_mb=peak["mb"],
        finetune_tokens=getattr(provider, "trained_tokens", 0) - tokens_before,
        predictions=predictions,
        scores=table["score"].fillna(0.0).tolist(),  # a failed row is no right answer in a paired test
    )
    return result, outcome


def compare_to_best_anchor(results: list[RecipeResult]) -> str | None:
    """Fill each result's paired test against the best-scoring anchor; returns that anchor's name."""
    anchors = [r for r in results if r.anchor]
    if not anchors:
        return None
    best = max(anchors, key=lambda r: r.accuracy)
    for r in results:
        if r is not best:
            r.vs_best_anchor = asdict(paired_test(r.scores, best.scores)) | {"anchor": best.name}
    return best.name


def compare_to_unoptimised(results: list[RecipeResult], recipes: dict[str, Any]) -> None:
    """Fill each result's paired test against its recipe's `unoptimised` recipe, where that one ran."""
    by_name = {r.name: r for r in results}
    for r in results:
        base = by_name.get((recipes.get(r.name) or {}).get("unoptimised") or "")
        if base is not None and base is not r:
            r.vs_unoptimised = asdict(paired_test(r.scores, base.scores)) | {"unoptimised": base.name}


def _vs(test: dict) -> str:
    return f"{test['diff']:+.3f}, p={test['p_value']:.2g} ({test['wins']}/{test['losses']})" if test else "-"


def render_table(results: list[RecipeResult], best_anchor: str | None, split: str) -> str:
    head = (
        f"| recipe | {split} accuracy | 95% CI | vs {best_anchor or 'best anchor'} (diff, one-sided p) "
        "| vs unoptimised | compile LM calls | fine-tune tokens | eval LM calls | wall s | peak RSS MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        test = r.vs_best_anchor
        vs = (
            f"{test['diff']:+.3f}, p={test['p_value']:.2g} ({test['wins']}/{test['losses']})"
            if test
            else ("(best anchor)" if r.name == best_anchor else "-")
        )
        name = f"{r.name} (anchor)" if r.anchor else r.name
        rows.append(
            f"| {name} | {r.accuracy:.3f} | [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}] | {vs} | {_vs(r.vs_unoptimised)} "
            f"| {r.compile_lm_calls} | {r.finetune_tokens} | {r.eval_lm_calls} | {r.wall_s:.0f} | {r.peak_rss_mb:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def bench_quality(
    task: Task,
    recipes: dict[str, Any],
    anchors: list[str],
    *,
    lm: dspy.LM,
    prompt_lm: dspy.LM | None = None,
    settings: EvalSettings | None = None,
    split: str = "test",
    limit: int | None = None,
    prompt_lms: dict[str, dspy.LM] | None = None,
) -> tuple[list[RecipeResult], str | None]:
    """Run `recipes` (name -> config with `program` and `optimizer`), anchors first, and compare them."""
    task.splits.require("train", split)
    settings = settings or EvalSettings()
    results = []
    for name in sorted(recipes, key=lambda n: n not in anchors):  # anchors first: a stable, readable order
        log.info("bench: %s", name)
        result, _ = run_recipe(
            name,
            recipes[name],
            task,
            lm=lm,
            prompt_lm=(prompt_lms or {}).get(name, prompt_lm),
            settings=settings,
            split=split,
            limit=limit,
            anchor=name in anchors,
        )
        log.info("bench: %s %.3f [%.3f, %.3f] in %.0f s", name, result.accuracy, *result.ci95, result.wall_s)
        results.append(result)
    best = compare_to_best_anchor(results)
    compare_to_unoptimised(results, recipes)
    return results, best


def scored_rows(task: Task, split: str, limit: int | None = None) -> list[dict]:
    """`{"row_id", "inputs"}` of the rows a benchmark scores: the split's first `limit` rows."""
    pairs = zip(task.splits.ids(split), task.examples(split), strict=True)
    return [{"row_id": i, "inputs": ex.inputs().toDict()} for i, ex in list(pairs)[:limit]]


def write_report(results: list[RecipeResult], best_anchor: str | None, split: str, out_dir: Path, meta: dict) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = render_table(results, best_anchor, split)
    (out_dir / "bench.md").write_text(table)
    payload = meta | {
        "split": split,
        "best_anchor": best_anchor,
        "results": [asdict(r) | {"wall_s": r.wall_s} for r in results],
    }
    (out_dir / "bench.json").write_text(json.dumps(payload, indent=2, default=str))
    return table


def log_to_mlflow(results: list[RecipeResult], out_dir: Path) -> None:
    import mlflow

    for r in results:
        mlflow.log_metrics(
            {
                f"{r.name}.accuracy": r.accuracy,
                f"{r.name}.ci95_low": r.ci95[0],
                f"{r.name}.ci95_high": r.ci95[1],
                f"{r.name}.compile_lm_calls": r.compile_lm_calls,
                f"{r.name}.wall_s": r.wall_s,
                f"{r.name}.peak_rss_mb": r.peak_rss_mb,
                f"{r.name}.finetune_tokens": r.finetune_tokens,
            }
            | ({f"{r.name}.p_vs_best_anchor": r.vs_best_anchor["p_value"]} if r.vs_best_anchor else {})
            | ({f"{r.name}.p_vs_unoptimised": r.vs_unoptimised["p_value"]} if r.vs_unoptimised else {})
        )
    mlflow.log_artifacts(str(out_dir), artifact_path="bench")


def quality(cfg: DictConfig) -> list[RecipeResult]:
    """The entry function: config in, LMs and task built once, every selected recipe run and reported."""
    from hydra.utils import instantiate

    from pipelines.cli import tracked_run
    from pipelines.config import to_container

    dspy.configure_cache(disk_cache_dir=str(cfg.paths.dspy_cache_dir))
    lm = instantiate(cfg.lm)
    adapter = instantiate(cfg.adapter) if cfg.get("adapter") else None
    prompt_lm = instantiate(cfg.prompt_lm) if cfg.get("prompt_lm") else None
    dspy.configure(lm=lm, adapter=adapter)
    names = list(cfg.only) if cfg.get("only") else list(cfg.recipes)
    unknown = sorted(set(names) - set(cfg.recipes))
    if unknown:
        raise ValueError(f"only={unknown}: no such recipe; bench.yaml has {sorted(cfg.recipes)}")
    recipes = {n: cfg.recipes[n] for n in names}
    prompt_lms, built = {}, {}  # a recipe's own prompt LM, built once per distinct config
    for n, r in recipes.items():
        if r.get("prompt_lm"):
            key = json.dumps(to_container(r.prompt_lm), sort_keys=True, default=str)
            if key not in built:
                built[key] = instantiate(r.prompt_lm)
            prompt_lms[n] = built[key]
    out_dir = Path(cfg.out_dir)
    with tracked_run(cfg, "bench", run_name=f"bench-quality-{cfg.task.name}"):
        task = Task.from_config(cfg.task)
        results, best = bench_quality(
            task,
            recipes,
            list(cfg.anchors),
            lm=lm,
            prompt_lm=prompt_lm,
            settings=EvalSettings.from_config(cfg.eval),
            split=cfg.split,
            limit=cfg.get("limit"),
            prompt_lms=prompt_lms,
        )
        meta = {
            "task": cfg.task.name,
            "lm": cfg.lm.get("model"),
            "seed": cfg.seed,
            "sizes": {s: len(task.examples(s)) for s in ("train", "val", "dev", "test")},
            "recipes": {n: to_container(r) for n, r in recipes.items()},
            # the scored rows' inputs: a served model is checked against the predictions on these
            "inputs": {str(r["row_id"]): r["inputs"] for r in scored_rows(task, cfg.split, cfg.get("limit"))},
        }
        table = write_report(results, best, cfg.split, out_dir, meta)
        log_to_mlflow(results, out_dir)
    print(table)
    print(f"bench: table and JSON in {out_dir}")
    return results


@hydra_main("bench", config_dir=CONF_DIR)
def main(cfg: DictConfig) -> None:
    quality(cfg)


if __name__ == "__main__":
    main()
