"""`clean_runs`: mark KILLED, with the reason, the RUNNING runs of this host whose process is gone.

    python -m pipelines.clean_runs                        # every experiment in the configured store
    python -m pipelines.clean_runs all_experiments=false  # only tracking.experiment

Every entry point already does this for its own experiment as it starts; this is the same check on
demand (`make clean-runs`), e.g. after a machine was rebooted with runs in flight. Runs of other hosts
and runs with no recorded process are left alone: nothing here can tell whether they are still alive.
"""

from __future__ import annotations

import logging

import mlflow
from omegaconf import DictConfig

from pipelines.cli import hydra_main
from pipelines.tracking.liveness import mark_stale_runs
from pipelines.tracking.store import ensure_store

log = logging.getLogger(__name__)


def clean_runs(tracking_uri: str, experiment: str | None = None) -> list[str]:
    """Ids of the runs marked KILLED in `experiment` (every experiment when None)."""
    ensure_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        ids = [found.experiment_id] if found else []
    return [run_id for exp_id in ids for run_id in mark_stale_runs(exp_id, reason_by="clean_runs")]


@hydra_main("clean_runs")
def main(cfg: DictConfig) -> None:
    marked = clean_runs(str(cfg.tracking.uri), None if cfg.all_experiments else str(cfg.tracking.experiment))
    print(f"{len(marked)} stale run(s) marked KILLED" + (f": {', '.join(marked)}" if marked else ""))


if __name__ == "__main__":
    main()
