"""A registered model served as a user serves it, for the speed benchmark: register, serve, time a cold start.

    >>> uri, model = register_program(store, program, program_config, task,             # doctest: +SKIP
    ...                               lm_config=fake_lm_config, adapter_config=adapter_config)
    >>> with serving(uri, model, first_body=body(0)) as (url, seconds_to_first_answer, pid):  # doctest: +SKIP
    ...     closed_loop(url, body, clients=16, duration_s=5)

`serving` is `python -m pipelines.serve` in its own process group on a free port (MLflow's scoring server);
`cold_start_*` time a fresh process from its start to its first answer. `measure_serving_and_cold_start`
makes the benchmark's `serving_<clients>` and `cold_start_*` rows from them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dspy
import mlflow
import requests

from benchmarks.eval_speed import Bench
from benchmarks.load import closed_loop, tree_cpu_s
from benchmarks.ratios import Row
from benchmarks.serve_process import serve_process
from pipelines.config import PROJECT_ROOT
from pipelines.model.log import log_program_model
from pipelines.model.spec import build_spec
from pipelines.tracking.store import ensure_store

BOUNDS = {16: 0.8}  # the issue's: 16 clients get at least 0.8 of the ideal throughput through a provider LM
# The least any process answering through this stack pays before its first line of our code runs.
IMPORT_FLOOR = "import dspy, mlflow, pandas"
# A fresh process: load the registered model and answer one row (what a batch job or a notebook does).
LOAD_AND_PREDICT = (
    "import sys, json, pandas as pd, pipelines, mlflow; "
    "model = mlflow.pyfunc.load_model(sys.argv[1]); "
    "print(json.dumps(model.predict(pd.DataFrame([json.loads(sys.argv[2])])).to_dict('records')), flush=True)"
)


def register_program(
    store: Path, program: dspy.Module, program_config: dict, task, *, lm_config: dict, adapter_config: dict | None
) -> tuple[str, str]:
    """Log `program` (the project's model format) in a sqlite store under `store` and make it `bench@champion`;
    returns (tracking URI, model URI)."""
    uri = f"sqlite:///{store}/mlflow.db"
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name("bench-serving") or mlflow.get_experiment(
        mlflow.create_experiment("bench-serving", artifact_location=(store / "artifacts").resolve().as_uri())
    )
    spec = build_spec(
        program_config=program_config,
        contract=task.contract,
        lm_config=lm_config,
        adapter_config=adapter_config,
        task_config=task.config,
    )
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="bench-speed-served"):
        example = task.splits.frame("dev")[task.contract.input_names].head(2)
        info = log_program_model(program, spec, input_example=example)
    version = mlflow.register_model(info.model_uri, "bench")
    mlflow.MlflowClient().set_registered_model_alias("bench", "champion", version.version)
    return uri, "models:/bench@champion"


def _env(tracking_uri: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": tracking_uri}


def first_answer(url: str, body: dict, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    """Poll `/invocations` with `body` until it answers 200 (the server is up AND the model answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering")
        try:
            if requests.post(f"{url}/invocations", json=body, timeout=30).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} gave no answer within {timeout_s} s")


@contextmanager
def serving(tracking_uri: str, model_uri: str, first_body: dict, overrides=()) -> Iterator[tuple[str, float, int]]:
    """`python -m pipelines.serve` on a free port; yields (URL, seconds from process start to first answer, the
    server's root process: `serve` execs `mlflow models serve`, which execs uvicorn, whose workers are its children)."""
    start = time.perf_counter()
    with serve_process([f"model_uri={model_uri}", *overrides], _env(tracking_uri)) as (url, proc):
        first_answer(url, first_body, proc)
        yield url, time.perf_counter() - start, proc.pid


def timed_process(args: list[str], env: dict[str, str], timeout_s: float = 300.0) -> float:
    """Seconds from starting `python args...` to its exit (it must exit 0)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def cold_start_import_floor(tracking_uri: str) -> float:
    return timed_process(["-c", IMPORT_FLOOR], _env(tracking_uri))


def cold_start_load_model(tracking_uri: str, model_uri: str, row_json: str) -> float:
    return timed_process(["-c", LOAD_AND_PREDICT, model_uri, row_json], _env(tracking_uri))


def request_bodies(bench: Bench):
    """`body(i)`: request i's body, a row never sent before (a dev example's inputs, its text made unique, so no
    cache anywhere answers it). The examples are read once: the load clients share the bench's process, and
    CPU spent there is taken from the server under test."""
    rows = [example.inputs().toDict() for example in bench.task.examples("dev")]
    first = bench.task.contract.input_names[0]

    def body(i: int) -> dict:
        inputs = dict(rows[i % len(rows)])
        inputs[first] = f"{inputs[first]} (ref {uuid.uuid4().hex[:8]})"
        return {"dataframe_records": [inputs]}

    return body


def machine_busy_s() -> float:
    """CPU seconds every core of this machine has spent busy so far (all processes, idle and I/O wait excluded)."""
    import psutil

    times = psutil.cpu_times()
    # Linux counts guest time inside user time as well: left out here so it is not counted twice.
    counted_twice = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - counted_twice


def measure_serving_and_cold_start(
    bench: Bench,
    *,
    clients: list[int],
    duration_s: float,
    warmup_s: float,
    repeats: int,
    which: set[str],
    workers: int = 1,
    lm_engine: str | None = None,
) -> list[Row]:
    tracking_uri, model_uri = register_program(
        bench.store,
        bench.program,
        bench.program_config,
        bench.task,
        lm_config=bench.fake_lm_config,
        adapter_config=bench.adapter_config,
    )
    rows: list[Row] = []
    body = request_bodies(bench)
    if "serving" in which:
        by_clients = {
            c: Row(f"serving_{c}", "req/s", f"ideal {c}/latency", higher_is_better=True, threshold=BOUNDS.get(c))
            for c in clients
        }
        # Past the LM's latency, the bound is the server's CPU: one worker is one Python process, which runs
        # Python on one core at a time, so it answers at most 1 / (its CPU seconds per request) requests/s.
        # The machine's bound: clients, fake LM and server share its cores, so it answers at most
        # cores / (all the CPU seconds one request costs, everywhere) requests/s, however many workers serve.
        cores = len(os.sched_getaffinity(0))
        overrides = [f"workers={workers}", f"lm_engine={lm_engine or 'null'}"]
        with serving(tracking_uri, model_uri, body(0), overrides) as (url, _, pid):
            closed_loop(url, body, clients=max(clients), duration_s=warmup_s)
            for _ in range(repeats):
                for c, row in by_clients.items():
                    cpu_before, busy_before = tree_cpu_s(pid), machine_busy_s()
                    result = closed_loop(url, body, clients=c, duration_s=duration_s)
                    row.add(result.requests_per_s, c / bench.latency_s)
                    done = max(1, result.ok)
                    cpu_ms = 1000 * (tree_cpu_s(pid) - cpu_before) / done
                    machine_ms = 1000 * (machine_busy_s() - busy_before) / done
                    row.details.setdefault("runs", []).append(
                        result.summary() | {"server_cpu_ms": cpu_ms, "machine_cpu_ms": machine_ms}
                    )
        for row in by_clients.values():
            runs = row.details["runs"]
            c = int(row.name.removeprefix("serving_"))
            cpu_ms = statistics.median(r["server_cpu_ms"] for r in runs)
            row.details |= {
                "server_cpu_ms_per_request": cpu_ms,
                "cpu_bound_req_s": min(workers, cores) * 1000 / cpu_ms,  # a worker runs Python on one core at a time
                "machine_cpu_ms_per_request": (machine_ms := statistics.median(r["machine_cpu_ms"] for r in runs)),
                "machine_bound_req_s": cores * 1000 / machine_ms,
                "workers": workers,
                "lm_engine": lm_engine or f"{bench.fake_lm_config.get('engine', 'litellm')} (registered)",
                "p50_s": statistics.median(r["p50_s"] for r in runs),
                "p99_s": statistics.median(r["p99_s"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "latency_s": bench.latency_s,
            }
        rows.extend(by_clients.values())
    if "cold_start" in which:
        row_json = json.dumps(body(0)["dataframe_records"][0])
        load = Row("cold_start_load_model", "s", "import floor (dspy, mlflow, pandas)")
        serve = Row("cold_start_serve", "s", "import floor (dspy, mlflow, pandas)")
        for _ in range(repeats):
            floor = cold_start_import_floor(tracking_uri)
            load.add(cold_start_load_model(tracking_uri, model_uri, row_json), floor)
            with serving(tracking_uri, model_uri, body(1)) as (_, seconds, _):
                serve.add(seconds, floor)
        rows += [load, serve]
    return rows
