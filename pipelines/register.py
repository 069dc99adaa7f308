"""`register`: register a run's model as `challenger`; promote it to `champion` only on evidence.

    python -m pipelines.register                      # the latest finished train/optimize run
    python -m pipelines.register run_id=<id>
    python -m pipelines.register registry.gate.alpha=0.1
    python -m pipelines.register force=true           # promote regardless (recorded as forced)

Challenger and champion are compared on the same examples (`eval.split`: dev, never the optimiser's
valset), paired by row id, with the task and data settings the source run recorded. Per-example results
already on record for that data digest are reused; missing ones are measured now. A first registration
(no champion) is held only to `registry.gate.max_error_rate` (errored or unparsed answers). Registering a run
twice reuses its version. Everything is decided before the registry is touched, so an interrupted `register`
leaves no half-made version.
"""

from __future__ import annotations

from mlflow import MlflowClient
from omegaconf import DictConfig

from pipelines.cli import adopt_recorded_task, hydra_main, tracked_run
from pipelines.data.task import Task
from pipelines.evaluation.runner import EvalSettings
from pipelines.registry.promotion import RegisterResult, promote
from pipelines.registry.versions import latest_model_run
from pipelines.session import Session
from pipelines.tracking.store import configure_tracking
from pipelines.tracking.summary import genai_surfaces
from pipelines.tracking.summary import report as print_summary


def find_source_run(tracking: DictConfig, run_id: str | None):
    """The run whose model to register: `run_id`, else the latest finished train/optimize run."""
    experiment_id = configure_tracking(tracking)
    return MlflowClient().get_run(run_id) if run_id else latest_model_run(experiment_id)


def register(
    cfg: DictConfig,
    session: Session | None = None,
    run_id: str | None = None,
    force: bool = False,
    report_path: str | None = None,
) -> RegisterResult:
    """The register run: `pipelines.registry.promotion.promote` with this config's task, settings and registry."""
    session = session or Session.start(cfg)
    # both models under the same guards
    settings = EvalSettings.from_config(cfg.eval, cfg.get("guard"), cfg.get("tracking"))
    source = find_source_run(cfg.tracking, run_id)
    model_uri = source.data.tags.get("model_uri") or f"runs:/{source.info.run_id}/model"
    with tracked_run(cfg, "register", run_name=cfg.run_name or f"register-{cfg.registry.name}") as run:
        return promote(
            source,
            model_uri,
            Task.from_config(cfg.task),
            settings,
            cfg.registry,
            split=cfg.eval.split,
            register_run_id=run.info.run_id,
            force=force,
            report_path=report_path,
            surfaces=genai_surfaces(cfg.tracking),
        )


@hydra_main("register")
def main(cfg: DictConfig) -> None:
    source = find_source_run(cfg.tracking, cfg.run_id)
    adopt_recorded_task(cfg, source.info.run_id)  # the source's task and data, unless the command line says
    result = register(cfg, run_id=source.info.run_id, force=cfg.force, report_path=cfg.report_path)
    print_summary([result.run_id], note=genai_surfaces(cfg.tracking))


if __name__ == "__main__":
    main()
