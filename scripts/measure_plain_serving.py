"""Plain `mlflow models serve` beside `python -m pipelines.serve`: the same model, the same load (issue 27).

    .venv/bin/python -m scripts.measure_plain_serving --clients 16 --duration 20 --latency 0.1
    .venv/bin/python -m scripts.measure_plain_serving --clients 1 16 50 --workers 2 --launchers plain

Registers one small model (a text in, an intent out; `tests.serving.models`) whose LM is the fake provider
(`--latency` s per call, no cache: every request reaches it) and serves it twice, one launcher at a time:
- `plain`: `mlflow models serve -m models:/served@champion --env-manager local -w W`, from an empty working
  directory, nothing of ours in the environment: the bounds are the model's own;
- `serve`: `python -m pipelines.serve model_uri=... workers=W`.
Each gets a 3 s warm-up, then `--duration` s of closed-loop load per client count (`benchmarks.load`): each
client sends its next single-row request as soon as the last is answered. The ideal is clients / latency
requests per second; the server's resident memory (all its processes) is read after each load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from benchmarks.fake_provider import FakeProvider
from benchmarks.load import closed_loop, tree_rss_mb
from benchmarks.serve_process import free_port, process_group, serve_process
from benchmarks.served import first_answer
from tests.serving.models import PREDICT, log_served_model, provider_config
from tests.serving.test_upstream_errors import INTENTS


def body(i: int) -> dict:
    return {"dataframe_split": {"columns": ["text"], "data": [[f"refund please, order {uuid.uuid4().hex[:8]} {i}"]]}}


def clean_env(tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_SERVE_", "UVICORN_", "MLFLOW_"))}
    return env | {"MLFLOW_TRACKING_URI": tracking_uri}


@contextmanager
def plain_server(served, workers: int, work: Path):
    port = free_port()
    env = clean_env(served.tracking_uri)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])  # uvicorn, by name
    command = ["mlflow", "models", "serve", "-m", served.uri, "--env-manager", "local", "-p", str(port)]
    with process_group([sys.executable, "-m", *command, "-w", str(workers)], cwd=work, env=env) as proc:
        yield f"http://127.0.0.1:{port}", proc


@contextmanager
def launcher_server(served, workers: int):
    overrides = [f"model_uri={served.uri}", f"tracking.uri={served.tracking_uri}", f"workers={workers}"]
    with serve_process(overrides, clean_env(served.tracking_uri)) as (url, proc):
        yield url, proc


def measure(url: str, proc, clients: list[int], duration_s: float, latency: float) -> list[dict]:
    first_answer(url, body(0), proc)
    closed_loop(url, body, clients=max(clients), duration_s=3)  # warm-up
    rows = []
    for n in clients:
        result = closed_loop(url, body, clients=n, duration_s=duration_s)
        ideal = n / latency
        rows.append(
            {
                "clients": n,
                "requests_per_s": round(result.requests_per_s, 1),
                "fraction_of_ideal": round(result.requests_per_s / ideal, 3),
                "p50_s": round(result.p50_s, 3),
                "p99_s": round(result.p99_s, 3),
                "errors": result.errors,
                "rss_mb": round(tree_rss_mb(proc.pid), 1),
                "error_examples": result.error_examples[:2],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[16])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per client count")
    parser.add_argument("--latency", type=float, default=0.1, help="fake provider: seconds per LM call")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--launchers", nargs="+", choices=["plain", "serve"], default=["plain", "serve"])
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="measure-plain-serving-"))
    results: dict = {"args": vars(args)}
    with FakeProvider(args.latency) as fake:
        served = log_served_model(root / "store", INTENTS, PREDICT, provider_config(fake.url))
        for name in args.launchers:
            print(f"== {name} (workers={args.workers})", flush=True)
            start = time.monotonic()
            if name == "plain":
                (root / "work").mkdir(exist_ok=True)
                server = plain_server(served, args.workers, root / "work")
            else:
                server = launcher_server(served, args.workers)
            with server as (url, proc):
                results[name] = measure(url, proc, args.clients, args.duration, args.latency)
            print(f"   ({time.monotonic() - start:.0f} s)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
