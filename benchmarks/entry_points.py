"""What a user waits for: each entry point as a whole process against the minimal plain DSPy + MLflow script.

    python -m benchmarks.entry_points                                  # evaluate, train, main at 60/240/1000 rows
    python -m benchmarks.entry_points --entries evaluate --rows 60 1000 --repeats 5
    python -m benchmarks.entry_points --root /path/to/other/checkout    # another version of `pipelines`

Each case runs two processes, in turn, `--repeats` times (the order alternates between repeats, so a machine
that slows down mid-run slows both sides alike):
- ours: `python -m pipelines.evaluate fresh=true eval.split=dev`, `python -m pipelines.train optimizer=none`
  or `python -m pipelines.main optimizer=none`, on the provider LM path (`lm=openai_compatible`, DSPy's cache off);
- plain: `benchmarks/plain_dspy_eval.py` doing the same work: `dspy.Evaluate` under `mlflow.dspy.autolog()`
  inside one run, one metric; `--log-model` for train, two splits, a logged and a registered model for main.
Both talk to the fake OpenAI-compatible server (`FakeProvider`, in this process) at `--latency` seconds a call,
one thread (two for `main`, as its config says), each side with its own sqlite store, created before the
timed runs. Rows: `travel_intents`' 60 dev rows; Banking77's 10-intent subset (`../shared/datasets`) above that.
`main` splits its rows between dev and test.

Per case: wall seconds (the median of the repeats) and CPU seconds (user + system of the process and its
children, from the OS's accounting of the finished process), ours over plain as ratios. Per entry point and
side: wall = a + b * rows fitted over the row counts, i.e. a fixed cost per process `a` and a cost per row `b`.
A table goes to stdout; the JSON (`--out`, default `outputs/bench/entry_points.json`) has the shape

    {"command": "...", "date": "...", "latency_s": 0.05, "repeats": 3,
     "rows": [{"name": "evaluate 60 rows", "entry": "evaluate", "rows": 60, "ours_s": .., "plain_s": ..,
               "ratio": .., "ours_cpu_s": .., "plain_cpu_s": .., "cpu_ratio": .., "ours_runs_s": [..], ...}],
     "fits": [{"name": "evaluate", "ours_fixed_s": .., "ours_per_row_ms": .., "plain_fixed_s": ..,
               "plain_per_row_ms": .., "ours_cpu_fixed_s": .., "ours_cpu_per_row_ms": .., ...}]}
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.fake_provider import FakeProvider

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
PLAIN = HERE / "plain_dspy_eval.py"
ENTRIES = {  # entry point -> (module, its own overrides, plain script's options)
    "evaluate": ("pipelines.evaluate", ["fresh=true", "eval.split=dev"], []),
    "train": ("pipelines.train", ["optimizer=none"], ["--log-model"]),
    "main": ("pipelines.main", ["optimizer=none"], ["--log-model", "--splits", "2", "--threads", "2"]),
}
BANKING77_LABELS = [
    "card_arrival",
    "card_linking",
    "exchange_rate",
    "lost_or_stolen_card",
    "pending_transfer",
    "refund_not_showing_up",
    "top_up_failed",
    "transfer_timing",
    "wrong_amount_of_cash_received",
    "pin_blocked",
]  # fmt: skip  (conf/task/banking77.yaml's subset)
TRAVEL_DEV_ROWS = 60  # travel_intents' dev split; more rows come from Banking77


@dataclass
class Case:
    entry: str
    rows: int
    ours: list[float] = field(default_factory=list)  # wall seconds per repeat
    plain: list[float] = field(default_factory=list)
    ours_cpu: list[float] = field(default_factory=list)
    plain_cpu: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.entry} {self.rows} rows"

    def task_overrides(self) -> list[str]:
        split = self.rows // 2 if self.entry == "main" else self.rows
        if self.rows <= TRAVEL_DEV_ROWS:
            return [f"task.data.dev_size={split}"] + ([f"task.data.test_size={split}"] if self.entry == "main" else [])
        test = split if self.entry == "main" else 100
        return ["task=banking77", f"task.data.dev_size={split}", f"task.data.test_size={test}"]

    def plain_data(self) -> list[str]:
        if self.rows <= TRAVEL_DEV_ROWS:
            return ["--csv", str(PROJECT / "data/travel_intents/intents.csv")]
        csv = PROJECT.parent / "shared/datasets/banking77/train.csv"
        return ["--csv", str(csv), "--label-column", "category", "--labels", *BANKING77_LABELS]

    def commands(self, api_base: str, store: Path) -> tuple[list[str], list[str]]:
        module, overrides, plain_options = ENTRIES[self.entry]
        ours = [
            sys.executable, "-m", module, *overrides, *self.task_overrides(),
            "lm=openai_compatible", f"lm.api_base={api_base}", "lm.model=self-hosted/fake", "lm.api_key_env=FAKE_KEY",
            "lm.cache=false", f"tracking.artifact_location={store}/ours/artifacts",
            f"paths.output_dir={store}/ours/out",
        ]  # fmt: skip
        plain = [
            sys.executable, str(PLAIN), "--api-base", api_base, "--rows", str(self.rows), *self.plain_data(),
            *plain_options, *(["--register", "plain"] if self.entry == "main" else []),
        ]  # fmt: skip
        return ours, plain

    def summary(self) -> dict:
        med = statistics.median

        def ratio(a: list[float], b: list[float]) -> float:
            return med([x / y for x, y in zip(a, b, strict=False) if y]) if a and b else float("nan")

        return {
            "name": self.name,
            "entry": self.entry,
            "rows": self.rows,
            "ours_s": med(self.ours) if self.ours else None,
            "plain_s": med(self.plain) if self.plain else None,
            "ratio": ratio(self.ours, self.plain),  # the median of the per-pair ratios
            "ours_cpu_s": med(self.ours_cpu) if self.ours_cpu else None,
            "plain_cpu_s": med(self.plain_cpu) if self.plain_cpu else None,
            "cpu_ratio": ratio(self.ours_cpu, self.plain_cpu),
            "ours_runs_s": self.ours,
            "plain_runs_s": self.plain,
            "ours_cpu_runs_s": self.ours_cpu,
            "plain_cpu_runs_s": self.plain_cpu,
            "failures": self.failures,
        }


def timed(command: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds (user + system, the process and everything it waited for) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("ab") as out:
        code = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


def fit(rows: list[int], values: list[float]) -> tuple[float, float]:
    """Least squares `value = a + b * rows`: (a, b); one row count gives (value, nan)."""
    if len(set(rows)) < 2:
        return (values[0] if values else float("nan")), float("nan")
    mx, my = statistics.fmean(rows), statistics.fmean(values)
    b = sum((x - mx) * (y - my) for x, y in zip(rows, values, strict=True)) / sum((x - mx) ** 2 for x in rows)
    return my - b * mx, b


def fits(cases: list[Case]) -> list[dict]:
    out = []
    for entry in dict.fromkeys(c.entry for c in cases):
        done = [c.summary() for c in cases if c.entry == entry and c.ours and c.plain]
        row = {"name": entry}
        for side in ("ours", "plain"):
            for kind, key in (("", f"{side}_s"), ("cpu_", f"{side}_cpu_s")):
                a, b = fit([d["rows"] for d in done], [d[key] for d in done])
                row[f"{side}_{kind}fixed_s"] = a
                row[f"{side}_{kind}per_row_ms"] = b * 1000
        out.append(row)
    return out


def table(rows: list[dict], fitted: list[dict]) -> str:
    def f(value, spec=".2f") -> str:
        return "-" if value is None or value != value else format(value, spec)

    lines = [f"{'case':<22}{'ours s':>9}{'plain s':>9}{'ratio':>7}{'ours cpu':>10}{'plain cpu':>10}{'cpu ratio':>10}"]
    for r in rows:
        lines.append(
            f"{r['name']:<22}{f(r['ours_s']):>9}{f(r['plain_s']):>9}{f(r['ratio']):>7}"
            f"{f(r['ours_cpu_s']):>10}{f(r['plain_cpu_s']):>10}{f(r['cpu_ratio']):>10}"
        )
    lines.append("")
    lines.append(f"{'fit a + b*rows':<22}{'ours a s':>9}{'b ms/row':>9}{'plain a':>9}{'b ms/row':>9}"
                 f"{'cpu: ours a':>12}{'b ms/row':>9}{'plain a':>9}{'b ms/row':>9}")  # fmt: skip
    for r in fitted:
        lines.append(
            f"{r['name']:<22}{f(r['ours_fixed_s']):>9}{f(r['ours_per_row_ms'], '.1f'):>9}"
            f"{f(r['plain_fixed_s']):>9}{f(r['plain_per_row_ms'], '.1f'):>9}"
            f"{f(r['ours_cpu_fixed_s']):>12}{f(r['ours_cpu_per_row_ms'], '.1f'):>9}"
            f"{f(r['plain_cpu_fixed_s']):>9}{f(r['plain_cpu_per_row_ms'], '.1f'):>9}"
        )
    return "\n".join(lines)


def result(args: argparse.Namespace, cases: list[Case], log: Path) -> dict:
    shown = ("http://127.0.0.1:PORT/v1", Path("STORE"))
    return {
        "command": shlex.join(["python", "-m", "benchmarks.entry_points", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "latency_s": args.latency,
        "repeats": args.repeats,
        "rows": [c.summary() for c in cases],
        "fits": fits(cases),
        "commands": {c.name: [shlex.join(cmd) for cmd in c.commands(*shown)] for c in cases},
        "log": str(log),
    }


def save(out: Path, data: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))


def run(args: argparse.Namespace) -> dict:
    """Every case, interleaved; the JSON is rewritten after each run, so a long benchmark cut short keeps its rows."""
    cases = [Case(entry, rows) for rows in args.rows for entry in args.entries]
    workdir = Path(tempfile.mkdtemp(prefix="entry-points-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "FAKE_KEY": "fake",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    log = workdir / "runs.log"
    with FakeProvider(latency=args.latency) as fake:
        stores = {}
        for i, case in enumerate(cases):  # each case's stores exist before anything is timed
            stores[case.name] = {}
            for side in ("ours", "plain"):
                store = workdir / f"case{i}" / side
                store.mkdir(parents=True)
                uri = f"sqlite:///{store}/mlflow.db"
                subprocess.run(
                    [sys.executable, "-c", f"import mlflow; mlflow.MlflowClient({uri!r}).search_experiments()"],
                    env=env, check=True, capture_output=True,
                )  # fmt: skip
                stores[case.name][side] = env | {"MLFLOW_TRACKING_URI": uri}
        for repeat in range(args.repeats):
            for i, case in enumerate(cases):
                ours, plain = case.commands(fake.url, workdir / f"case{i}")
                sides = [("ours", ours, args.root), ("plain", plain, PROJECT)]
                for side, command, cwd in sides if repeat % 2 == 0 else sides[::-1]:
                    wall, cpu, code = timed(command, cwd, stores[case.name][side], log)
                    if code:
                        case.failures.append(f"{side} repeat {repeat}: exit {code} (see {log})")
                        continue
                    getattr(case, side).append(wall)
                    getattr(case, f"{side}_cpu").append(cpu)
                    line = f"  {case.name:<20} {side:<5} repeat {repeat}: {wall:6.2f} s wall {cpu:6.2f} s CPU"
                    print(line, flush=True)
                    save(args.out, result(args, cases, log))
    return result(args, cases, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", nargs="+", default=list(ENTRIES), choices=list(ENTRIES))
    parser.add_argument("--rows", nargs="+", type=int, default=[60, 240, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake LM takes per call")
    parser.add_argument("--root", type=Path, default=PROJECT, help="the checkout whose entry points are timed")
    parser.add_argument("--out", type=Path, default=PROJECT / "outputs/bench/entry_points.json")
    args = parser.parse_args()
    data = run(args)
    print(table(data["rows"], data["fits"]))
    save(args.out, data)
    print(f"\n{args.out}")


if __name__ == "__main__":
    main()
