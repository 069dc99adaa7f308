"""Datasets: read a CSV / JSONL / Parquet file, map its columns to the task's fields, split reproducibly.

    >>> splits = load_splits("data/travel_intents/intents.csv", inputs=["text"], outputs=["label"],
    ...                      label_fields=["label"], train_size=40, val_size=40, dev_size=60, test_size=80)
    >>> splits.examples("train")[0].text, splits.labels["label"][:2]             # doctest: +SKIP
    ('my bag never showed up at JFK', ['baggage_policy', 'book_flight'])

Four splits with roles that never cross: `train` (the optimiser's trainset), `val` (the optimiser's
valset), `dev` (scored by train/optimize and the promotion gate's paired evidence: never seen while
choosing a program) and `test` (held out; reported, never used to choose). When the task has a label
field, rows are shuffled with `seed` and interleaved label by label, so any prefix sees every label
in proportion. Every row keeps its source row number (`row_id`), which pairs results across models.

A field can also be cut out of a column (`derive`), so a dataset that packs two fields into one is one
task YAML, not code. GSM8K's answer column holds a worked solution and then `#### 72`:

    derive:
      answer: {from: answer, match: '####(.*)$', remove: ','}                # the number after ####
      reasoning: {from: answer, match: '^(.*)####', remove: '<<[^>]*>>'}   # the solution, notes removed

`match` is a regex searched in the column's text (`.` spans lines): the value is its first group (the
whole match when it has none); `remove` is a regex whose matches are deleted; the value is stripped. A
derived field that is not one of the task's inputs or outputs (GSM8K's `reasoning`) is an extra: every
example carries it (ChainOfThought's labelled demos show it) but it is neither sent to the program nor
scored, as long as the task's metric scores its `outputs` only (`fields:` in the task's metric).

`test_per_label=N` cuts the test split first as exactly N rows of every label (a balanced held-out test,
e.g. 10 per intent on Banking77's 77; `test_size` then keeps a balanced prefix of it, null: all);
`train_per_label=N` caps the train split at N rows per label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dspy
import pandas as pd

READERS = {
    ".csv": pd.read_csv,
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".parquet": pd.read_parquet,
}
SPLITS = ("train", "val", "dev", "test")
ROW_ID = "row_id"


class DataError(ValueError):
    """Bad data or data config; the message names the file, column or label at fault."""


@dataclass
class Splits:
    """A task's data cut into its seeded splits (`train`, `val`, `dev`, `test`), made by `load_splits`.

    `examples(split)` gives `dspy.Example`s with the contract's inputs marked; `ids(split)` the source rows'
    ids, which pair two models' results on the same examples."""

    name: str
    source: str
    inputs: list[str]
    outputs: list[str]
    labels: dict[str, list[str]]  # label field -> its label set, as found in the data
    frames: dict[str, pd.DataFrame] = field(repr=False)
    extras: list[str] = field(default_factory=list)  # derived fields beside the contract's (demo-only, unscored)
    _datasets: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # mlflow_dataset's

    def frame(self, split: str) -> pd.DataFrame:
        if split not in self.frames:
            raise DataError(f"Unknown split {split!r}; choose one of {list(self.frames)}")
        return self.frames[split]

    def require(self, *splits: str) -> None:
        """Refuse unknown split names up front, before anything is spent on the known ones."""
        unknown = [s for s in splits if s not in self.frames]
        if unknown:
            raise DataError(f"Unknown split(s) {unknown}; choose from {list(self.frames)}")

    def examples(self, split: str) -> list[dspy.Example]:
        fields = [*self.inputs, *self.outputs, *self.extras]
        return [
            dspy.Example(**{k: row[k] for k in fields}).with_inputs(*self.inputs)
            for row in self.frame(split)[fields].to_dict("records")
        ]

    def ids(self, split: str) -> list[int]:
        return self.frame(split)[ROW_ID].astype(int).tolist()

    def mlflow_dataset(self, split: str):
        """The split as an MLflow dataset, made once: its digest hashes the frame, and logging it (as an input, or
        with a score against a model) reads its schema, inferred once per dataset object."""
        if split in self._datasets:
            return self._datasets[split]
        import warnings

        import mlflow.data

        frame = self.frame(split)
        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice and warns that a path is "ambiguous".
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            # `row_id` is an int column, never missing: MLflow's hint that integer columns cannot hold missing
            # values is not for the user. The schema is inferred here, under this filter, and kept.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            dataset = mlflow.data.from_pandas(
                frame,
                source=self.source,
                name=f"{self.name}-{split}",
                targets=self.outputs[0] if len(self.outputs) == 1 else None,
            )
            dataset.schema  # noqa: B018 (a cached property: inferred now, under the filter)
        self._datasets[split] = dataset
        return dataset

    def log_to_mlflow(self) -> dict[str, str]:
        """Log each split as a dataset input; returns {split: digest} (also tagged on the run)."""

        import mlflow

        digests = {}
        for split in self.frames:
            if self.frames[split].empty:  # an unused role (val_size=0): nothing to log, and MLflow cannot digest it
                continue
            dataset = self.mlflow_dataset(split)
            log_split_input(dataset, split)
            digests[split] = dataset.digest
        mlflow.log_dict({s: f[ROW_ID].tolist() for s, f in self.frames.items()}, "data/splits.json")
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


