"""How every entry point ends: a few lines on what a run scored and cost, and where to look in the UI.

    >>> print(report([result.run_id]))                                         # doctest: +SKIP
    train-bootstrap-travel_intents  FINISHED in 41.2 s
      dev score   0.750 ± 0.188 [0.562, 0.938]  n=16  errors 0  unparsed 1
      LM calls    48   tokens 12,345 (11,020 in / 1,325 out)
      model       models:/m-4f0c...
      run         http://127.0.0.1:5000/#/experiments/1/runs/9b2e...
      experiment  http://127.0.0.1:5000/#/experiments/1
      scores      http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=headline

Everything is read back from the finished run (its metrics and tags), so the summary says what MLflow
recorded, not what the process believed. The same facts, as one paragraph, become the run's description
(`mlflow.note.content`, shown at the top of the run's page).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run

from pipelines.data.splits import SPLITS
from pipelines.tracking import metric_names as names
from pipelines.tracking.runs_view import headline_url, write_headline_view

LOCAL_UI = "http://127.0.0.1:5000"  # what `mlflow ui` / `make ui` serves for a sqlite or file store
NOTE_TAG = "mlflow.note.content"  # MLflow's run description
_LM_CALLS = re.compile(r"(^|/)lm_calls$")
_TOKENS = re.compile(r"(^|/)(input|output)_tokens$")


def genai_surfaces(tracking) -> bool:
    """`tracking.genai_surfaces`: scores on logged models, prompts in the registry, run descriptions.

    On by default; `tracking.genai_surfaces=false` logs none of them (to measure what they cost, or for a
    store without a prompt registry). The console summary is printed either way."""
    return bool(tracking.get("genai_surfaces", True))


def ui_base(tracking_uri: str | None = None) -> str:
    uri = tracking_uri or mlflow.get_tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI


def experiment_url(experiment_id: str, base: str) -> str:
    return f"{base}/#/experiments/{experiment_id}"


def run_url(experiment_id: str, run_id: str, base: str) -> str:
    return f"{experiment_url(experiment_id, base)}/runs/{run_id}"


@dataclass
class Score:
    label: str  # "dev", "baseline dev", "challenger dev"
    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None
    errors: int | None = None  # rows that raised (unscored), beside rows whose answer did not parse (scored 0)
    unparsed: int | None = None

    def text(self) -> str:
        out = f"{self.value:.3f}"
        if self.low is not None and self.high is not None:
            out += f" ± {(self.high - self.low) / 2:.3f} [{self.low:.3f}, {self.high:.3f}]"
        out += f"  n={self.n}" if self.n else ""
        out += f"  errors {self.errors}" if self.errors is not None else ""
        return out + (f"  unparsed {self.unparsed}" if self.unparsed is not None else "")

    def failures(self) -> str:
        """` (errors 2, unparsed 1)` for the run's description (empty when neither was counted)."""
        parts = [f"{w} {k}" for k, w in ((self.errors, "errors"), (self.unparsed, "unparsed")) if k is not None]
        return f" ({', '.join(parts)})" if parts else ""


