"""Evaluation against its anchors on the fake provider LM: plain DSPy + autolog, the ideal, a cold cache.

`Bench` holds what the rows share (task, program, adapter, the fake LM at a fixed latency, a throwaway
store); each `measure_*` returns a `Row` of seconds per repeat, ours and the anchor's.
"""

from __future__ import annotations

import math
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy
import mlflow

from benchmarks.ratios import Row


@dataclass
class Bench:
    """What the evaluation rows share: the task, the program, the fake provider LM, the store."""

    task: Any
    program: dspy.Module
    program_config: dict
    adapter: Any
    adapter_config: dict | None
    fake_lm: dspy.LM
    fake_lm_config: dict
    latency_s: float
    store: Path
    autolog: dict
    traced: bool = True

    def examples(self, n: int) -> list[dspy.Example]:
        return self.task.examples("dev")[:n]

    def experiment(self, label: str) -> str:
        name = f"{label}-{uuid.uuid4().hex[:8]}"
        return mlflow.create_experiment(name, artifact_location=(self.store / "artifacts" / name).resolve().as_uri())

    def project_autolog(self, traced: bool | None = None) -> None:
        """Autolog as the project's sessions set it (`pipelines.session`); off when not `traced`."""
        from pipelines.tracking import span_usage

        off = not (self.traced if traced is None else traced)
        mlflow.dspy.autolog(**(self.autolog | {"log_compiles": False, "log_evals": False, "disable": off}))
        span_usage.install()

    def evaluate(self, n: int, num_threads: int, lm: dspy.LM | None = None) -> tuple[Any, float]:
        """`evaluate_program`'s outcome (its `wall_s`: the evaluation's) and the seconds the background trace
        export took on after it to store the rest (a run's end waits for them)."""
        from pipelines.evaluation.runner import evaluate_program

        examples = self.examples(n)
        with mlflow.start_run(experiment_id=self.experiment("eval")) if self.traced else nullcontext():
            outcome = evaluate_program(
                self.program,
                examples,
                self.task.metric,
                outputs=self.task.contract.output_names,
                lm=lm or self.fake_lm,
                adapter=self.adapter,
                num_threads=num_threads,
            )
            start = time.perf_counter()
            mlflow.flush_trace_async_logging()
            return outcome, time.perf_counter() - start


def measure_framework(bench: Bench, *, num_threads: int, repeats: int) -> Row:
    """The train path's scoring step vs a minimal DSPy + `mlflow.dspy.autolog()` script, same rows and LM.

    Both run under this process's trace export (each trace written as it ends, the package's default; MLflow's
    background export with `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=true`) and stop the clock once their traces are
    in the store (`flush_trace_async_logging`, what the end of a run or of the script does). The details count
    the rows whose score reached their trace on each side: the anchor logs each score with a store write after
    its trace has ended, which the background export can beat."""
    from pipelines.evaluation.runner import EvalSettings
    from pipelines.optimizers.pipeline import score_splits
    from pipelines.tracking.span_usage import LMSpanUsage

    settings = EvalSettings(num_threads=num_threads)
    examples = bench.task.examples("dev")
    scored: dict[str, list[int]] = {"ours": [], "anchor": []}

    def ours() -> float:
        bench.project_autolog(traced=True)  # the anchor is defined with autolog on; so are we, whatever `traced`
        start = time.perf_counter()
        with (
            dspy.context(lm=bench.fake_lm, adapter=bench.adapter),
            mlflow.start_run(experiment_id=(experiment := bench.experiment("ours"))),
        ):
            score_splits(bench.program, bench.task, ["dev"], settings)
            mlflow.flush_trace_async_logging()
        elapsed = time.perf_counter() - start
        scored["ours"].append(scores_on_traces(experiment, bench.task.metric))
        return elapsed

    def plain() -> float:
        mlflow.dspy.autolog()
        plain_callbacks = [c for c in dspy.settings.callbacks if not isinstance(c, LMSpanUsage)]
        start = time.perf_counter()
        with (
            dspy.context(lm=bench.fake_lm, adapter=bench.adapter, callbacks=plain_callbacks),
            mlflow.start_run(experiment_id=(experiment := bench.experiment("plain"))),
        ):
            evaluate = dspy.Evaluate(devset=examples, metric=bench.task.metric, num_threads=num_threads)
            mlflow.log_metric("score", evaluate(bench.program).score)
            mlflow.flush_trace_async_logging()
        elapsed = time.perf_counter() - start
        scored["anchor"].append(scores_on_traces(experiment, bench.task.metric))
        return elapsed

    row = Row("framework", "s", "dspy.Evaluate + mlflow.dspy.autolog()", threshold=1.05)
    row.details = {"n": len(examples), "num_threads": num_threads, "latency_s": bench.latency_s}
    # An untimed round first, as the engine row has: each side's one-time costs in this process (lazy imports such
    # as scipy.stats for the intervals, first connections) are paid before any repeat is timed. Cold starts have
    # rows of their own.
    ours()
    plain()
    for counts in scored.values():
        counts.clear()
    for r in range(repeats):
        first, second = (ours, plain) if r % 2 == 0 else (plain, ours)
        timed = {fn: fn() for fn in (first, second)}
        row.add(timed[ours], timed[plain])
    row.details["scores_on_traces"] = scored
    return row


def scores_on_traces(experiment_id: str, metric) -> int:
    """How many of the experiment's traces carry the metric's score."""
    name = getattr(metric, "__name__", "metric")
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=1000)
    return sum(any(a.name == name for a in t.info.assessments) for t in traces)


def measure_parallel(bench: Bench, *, n: int, num_threads: int, repeats: int) -> Row:
    ideal = math.ceil(n / num_threads) * bench.latency_s
    row = Row("parallel", "s", f"ideal ceil(n/N) x latency = {ideal:.2f} s")
    row.details = {"n": n, "num_threads": num_threads, "latency_s": bench.latency_s, "traced": bench.traced}
    bench.project_autolog()
    for _ in range(repeats):
        outcome, flush_s = bench.evaluate(n, num_threads)
        row.add(outcome.wall_s, ideal)
        row.details.setdefault("flush_s", []).append(flush_s)
    return row


def measure_cached(bench: Bench, *, n: int, num_threads: int, repeats: int, lm: dspy.LM) -> Row:
    """The same evaluation twice on one DSPy cache directory; the second from disk (memory cache emptied)."""
    row = Row("cached", "s", "the first run, cold cache", threshold=0.10)
    row.details = {"n": n, "lm": lm.model, "traced": bench.traced}
    bench.project_autolog()
    for _ in range(repeats):
        cache_dir = str(bench.store / f"dspy-cache-{uuid.uuid4().hex[:8]}")  # a cold cache each repeat
        dspy.configure_cache(disk_cache_dir=cache_dir)
        first, _ = bench.evaluate(n, num_threads, lm=lm)
        dspy.configure_cache(disk_cache_dir=cache_dir)  # a fresh memory cache: the rerun reads the disk
        again, _ = bench.evaluate(n, num_threads, lm=lm)
        row.add(again.wall_s, first.wall_s)
        # calls that reached the LM (DSPy counts no cache hits): n, then none
        row.details.setdefault("lm_calls", []).append([first.usage["lm_calls"], again.usage["lm_calls"]])
        row.details.setdefault("same_scores", []).append(bool(first.table["score"].equals(again.table["score"])))
    return row