DERIVE_KEYS = {"from", "match", "remove"}


def derive_field(raw: pd.DataFrame, name: str, rule: Mapping, path) -> pd.Series:
    """Field `name` cut from a column by `rule` ({from, match, remove}: see the module docstring); a row the
    `match` pattern misses gets None (and is refused as empty by the caller)."""
    unknown = set(rule) - DERIVE_KEYS
    if unknown or "from" not in rule:
        raise DataError(f"data.derive.{name}: needs `from` (a column), may have `match`, `remove`; got {sorted(rule)}")
    column = rule["from"]
    if column not in raw.columns:
        raise DataError(f"{path}: data.derive.{name} reads column {column!r}; the file has {list(raw.columns)}")
    try:
        match = re.compile(rule["match"], re.S) if rule.get("match") else None
        remove = re.compile(rule["remove"], re.S) if rule.get("remove") else None
    except re.error as exc:
        raise DataError(f"data.derive.{name}: bad regex: {exc}") from exc

    def cut(value) -> str | None:
        text = "" if pd.isna(value) else str(value)
        if match is not None:
            found = match.search(text)
            if found is None:
                return None
            text = found.group(1 if match.groups else 0) or ""
        return (remove.sub("", text) if remove is not None else text).strip()

    return raw[column].map(cut)


def _check_sizes(sizes: dict[str, int | None]) -> None:
    for split, size in sizes.items():
        if (size is None and split not in ("train", "test")) or (
            size is not None and (not isinstance(size, int) or size < 0)
        ):
            raise DataError(
                f"{split}_size must be a non-negative integer (train_size or test_size may be null), got {size!r}"
            )
    if sizes["train"] is None and sizes["test"] is None:
        raise DataError("train_size and test_size cannot both be null: only one split can take the rest")


