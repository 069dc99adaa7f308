"""`score` on Spark local[2]: 2,000 rows with bad ones, a crash mid-job, and a rerun that resumes."""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.batch.job import guard_counts
from pipelines.batch.spark import spark_session
from tests.fakes import TRAVEL_RULES

pytestmark = pytest.mark.slow
ROWS = 2000
BAD = {123: "   ", 456: ""}  # whitespace only (refused by the model); empty (read as null)
PHRASES = ["where is my suitcase", "cancel my trip", "I want a refund", "can I change my seat", "book a flight to Rome"]


def write_input(path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])  # `label` as in a labelled file: it must survive untouched
        for i in range(ROWS):
            text = BAD.get(i, f"{PHRASES[i % len(PHRASES)]}, booking ref {i}")
            writer.writerow([i, text, "gold"])


def committed(output: Path) -> pd.DataFrame:
    """What a reader of the output sees (pyarrow skips `_temporary/` and `_SUCCESS`, as Spark does)."""
    if not any(output.glob("*.parquet")):
        return pd.DataFrame()
    return pd.read_parquet(output)


def kill_after_first_commit(proc, output: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (output / "_SUCCESS").exists():  # Spark writes it when a chunk's job commits
        assert proc.poll() is None, f"score exited ({proc.returncode}) before its first chunk:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no chunk committed in time"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: the driver, its JVM and the Python workers, no cleanup
    proc.wait(timeout=30)


def test_score_isolates_bad_rows_and_resumes_after_a_crash(project, champion, tmp_path):
    source, output = tmp_path / "messages.csv", tmp_path / "scored"
    write_input(source)
    args = [f"input={source}", f"output={output}", "spark.cores=2", "chunk_rows=400"]
    args.append("+spark.conf.spark.ui.enabled=false")  # no UI port to find on a shared machine

    kill_after_first_commit(project.start("score", *args), output)
    partial = committed(output)
    assert 0 < len(partial) < ROWS

    project.run("score", *args)
    scored = committed(output)
    assert len(scored) == ROWS and scored["row_id"].is_unique
    assert sorted(scored["id"].astype(int)) == list(range(ROWS))  # every row once: none lost, none twice
    assert (scored["label"] == "gold").all()  # input columns kept, predictions beside them
    bad = scored[scored["id"].astype(int).isin(list(BAD))]
    good = scored[~scored.index.isin(bad.index)]
    assert bad["error"].notna().all() and bad["predicted_label"].isna().all()
    assert "empty text" in " ".join(bad["error"]) and "expected a string" in " ".join(bad["error"])
    assert good["error"].isna().all() and scored["guard_hits"].isna().all()  # a model without guards
    assert set(good["predicted_label"]) <= set(TRAVEL_RULES.values())
    assert (scored["scored_with"] == f"models:/{champion}/1").all()

    client = MlflowClient(project.server.url)
    experiment = client.get_experiment_by_name("integration")
    runs = client.search_runs(
        [experiment.experiment_id], "tags.entry_point = 'score'", order_by=["attributes.start_time DESC"]
    )
    rerun = runs[0]
    assert rerun.info.status == "FINISHED"
    assert rerun.data.tags["model_version"] == "1" and rerun.data.tags["scored_with"] == f"models:/{champion}/1"
    metrics = rerun.data.metrics
    assert metrics["rows_input"] == ROWS
    assert metrics["rows_already_written"] == len(partial)
    assert metrics["rows_scored"] == ROWS - len(partial)
    assert metrics["rows_errors"] == len(BAD) - partial["error"].notna().sum()
    assert metrics["rows_per_s"] > 0


def test_guard_hits_are_counted_as_rows_per_guard():
    spark = spark_session("local[1]", conf={"spark.ui.enabled": False})
    try:
        hits = [None, "pii:redact EMAIL_ADDRESS; pii:redact PHONE_NUMBER", "injection:flag override; pii:redact IBAN"]
        frame = spark.createDataFrame(pd.DataFrame({"guard_hits": hits}), "guard_hits string")
        assert guard_counts(frame) == {"pii": 2, "injection": 1}  # a row counts once per guard
    finally:
        spark.stop()
