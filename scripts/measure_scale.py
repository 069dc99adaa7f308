"""Measure the "past one machine" figures with a fixed-latency fake LM (README, "Past one machine").

    make server && export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
    .venv/bin/python -m scripts.measure_scale --what all --latency 0.05 --rows 1200   # from the checkout's root

Trains and registers a model (`--name`) whose LM is the fake OpenAI-compatible server this script runs on
`--api-port`, then measures, each `--repeats` times (medians printed, every value in the JSON):
- `score`: rows/s at Spark local[N] for each `--cores` N (1, 2, 4); per chunk (the last chunk: workers warm) and per
  command (JVM and Python worker start-up included). The ideal for N cores is N times local[1].
- `predict`: the same rows through `mlflow models predict` (one process), per command;
- `tracking`: one fake-LM `train` run against sqlite and against the server, interleaved; wall seconds;
- `serve`: `pipelines.serve workers=N` for N = 1, 2, 4, with 8 concurrent clients sending one row each.
Every run gets fresh inputs and a fresh DSPy cache, so no LM answer is replayed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import requests
from mlflow import MlflowClient

from benchmarks.fake_provider import FakeProvider
from tests.helpers import serving_champion

ROOT = Path(__file__).resolve().parents[1]

PHRASES = ["where is my suitcase", "cancel my trip", "I want a refund", "can I change my seat", "book a flight"]


def rows(n: int, salt: str) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"{PHRASES[i % len(PHRASES)]}, ref {salt}-{i}" for i in range(n)]})


def entry(name: str, *overrides: str, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", f"pipelines.{name}", *overrides], cwd=ROOT, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - start


def lm_overrides(args, work: Path, tag: str) -> list[str]:
    return [
        "lm=openai_compatible",
        f"lm.api_base=http://127.0.0.1:{args.api_port}/v1",
        "lm.model=self-hosted/fake",
        f"paths.dspy_cache_dir={work}/cache-{tag}",
        f"paths.output_dir={work}/outputs",
        "eval.display_progress=false",
        f"tracking.experiment={args.experiment}",
    ]


def latest_run(uri: str, experiment: str, entry_point: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    query = f"tags.entry_point = '{entry_point}'"
    runs = client.search_runs([exp.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    return client, runs[0]


def measure_score(args, work: Path, uri: str) -> dict:
    out: dict[str, list] = {}
    for rep in range(args.repeats):
        for cores in args.cores:
            tag = f"score-{cores}-{rep}"
            source = work / f"{tag}.csv"
            rows(args.rows, tag).to_csv(source, index=False)
            overrides = [
                f"model_uri=models:/{args.name}@champion",
                f"input={source}",
                f"output={work}/{tag}-out",
                f"spark.cores={cores}",
                f"chunk_rows={args.chunk_rows or args.rows // 2}",  # default two chunks: the second on warm workers
                "+spark.conf.spark.ui.enabled=false",
                *lm_overrides(args, work, tag),
                "tracking=server",
                f"tracking.uri={uri}",
            ]
            wall = entry("score", *overrides)
            client, run = latest_run(uri, args.experiment, "score")
            last = client.get_metric_history(run.info.run_id, "chunk_rows_per_s")[-1].value
            metrics = run.data.metrics
            record = {"chunk_rows_per_s": last, "rows_per_s": metrics["rows_per_s"], "wall_s": wall}
            out.setdefault(f"local[{cores}]", []).append(record | {"command_rows_per_s": args.rows / wall})
            print(tag, out[f"local[{cores}]"][-1], flush=True)
    return out


def measure_predict(args, work: Path, uri: str) -> list:
    out = []
    for rep in range(args.repeats):
        source = work / f"predict-{rep}.csv"
        rows(args.rows, f"predict-{rep}").to_csv(source, index=False)
        env = os.environ | {"MLFLOW_TRACKING_URI": uri, "DSPY_CACHEDIR": str(work / f"cache-predict-{rep}")}
        start = time.perf_counter()
        model = f"models:/{args.name}/1"
        command = ["models", "predict", "-m", model, "-i", source, "-t", "csv", "--env-manager", "local"]
        subprocess.run([Path(sys.executable).with_name("mlflow"), *command], env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        out.append({"command_rows_per_s": args.rows / wall, "wall_s": wall})
        print("predict", out[-1], flush=True)
    return out


def measure_tracking(args, work: Path, uri: str) -> dict:
    out: dict[str, list] = {"sqlite": [], "server": []}
    server = ["tracking=server", f"tracking.uri={uri}"]
    stores = {"sqlite": [f"tracking.uri=sqlite:///{work}/mlflow.db"], "server": server}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for rep in range(args.repeats + 1):  # the first round warms the DSPy cache and creates the experiments
        for store, overrides in stores.items():
            wall = entry("train", "optimizer=labeled_fewshot", *overrides, *lm_overrides(args, work, "train"), env=env)
            if rep:
                out[store].append(wall)
                print(store, round(wall, 1), flush=True)
    return out


def measure_serve(args, uri: str) -> dict:
    out: dict[str, list] = {}
    for workers in (1, 2, 4):
        overrides = [f"registry.name={args.name}", f"workers={workers}", "tracking=server"]
        with serving_champion(uri, overrides=overrides) as url:
            for rep in range(args.repeats):
                texts = rows(args.requests, f"serve-{workers}-{rep}")["text"]

                def ask(text: str) -> None:
                    body = {"dataframe_split": {"columns": ["text"], "data": [[text]]}}
                    requests.post(f"{url}/invocations", json=body, timeout=120).raise_for_status()

                start = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(ask, texts))
                out.setdefault(f"workers={workers}", []).append(args.requests / (time.perf_counter() - start))
                print(f"workers={workers}", round(out[f"workers={workers}"][-1], 1), flush=True)
    return out


def medians(value):
    if isinstance(value, dict):
        return {k: medians(v) for k, v in value.items()}
    if value and isinstance(value[0], dict):
        return {k: round(statistics.median(v[k] for v in value), 2) for k in value[0]}
    return round(statistics.median(value), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="all", choices=["all", "score", "predict", "tracking", "serve"])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per fake LM request")
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2, 4], help="score: Spark local[N] for each N")
    parser.add_argument("--chunk-rows", type=int, default=None, help="score: rows per chunk (default: rows / 2)")
    parser.add_argument("--requests", type=int, default=200, help="serving: one-row requests per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--api-port", type=int, default=8012)
    parser.add_argument("--name", default="scale_bench", help="registered model name the script creates")
    parser.add_argument("--experiment", default="scale-bench")
    parser.add_argument("--out", default="scale_measurements.json")
    args = parser.parse_args()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    results = {"latency_s": args.latency, "rows": args.rows, "cpus": os.cpu_count()}
    with FakeProvider(args.latency, port=args.api_port):
        base = [*lm_overrides(args, work, "reg"), "tracking=server", f"tracking.uri={uri}"]
        base.append(f"registry.name={args.name}")
        entry("train", "optimizer=labeled_fewshot", *base)
        entry("register", *base)
        steps = {"score": measure_score, "predict": measure_predict, "tracking": measure_tracking}
        for name, step in steps.items():
            if args.what in ("all", name):
                results[name] = step(args, work, uri)
        if args.what in ("all", "serve"):
            results["serve"] = measure_serve(args, uri)
    results["medians"] = medians({k: v for k, v in results.items() if isinstance(v, dict | list)})
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results["medians"], indent=2))


if __name__ == "__main__":
    main()