def load_splits(
    path: str | Path,
    inputs: list[str],
    outputs: list[str],
    label_fields: list[str] | None = None,
    columns: dict[str, str] | None = None,
    derive: Mapping[str, Mapping] | None = None,
    labels: list[str] | None = None,
    normalize_labels: bool = True,
    train_size: int = 40,
    val_size: int = 40,
    dev_size: int = 60,
    test_size: int | None = 80,
    seed: int = 0,
    name: str | None = None,
    test_per_label: int | None = None,
    train_per_label: int | None = None,
) -> Splits:
    """Read `path`, map `columns` (field -> file column; unmapped fields read their own name) and `derive`
    fields (field -> {from: column, match: regex, remove: regex}; see the module docstring), cut four splits.

    `labels` keeps only those values of the first label field (e.g. a 10-intent Banking77 subset);
    `test_size=None` takes every remaining row; `train_size=None` does instead, the others cut first.
    `normalize_labels` lower-cases label fields (Banking77 spells one label two ways). Tasks without a label
    field are shuffled, not stratified. `test_per_label` holds out exactly that many rows of every label as the
    test split before the other splits are cut (`test_size`, when set, keeps a prefix); `train_per_label` caps train.
    """
    fields = [*inputs, *outputs]
    label_fields = list(label_fields or [])
    derive = dict(derive or {})
    both = sorted(set(derive) & set(columns or {}))
    if both:
        raise DataError(f"field(s) {both} are both mapped (data.columns) and derived (data.derive): keep one")
    mapping = {f: (columns or {}).get(f, f) for f in fields if f not in derive}
    unknown = sorted(set(columns or {}) - set(fields))
    if unknown:
        raise DataError(f"data.columns maps {unknown}, which are not task fields; the task's fields are {fields}")
    extras = [f for f in derive if f not in fields]  # carried by the examples, neither input nor output
    raw = read_table(path)
    missing = [col for col in mapping.values() if col not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(raw.columns)}")

    df = raw[list(mapping.values())].set_axis(list(mapping), axis=1)
    for derived, rule in derive.items():
        df[derived] = derive_field(raw, derived, rule, path)
        mapping[derived] = f"derive.{derived} (from {rule['from']!r})"  # what an error message names
    df = df[[*fields, *extras]]
    df.insert(0, ROW_ID, range(len(df)))  # source row number (0-based, header excluded)
    for col in [*fields, *extras]:
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            rows = df.loc[empty, ROW_ID].tolist()[:10]
            raise DataError(f"{path}: empty values in column {mapping[col]!r} at data rows {rows} (0-based)")
    for col in label_fields:
        df[col] = df[col].astype(str).str.strip()
        if normalize_labels:
            df[col] = df[col].str.lower()

    stratify = label_fields[0] if label_fields else None
    if labels is not None:
        if stratify is None:
            raise DataError(f"{path}: `labels` filters a label field, and this task has none (fields: {fields})")
        wanted = [str(v).strip().lower() if normalize_labels else str(v) for v in labels]
        present = set(df[stratify])
        absent = [v for v in wanted if v not in present]
        if absent:
            raise DataError(f"{path}: unknown label(s) {absent}; the file's {stratify!r} values are {sorted(present)}")
        df = df[df[stratify].isin(wanted)]
    if df.empty:
        raise DataError(f"{path}: no rows left after filtering")

    # Shuffle with the seed, then interleave by label: a stratified order any prefix of which is balanced.
    df = df.sample(frac=1.0, random_state=seed)
    if stratify:
        df = df.assign(_rank=df.groupby(stratify).cumcount()).sort_values("_rank", kind="stable").drop(columns="_rank")

    held_out = None
    if test_per_label is not None:
        df, held_out = _hold_out_per_label(df, stratify, test_per_label, test_size, path)
        test_size = 0
    sizes = {"train": train_size, "val": val_size, "dev": dev_size, "test": test_size}
    _check_sizes(sizes)
    fixed = sum(s for s in sizes.values() if s is not None)
    if fixed > len(df):
        raise DataError(f"{path}: asked for {fixed} rows ({sizes}) but only {len(df)} are available")
    # train_size=None: train takes the rest, so the held-out splits are cut FIRST, from the balanced prefix
    # (the tail of a stratified order holds only the biggest labels: a test set cut there would miss some).
    order = SPLITS if sizes["train"] is not None else (*SPLITS[1:], SPLITS[0])
    cut, start = {}, 0
    for split in order:
        stop = len(df) if sizes[split] is None else start + sizes[split]
        cut[split] = df.iloc[start:stop].reset_index(drop=True)
        start = stop
    if held_out is not None:
        cut["test"] = held_out
    if train_per_label is not None:
        if stratify is None or train_per_label < 1:
            raise DataError(f"train_per_label={train_per_label!r} needs a label field and a positive count")
        train = cut["train"]
        cut["train"] = train[train.groupby(stratify).cumcount() < train_per_label].reset_index(drop=True)
    frames = {split: cut[split] for split in SPLITS}
    return Splits(
        name=name or Path(path).stem,
        source=str(Path(path).resolve()),
        inputs=list(inputs),
        outputs=list(outputs),
        labels={f: sorted(df[f].unique()) for f in label_fields},
        frames=frames,
        extras=extras,
    )


def _hold_out_per_label(df: pd.DataFrame, stratify: str | None, per_label: int, test_size, path):
    """(rest, test): the first `per_label` rows of each label in the (shuffled) order; with `test_size`, the
    first that many of those (a balanced prefix: a smaller look at the same held-out rows)."""
    if stratify is None:
        raise DataError(f"{path}: test_per_label needs a label field to stratify on, and this task has none")
    if not isinstance(per_label, int) or per_label < 1:
        raise DataError(f"test_per_label must be a positive integer, got {per_label!r}")
    counts = df[stratify].value_counts()
    short = sorted(counts[counts <= per_label].index)
    if short:
        raise DataError(f"{path}: test_per_label={per_label} leaves no rows for the other splits of {short}")
    rank = df.groupby(stratify).cumcount()
    taken = rank < per_label
    # In the interleaved order: any prefix of the held-out rows is balanced, and test_size keeps one.
    test = df[taken].assign(_rank=rank[taken]).sort_values("_rank", kind="stable").drop(columns="_rank")
    return df[~taken], test.head(test_size).reset_index(drop=True)


# A store's unique-key error on the datasets table: PostgreSQL names the key, sqlite the columns.
_DATASET_KEY_TAKEN = ("dataset_pk", "UNIQUE constraint failed: datasets.")


def log_split_input(dataset, split: str, attempts: int = 3) -> None:
    """`mlflow.log_input(dataset, context=split)`, retried when another process logged the same dataset a moment
    earlier.

    The tracking store looks a dataset up and inserts it if absent, in two steps: two runs logging the
    same split at once (a sweep beside a single run, on one server) can both miss it, and the second insert
    fails on the datasets table's key. The retry finds the dataset the other run inserted and links it."""
    import time

    import mlflow

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=split)
            return
        except mlflow.exceptions.MlflowException as exc:
            if attempt == attempts - 1 or not any(key in str(exc) for key in _DATASET_KEY_TAKEN):
                raise
            time.sleep(0.2 * (attempt + 1))
