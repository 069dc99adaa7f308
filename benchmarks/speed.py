"""`bench speed`: what the project costs in time, each figure next to its anchor, as ratios.

    python -m benchmarks.speed                                   # every measurement, 3 repeats
    python -m benchmarks.speed only=[framework,cached] repeats=5
    python -m benchmarks.speed engine.burners=2                  # the embedded LM beside two busy CPUs

Measured side by side in one process (rows of `benchmarks/conf/bench_speed.yaml`; medians over `repeats`, the ratio is
the median of the per-repeat ratios):
- `engine`: a call through our llama.cpp engine and a `dspy.LM` vs `llama_cpp.Llama.create_chat_completion`
  on the same GGUF file, same prompt, max tokens, temperature 0, no cache (seconds per call);
- `contexts`: an evaluation on the embedded LM with its `lm.n_contexts` contexts side by side vs one context
  scoring the rows one at a time, the same rows, no cache (seconds);
- `framework`: the train path's scoring (`score_splits`: evaluate, table, metrics, traces) vs plain
  `dspy.Evaluate` under `mlflow.dspy.autolog()`, the same program and rows, a fresh experiment each;
- `parallel`: `evaluate_program` with `num_threads=N` vs the ideal, ceil(n / N) x the fake LM's latency;
- `cached`: the same evaluation again, DSPy's cache directory kept (memory cache emptied) vs the first run;
- `serving_<c>`: `c` closed-loop clients on a served model (`pipelines.serve`) vs the ideal c / latency
  requests/s, with p50/p99;
- `cold_start_*`: a fresh process to its first answer (`load_model(...).predict`, or `serve`) vs the import
  floor (`import dspy, mlflow, pandas`).
All but `engine`, `contexts` (and `cached` with `cached.lm=local`) run on the fake OpenAI-compatible server at a fixed
latency, so the LM does not drown what is measured. The table goes to stdout, everything to `speed.json`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path

import dspy
import mlflow
from omegaconf import DictConfig

from benchmarks import CONF_DIR
from benchmarks.engine_speed import measure_contexts, measure_engine
from benchmarks.eval_speed import Bench, measure_cached, measure_framework, measure_parallel
from benchmarks.ratios import Row
from benchmarks.served import measure_serving_and_cold_start
from pipelines.cli import hydra_main

log = logging.getLogger(__name__)
MEASUREMENTS = ("engine", "contexts", "framework", "parallel", "cached", "serving", "cold_start")


def fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def note(row: Row) -> str:
    d = row.details
    if row.name.startswith("serving_"):
        return (
            f"p50 {d['p50_s']:.3f} s, p99 {d['p99_s']:.3f} s, {d['errors']} errors, latency {d['latency_s']} s; "
            f"LM engine {d['lm_engine']}; "
            f"server CPU {d['server_cpu_ms_per_request']:.1f} ms/request: {d['workers']} worker(s)' bound "
            f"{d['cpu_bound_req_s']:.0f} req/s; all processes {d['machine_cpu_ms_per_request']:.1f} ms/request: "
            f"this machine's bound {d['machine_bound_req_s']:.0f} req/s"
        )
    if row.name == "engine":
        return f"max_tokens {d['max_tokens']}, same answers: {d['same_answers']}"
    if row.name == "contexts":
        return f"n {d['n']}, {d['n_contexts']} contexts side by side; same scores: {d['same_scores']}"
    if row.name.startswith("engine_") and d.get("raw_ratios"):
        return f"raw llama-cpp-python slowed {statistics.median(d['raw_ratios']):.2f}x by the same burners"
    keys = ("n", "num_threads", "latency_s", "lm", "traced")
    text = ", ".join(f"{k} {d[k]}" for k in keys if k in d)
    if flushes := d.get("flush_s"):  # parallel: the background trace export's tail after the evaluation
        text += f"; traces all stored {statistics.median(flushes):.2f} s later"
    if scored := d.get("scores_on_traces"):  # framework: rows whose score reached their trace
        per_side = {side: statistics.median(counts) for side, counts in scored.items() if counts}
        text += "; scores on traces " + ", ".join(f"{side} {n:g}/{d['n']}" for side, n in per_side.items())
    return text


def render_table(rows: list[Row]) -> str:
    head = "| measurement | ours | anchor | ratio | issue's bound | holds | notes |\n|---|---|---|---|---|---|---|\n"
    lines = []
    for row in rows:
        s = row.summary()
        bound = "-" if row.threshold is None else ("≥ " if row.higher_is_better else "≤ ") + f"{row.threshold:g}"
        holds = {None: "-", True: "yes", False: "**no**"}[s["holds"]]
        lines.append(
            f"| {row.name} | {fmt(s['value'])} {row.unit} | {fmt(s['anchor_value'])} ({row.anchor}) "
            f"| {s['ratio']:.3f} | {bound} | {holds} | {note(row)} |"
        )
    return head + "\n".join(lines) + "\n"


def write_report(rows: list[Row], json_path: Path, meta: dict) -> str:
    table = render_table(rows)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = meta | {"rows": [row.summary() for row in rows], "table": table}
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    return table


def speed(cfg: DictConfig) -> list[Row]:
    """The entry function: config in, the task, program and LMs built once, the selected rows measured."""
    from hydra.utils import instantiate

    from pipelines.config import redact, to_container
    from pipelines.data.task import Task
    from pipelines.lm.llama_engine import LlamaCppEngine
    from pipelines.programs import build_program
    from pipelines.tracking.store import ensure_store

    logging.getLogger("LiteLLM").setLevel(logging.WARNING)  # a line per fake call would bury the table
    which = set(cfg.only) if cfg.get("only") else set(MEASUREMENTS)
    if unknown := sorted(which - set(MEASUREMENTS)):
        raise ValueError(f"only={unknown}: no such measurement; choose from {list(MEASUREMENTS)}")
    out_dir = Path(cfg.out_dir)
    store = out_dir / "store"  # a throwaway store: every repeat makes fresh experiments
    store.mkdir(parents=True, exist_ok=True)
    ensure_store(uri := f"sqlite:///{store}/mlflow.db")
    mlflow.set_tracking_uri(uri)
    task = Task.from_config(cfg.task)
    program, program_config = build_program(cfg.program, task.contract)
    adapter_config = to_container(cfg.adapter) if cfg.get("adapter") else None
    adapter = instantiate(adapter_config) if adapter_config else None
    repeats = int(cfg.repeats)
    rows: list[Row] = []

    def embedded(**overrides) -> dspy.LM:
        lm = instantiate(cfg.lm, **overrides)
        if not isinstance(lm.engine, LlamaCppEngine):
            raise ValueError(f"the engine row and cached.lm=local need the embedded LM (lm=local), got {lm.model}")
        return lm

    if "engine" in which:
        lm = embedded(cache=False, max_tokens=int(cfg.engine.max_tokens))
        e = cfg.engine
        rows += measure_engine(lm, prompt=e.prompt, calls=int(e.calls), repeats=repeats, burners=int(e.burners))
    if "contexts" in which:
        lms = {1: embedded(cache=False, n_contexts=1)}
        lms[int(cfg.lm.n_contexts)] = embedded(cache=False)
        if len(lms) < 2:
            raise ValueError("the contexts row compares lm.n_contexts with one context: set lm.n_contexts above 1")
        examples = task.examples("dev")[: int(cfg.contexts.n)]
        kwargs = {"program": program, "examples": examples, "task": task, "adapter": adapter, "repeats": repeats}
        rows.append(measure_contexts(lms, **kwargs))
    latency = float(cfg.fake.latency_s)
    with instantiate(cfg.fake.server)(latency=latency) as fake:
        fake_lm_config = to_container(cfg.fake.lm) | {"api_base": fake.url}
        bench = Bench(
            task=task,
            program=program,
            program_config=program_config,
            adapter=adapter,
            adapter_config=adapter_config,
            fake_lm=instantiate(fake_lm_config),
            fake_lm_config=fake_lm_config,
            latency_s=latency,
            store=store,
            autolog=to_container(cfg.tracking.autolog),
            traced=bool(cfg.traced),
        )
        n = len(task.examples("dev"))
        if "framework" in which:
            rows.append(measure_framework(bench, num_threads=int(cfg.framework.num_threads), repeats=repeats))
        if "parallel" in which:
            rows.append(measure_parallel(bench, n=n, num_threads=int(cfg.parallel.num_threads), repeats=repeats))
        if "cached" in which:
            lm = embedded() if cfg.cached.lm == "local" else instantiate(fake_lm_config | {"cache": True})
            c = cfg.cached
            rows.append(
                measure_cached(bench, n=min(n, int(c.n)), num_threads=int(c.num_threads), repeats=repeats, lm=lm)
            )
        if which & {"serving", "cold_start"}:
            rows += measure_serving_and_cold_start(
                bench,
                clients=[int(c) for c in cfg.serving.clients],
                duration_s=float(cfg.serving.duration_s),
                warmup_s=float(cfg.serving.warmup_s),
                workers=int(cfg.serving.workers),
                lm_engine=cfg.serving.get("lm_engine"),
                repeats=repeats,
                which=which,
            )
    meta = {
        "task": cfg.task.name,
        "repeats": repeats,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "config": redact({k: v for k, v in to_container(cfg).items() if k != "hydra"}),
    }
    table = write_report(rows, Path(cfg.out) if cfg.get("out") else out_dir / "speed.json", meta)
    print(table)
    print(f"bench speed: JSON in {cfg.out or out_dir / 'speed.json'}")
    return rows


@hydra_main("bench_speed", config_dir=CONF_DIR)
def main(cfg: DictConfig) -> None:
    speed(cfg)


if __name__ == "__main__":
    main()