@dataclass
class RunFacts:
    name: str
    entry: str
    status: str
    seconds: float
    scores: list[Score] = field(default_factory=list)
    lm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    model_uri: str | None = None
    decision: str | None = None  # register: "promoted: <reason>"

    @classmethod
    def of(cls, run: Run) -> RunFacts:
        m, tags = run.data.metrics, run.data.tags
        scores = []
        for role, label in ((names.SCORE, "{}"), (names.BASELINE, "baseline {}")):
            for split in SPLITS:
                if names.score(split, role) in m:
                    n = m.get(names.detail(split, "examples", role))
                    low, high = m.get(names.ci_low(split, role)), m.get(names.ci_high(split, role))
                    errors, unparsed = (m.get(names.detail(split, w, role)) for w in ("errors", "parse_failures"))
                    scores.append(
                        Score(
                            label.format(split),
                            m[names.score(split, role)],
                            low,
                            high,
                            int(n) if n else None,
                            int(errors) if errors is not None else None,
                            int(unparsed) if unparsed is not None else None,
                        )
                    )
        n_paired = int(tags["promotion.paired_examples"]) if "promotion.paired_examples" in tags else None
        gate_split = run.data.params.get("eval.split", "gate")  # register compares on eval.split
        for role, key in (("challenger", names.GATE_CHALLENGER), ("champion", names.GATE_CHAMPION)):
            if key in m:
                scores.append(Score(f"{role} {gate_split}", m[key], n=n_paired))
        model_uri = tags.get("model_uri") or tags.get("evaluated_model")
        if tags.get("model_name") and tags.get("model_version"):
            model_uri = f"models:/{tags['model_name']}/{tags['model_version']}"
        decision = tags.get("promotion.decision")
        if decision and tags.get("promotion.reason"):
            decision = f"{decision.replace('_', ' ')}: {tags['promotion.reason']}"
        end = run.info.end_time or int(time.time() * 1000)
        return cls(
            name=run.info.run_name or run.info.run_id,
            entry=tags.get("entry_point", "run"),
            status=run.info.status,
            seconds=(end - run.info.start_time) / 1000,
            scores=scores,
            lm_calls=int(sum(v for k, v in m.items() if _LM_CALLS.search(k))),
            tokens_in=int(sum(v for k, v in m.items() if _TOKENS.search(k) and "input" in k)),
            tokens_out=int(sum(v for k, v in m.items() if _TOKENS.search(k) and "output" in k)),
            model_uri=model_uri,
            decision=decision,
        )

    def lines(self) -> list[str]:
        out = [f"{self.name}  {self.status} in {self.seconds:.1f} s"]
        out += [f"  {s.label + ' score':<22}{s.text()}" for s in self.scores]
        if self.decision:
            out.append(f"  {'decision':<22}{self.decision}")
        tokens = self.tokens_in + self.tokens_out
        out.append(
            f"  {'LM calls':<22}{self.lm_calls:,}   tokens {tokens:,} ({self.tokens_in:,} in / {self.tokens_out:,} out)"
        )
        if self.model_uri:
            out.append(f"  {'model':<22}{self.model_uri}")
        return out

    def paragraph(self) -> str:
        """The run's description: one paragraph, the same facts as the console lines."""
        parts = [f"`{self.entry}` {self.status.lower()} in {self.seconds:.1f} s."]
        for s in self.scores:
            interval = f" (95% CI {s.low:.3f}-{s.high:.3f})" if s.low is not None and s.high is not None else ""
            examples = f" on {s.n} examples" if s.n else ""
            parts.append(f"{s.label.capitalize()} score {s.value:.3f}{interval}{examples}{s.failures()}.")
        if self.decision:
            parts.append(f"Decision: {self.decision}.")
        parts.append(f"{self.lm_calls:,} LM calls, {self.tokens_in + self.tokens_out:,} tokens.")
        if self.model_uri:
            parts.append(f"Model: `{self.model_uri}`.")
        return " ".join(parts)


def report(run_ids: list[str], *, note: bool = True, tracking_uri: str | None = None) -> str:
    """The summary of each run plus links to it and its experiment; printed and returned.

    `note=True` also writes each run's paragraph as its description (a run that already ended takes tags)."""
    client, base = MlflowClient(), ui_base(tracking_uri)
    blocks, experiments = [], []
    for run_id in run_ids:
        run = client.get_run(run_id)
        facts = RunFacts.of(run)
        if note:
            client.set_tag(run_id, NOTE_TAG, facts.paragraph())
        exp = run.info.experiment_id
        blocks.append("\n".join([*facts.lines(), f"  {'run':<22}{run_url(exp, run_id, base)}"]))
        experiments += [exp] if exp not in experiments else []
    links = [f"{'experiment':<24}{experiment_url(exp, base)}" for exp in experiments]
    if note:  # the runs table opening on the headline scores (`runs_view`)
        for exp in experiments:
            write_headline_view(exp, client)
        links += [f"{'scores':<24}{headline_url(exp, base)}" for exp in experiments]
    text = "\n".join([*blocks, *links])
    print(f"\n{text}\n", flush=True)  # the console's last words, whatever the logging config
    return text
