"""pipelines.data.splits.load_splits: formats, column mapping, reproducible stratified splits, clear errors."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from hydra.utils import instantiate
from mlflow import MlflowClient

from pipelines.data.splits import DataError, Splits, load_splits

LABELS = [f"intent_{i}" for i in range(8)]


def make_frame(n_per_label: int = 5, labels=LABELS) -> pd.DataFrame:
    rows = [{"text": f"message {i} about {label}", "label": label} for label in labels for i in range(n_per_label)]
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path) -> str:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("whatever")
    return str(path)


@pytest.fixture
def csv_path(tmp_path):
    return write(make_frame(), tmp_path / "intents.csv")


def rows(splits: Splits, split: str) -> list[int]:
    return splits.frames[split]["_row"].tolist()


# -- formats and columns --------------------------------------------------------------------------


def test_csv_jsonl_and_parquet_load_identically(tmp_path):
    frame = make_frame()
    results = {}
    for suffix in (".csv", ".jsonl", ".parquet"):
        path = write(frame, tmp_path / f"data{suffix}")
        splits = load_splits(path, train_size=8, dev_size=8, test_size=8, seed=3, name="same")
        results[suffix] = splits
    base = results[".csv"]
    assert base.labels == LABELS
    for suffix, splits in results.items():
        assert splits.labels == base.labels, suffix
        for split in ("train", "dev", "test"):
            pd.testing.assert_frame_equal(splits.frames[split], base.frames[split], obj=f"{suffix} {split}")
    assert [e.toDict() for e in results[".parquet"].train] == [e.toDict() for e in base.train]


def test_column_mapping_renames_file_columns_to_program_fields(tmp_path):
    frame = make_frame().rename(columns={"text": "utterance", "label": "intent"})
    frame["extra"] = "ignored"
    path = write(frame, tmp_path / "mapped.csv")
    splits = load_splits(path, columns={"text": "utterance", "label": "intent"}, train_size=8, dev_size=8, test_size=8)
    assert list(splits.frames["train"].columns) == ["_row", "text", "label"]
    example = splits.train[0]
    assert set(example.keys()) == {"text", "label"}
    assert set(example.inputs().keys()) == {"text"}
    assert example.label in LABELS
    # The text really comes from the mapped column.
    assert example.text == frame.loc[splits.frames["train"]["_row"][0], "utterance"]


def test_name_and_source_default_from_the_path(csv_path):
    splits = load_splits(csv_path, train_size=8, dev_size=8, test_size=8)
    assert splits.name == "intents"
    assert splits.source.endswith("intents.csv") and splits.source.startswith("/")
    assert splits.target == "label"


# -- splits ---------------------------------------------------------------------------------------


def test_same_seed_same_rows_different_seed_different_rows(csv_path):
    a = load_splits(csv_path, train_size=8, dev_size=8, test_size=8, seed=1)
    b = load_splits(csv_path, train_size=8, dev_size=8, test_size=8, seed=1)
    c = load_splits(csv_path, train_size=8, dev_size=8, test_size=8, seed=2)
    for split in ("train", "dev", "test"):
        assert rows(a, split) == rows(b, split)
    assert [rows(a, s) for s in ("train", "dev", "test")] != [rows(c, s) for s in ("train", "dev", "test")]


def test_splits_are_disjoint_and_sized(csv_path):
    splits = load_splits(csv_path, train_size=8, dev_size=16, test_size=10, seed=0)
    train, dev, test = rows(splits, "train"), rows(splits, "dev"), rows(splits, "test")
    assert (len(train), len(dev), len(test)) == (8, 16, 10)
    assert len(set(train) | set(dev) | set(test)) == 8 + 16 + 10
    assert all(0 <= r < 40 for r in train + dev + test)
    assert len(splits.train) == 8 and len(splits.dev) == 16 and len(splits.test) == 10


def test_test_size_none_takes_the_rest(csv_path):
    splits = load_splits(csv_path, train_size=8, dev_size=8, test_size=None)
    assert len(splits.frames["test"]) == 40 - 16
    assert sorted(rows(splits, "train") + rows(splits, "dev") + rows(splits, "test")) == list(range(40))


def test_stratified_prefix_covers_every_label(csv_path):
    for seed in (0, 1, 7):
        splits = load_splits(csv_path, train_size=8, dev_size=16, test_size=16, seed=seed)
        assert sorted(splits.frames["train"]["label"]) == LABELS, seed
        assert splits.frames["dev"]["label"].value_counts().to_dict() == dict.fromkeys(LABELS, 2)
        assert splits.frames["test"]["label"].value_counts().to_dict() == dict.fromkeys(LABELS, 2)


def test_labels_are_normalised_to_lower_case(tmp_path):
    frame = pd.DataFrame(
        {"text": ["a", "b", "c", "d"], "label": ["Card_Arrival", " card_arrival ", "TOP_UP", "top_up"]}
    )
    path = write(frame, tmp_path / "mixed.csv")
    splits = load_splits(path, train_size=2, dev_size=1, test_size=None)
    assert splits.labels == ["card_arrival", "top_up"]
    all_labels = pd.concat(splits.frames.values())["label"]
    assert set(all_labels) == {"card_arrival", "top_up"}

    raw = load_splits(path, train_size=2, dev_size=1, test_size=None, normalize_labels=False)
    assert "Card_Arrival" in raw.labels and "TOP_UP" in raw.labels


def test_label_subset_filter(csv_path):
    wanted = ["intent_5", "INTENT_2"]  # normalised like the data
    splits = load_splits(csv_path, labels=wanted, train_size=2, dev_size=2, test_size=None)
    assert splits.labels == ["intent_2", "intent_5"]
    all_labels = pd.concat(splits.frames.values())["label"]
    assert set(all_labels) == {"intent_2", "intent_5"}
    assert len(all_labels) == 10
    assert sorted(splits.frames["train"]["label"]) == ["intent_2", "intent_5"]


# -- errors ---------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "missing.csv"
    with pytest.raises(DataError, match="not found") as info:
        load_splits(missing)
    assert str(missing) in str(info.value)


def test_unsupported_extension_names_the_file_and_formats(tmp_path):
    path = write(make_frame(), tmp_path / "data.xlsx")
    with pytest.raises(DataError) as info:
        load_splits(path)
    message = str(info.value)
    assert "data.xlsx" in message and "'.xlsx'" in message
    for ext in (".csv", ".jsonl", ".parquet"):
        assert ext in message


def test_unreadable_file_is_a_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="broken.parquet"):
        load_splits(path)


def test_missing_column_lists_available_columns(csv_path):
    with pytest.raises(DataError) as info:
        load_splits(csv_path, columns={"text": "utterance", "label": "label"})
    message = str(info.value)
    assert "intents.csv" in message
    assert "'utterance'" in message
    assert "'text'" in message and "'label'" in message  # what the file does have


def test_target_must_be_a_mapped_field(csv_path):
    with pytest.raises(DataError, match="'intent'"):
        load_splits(csv_path, target="intent", columns={"text": "text", "label": "label"})


@pytest.mark.parametrize("column", ["text", "label"])
def test_empty_values_name_the_column_and_rows(tmp_path, column):
    frame = make_frame()
    frame.loc[3, column] = ""
    frame.loc[17, column] = "   "
    frame.loc[22, column] = None
    path = write(frame, tmp_path / "holes.csv")
    with pytest.raises(DataError) as info:
        load_splits(path, train_size=8, dev_size=8, test_size=8)
    message = str(info.value)
    assert "holes.csv" in message
    assert f"'{column}'" in message
    assert "[3, 17, 22]" in message


def test_unknown_label_in_subset_is_named(csv_path):
    with pytest.raises(DataError) as info:
        load_splits(csv_path, labels=["intent_1", "no_such_intent"])
    message = str(info.value)
    assert "no_such_intent" in message
    assert "intent_7" in message  # lists the labels the file has


def test_asking_for_too_many_rows(csv_path):
    with pytest.raises(DataError) as info:
        load_splits(csv_path, train_size=20, dev_size=20, test_size=1)
    message = str(info.value)
    assert "41" in message and "40" in message
    assert "intents.csv" in message


def test_too_many_rows_after_label_filter(csv_path):
    with pytest.raises(DataError, match="only 10"):
        load_splits(csv_path, labels=["intent_0", "intent_1"], train_size=8, dev_size=8, test_size=None)


def test_unknown_split_name(csv_path):
    splits = load_splits(csv_path, train_size=8, dev_size=8, test_size=8)
    with pytest.raises(DataError, match="'validation'"):
        splits.examples("validation")


# -- the real default task ------------------------------------------------------------------------


def test_default_task_data_loads_from_the_composed_config(make_cfg):
    cfg = make_cfg("train", ["task.data.train_size=40", "task.data.dev_size=60", "task.data.test_size=80"])
    splits = instantiate(cfg.task.data)
    assert isinstance(splits, Splits)
    assert splits.name == "travel_intents"
    assert splits.source.endswith("data/travel_intents/intents.csv")
    assert len(splits.labels) == 8
    assert len(splits.frames["train"]) == 40
    assert len(splits.frames["dev"]) == 60 and len(splits.frames["test"]) == 80
    # 40 train rows over 8 labels: 5 of each, by stratification.
    assert set(splits.frames["train"]["label"].value_counts()) == {5}
    assert set(splits.labels) == set(splits.frames["dev"]["label"])


# -- MLflow logging -------------------------------------------------------------------------------


def test_log_to_mlflow_logs_three_dataset_inputs(tmp_path, csv_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        experiment_id = mlflow.create_experiment("data-test", artifact_location=str(tmp_path / "artifacts"))
        splits = load_splits(csv_path, train_size=8, dev_size=8, test_size=None, name="toy")
        with mlflow.start_run(experiment_id=experiment_id) as active:
            digests = splits.log_to_mlflow()
        client = MlflowClient()
        run = client.get_run(active.info.run_id)

        assert set(digests) == {"train", "dev", "test"}
        assert all(digests.values())
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 3
        by_name = {i.dataset.name: i for i in inputs}
        assert set(by_name) == {"toy-train", "toy-dev", "toy-test"}
        for split in ("train", "dev", "test"):
            dataset_input = by_name[f"toy-{split}"]
            contexts = {t.value for t in dataset_input.tags if t.key == "mlflow.data.context"}
            assert contexts == {split}
            assert dataset_input.dataset.digest == digests[split]
        assert run.data.tags["data.digest.dev"] == digests["dev"]
        assert run.data.tags["data.source"] == splits.source

        local = client.download_artifacts(run.info.run_id, "data/splits.json", str(tmp_path / "dl"))
        with open(local) as fh:
            logged = json.load(fh)
        assert logged == {s: rows(splits, s) for s in ("train", "dev", "test")}
        assert len(logged["test"]) == 24
    finally:
        mlflow.set_tracking_uri(None)
