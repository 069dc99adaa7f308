"""Datasets: load a CSV / JSONL / Parquet file, map its columns to program fields, split reproducibly.

    >>> splits = load_splits("data/travel_intents/intents.csv", train_size=40, dev_size=60, test_size=80)
    >>> splits.train[0].text, splits.train[0].label                  # doctest: +SKIP
    ('my bag never showed up at JFK', 'lost_luggage')

Splits are stratified: rows are shuffled with `seed`, then interleaved label by label, so any prefix
(a 40-row train set, a 10-row smoke slice) sees every label in proportion. Each split is logged as an
MLflow dataset input with its digest, and the source row numbers go into `splits.json`, so a run says
exactly which rows it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dspy
import pandas as pd

READERS = {
    ".csv": pd.read_csv,
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".parquet": pd.read_parquet,
}
SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """Bad data or data config; the message names the file, column or label at fault."""


@dataclass
class Splits:
    name: str
    source: str
    target: str
    labels: list[str] | None
    frames: dict[str, pd.DataFrame] = field(repr=False)

    def examples(self, split: str) -> list[dspy.Example]:
        if split not in self.frames:
            raise DataError(f"Unknown split {split!r}; choose one of {list(self.frames)}")
        inputs = [c for c in self.frames[split].columns if c != self.target and not c.startswith("_")]
        return [
            dspy.Example(**{k: row[k] for k in [*inputs, self.target]}).with_inputs(*inputs)
            for row in self.frames[split].to_dict("records")
        ]

    @property
    def train(self) -> list[dspy.Example]:
        return self.examples("train")

    @property
    def dev(self) -> list[dspy.Example]:
        return self.examples("dev")

    @property
    def test(self) -> list[dspy.Example]:
        return self.examples("test")

    def mlflow_dataset(self, split: str):
        import warnings

        import mlflow.data

        frame = self.frames[split].drop(columns=["_row"])
        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice and warns that a path is "ambiguous".
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            return mlflow.data.from_pandas(frame, source=self.source, name=f"{self.name}-{split}", targets=self.target)

    def log_to_mlflow(self) -> dict[str, str]:
        """Log each split as a dataset input; returns {split: digest} (also tagged on the run)."""
        import mlflow

        digests = {}
        for split in self.frames:
            dataset = self.mlflow_dataset(split)
            mlflow.log_input(dataset, context=split)
            digests[split] = dataset.digest
        mlflow.log_dict({s: f["_row"].tolist() for s, f in self.frames.items()}, "data/splits.json")
        mlflow.set_tags({f"data.digest.{s}": d for s, d in digests.items()} | {"data.source": self.source})
        return digests


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Dataset file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"Cannot read {path}: unsupported extension {path.suffix!r}; use one of {sorted(READERS)}")
    try:
        return reader(path)
    except Exception as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc


def load_splits(
    path: str | Path,
    columns: dict[str, str] | None = None,
    target: str = "label",
    labels: list[str] | None = None,
    normalize_labels: bool = True,
    train_size: int = 40,
    dev_size: int = 60,
    test_size: int | None = 80,
    seed: int = 0,
    name: str | None = None,
    classification: bool = True,
) -> Splits:
    """Read `path`, keep `columns` (program field -> file column), and cut train/dev/test.

    `labels` keeps only those labels (e.g. a 10-intent Banking77 subset); `test_size=None` takes
    every remaining row. `normalize_labels` lower-cases labels (Banking77 spells one label two ways).
    `classification=False` is for free-text targets (GSM8K answers): no label set, no stratification.
    """
    columns = dict(columns or {"text": "text", target: "label"})
    if target not in columns:
        raise DataError(f"target field {target!r} is not among the mapped fields {sorted(columns)}")
    raw = read_table(path)
    missing = [col for col in columns.values() if col not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(raw.columns)}")

    df = raw[list(columns.values())].rename(columns={v: k for k, v in columns.items()})
    df.insert(0, "_row", range(len(df)))  # source row number (0-based, header excluded)
    for col in columns:
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            rows = df.loc[empty, "_row"].tolist()[:10]
            raise DataError(
                f"{path}: empty values in column {columns[col]!r} at data rows {rows} (0-based, header excluded)"
            )
    if not classification:
        if labels is not None:
            raise DataError(f"{path}: `labels` filters a classification task; this task has free-text targets")
        normalize_labels = False
    if normalize_labels:
        df[target] = df[target].astype(str).str.strip().str.lower()

    if not classification:
        label_set = None
    elif labels is not None:
        wanted = [str(label).strip().lower() if normalize_labels else str(label) for label in labels]
        present = set(df[target])
        unknown = [label for label in wanted if label not in present]
        if unknown:
            raise DataError(f"{path}: unknown label(s) {unknown}; the file's labels are {sorted(present)}")
        df = df[df[target].isin(wanted)]
        label_set = sorted(set(wanted))
    else:
        label_set = sorted(df[target].unique())
    if df.empty:
        raise DataError(f"{path}: no rows left after filtering")

    # Shuffle with the seed, then interleave by label: a stratified order any prefix of which is balanced.
    df = df.sample(frac=1.0, random_state=seed)
    if classification:
        df = df.assign(_rank=df.groupby(target).cumcount()).sort_values("_rank", kind="stable").drop(columns="_rank")

    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    for split, size in sizes.items():
        if (size is None and split != "test") or (size is not None and (not isinstance(size, int) or size < 0)):
            raise DataError(f"{split}_size must be a non-negative integer (test_size may be null), got {size!r}")
    fixed = sum(s for s in sizes.values() if s is not None)
    if fixed > len(df):
        raise DataError(f"{path}: asked for {fixed} rows ({sizes}) but only {len(df)} are available")
    frames, start = {}, 0
    for split in SPLITS:
        stop = len(df) if sizes[split] is None else start + sizes[split]
        frames[split] = df.iloc[start:stop].reset_index(drop=True)
        start = stop
    return Splits(
        name=name or Path(path).stem,
        source=str(Path(path).resolve()),
        target=target,
        labels=label_set,
        frames=frames,
    )
