"""pipelines.data.splits.load_splits: formats, field mapping, four reproducible splits, clear errors, MLflow."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from hydra.utils import instantiate
from mlflow import MlflowClient

from pipelines.data.splits import SPLITS, DataError, Splits, load_splits

LABELS = [f"intent_{i}" for i in range(8)]
SIZES = {"train_size": 8, "val_size": 8, "dev_size": 8, "test_size": 8}
SMALL = {"train_size": 4, "val_size": 4, "dev_size": 4, "test_size": 4}


def make_frame(n_per_label: int = 5, labels=LABELS) -> pd.DataFrame:
    rows = [{"text": f"message {i} about {label}", "label": label} for label in labels for i in range(n_per_label)]
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path) -> str:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("whatever")
    return str(path)


def load(path, **kwargs) -> Splits:
    """The default single-label task: text -> label, stratified by label."""
    args = {"inputs": ["text"], "outputs": ["label"], "label_fields": ["label"], **SIZES} | kwargs
    return load_splits(path, **args)


@pytest.fixture
def csv_path(tmp_path):
    return write(make_frame(), tmp_path / "intents.csv")


# -- formats and fields ---------------------------------------------------------------------------


def test_csv_jsonl_and_parquet_load_identically(tmp_path):
    frame = make_frame()
    results = {
        s: load(write(frame, tmp_path / f"data{s}"), seed=3, name="same") for s in (".csv", ".jsonl", ".parquet")
    }
    base = results[".csv"]
    assert base.labels == {"label": LABELS}
    for suffix, splits in results.items():
        assert splits.labels == base.labels, suffix
        for split in SPLITS:
            pd.testing.assert_frame_equal(splits.frame(split), base.frame(split), obj=f"{suffix} {split}")
    assert [e.toDict() for e in results[".parquet"].examples("train")] == [e.toDict() for e in base.examples("train")]


def test_column_mapping_renames_file_columns_to_task_fields(tmp_path):
    frame = make_frame().rename(columns={"text": "utterance", "label": "intent"})
    frame["extra"] = "ignored"
    path = write(frame, tmp_path / "mapped.csv")
    splits = load(path, columns={"text": "utterance", "label": "intent"})
    assert list(splits.frame("train").columns) == ["row_id", "text", "label"]
    example = splits.examples("train")[0]
    assert set(example.keys()) == {"text", "label"}
    assert set(example.inputs().keys()) == {"text"} and set(example.labels().keys()) == {"label"}
    # The values really come from the mapped columns of that source row.
    source = frame.loc[splits.ids("train")[0]]
    assert (example.text, example.label) == (source["utterance"], source["intent"])


def test_unmapped_fields_read_their_own_column(tmp_path):
    frame = make_frame().rename(columns={"text": "utterance"})
    path = write(frame, tmp_path / "partial.csv")
    splits = load(path, columns={"text": "utterance"})  # label is not mapped: read from "label"
    train = splits.frame("train")
    assert train["label"].tolist() == frame.loc[train["row_id"], "label"].tolist()
    assert train["text"].tolist() == frame.loc[train["row_id"], "utterance"].tolist()


def test_row_id_is_the_source_row_number(csv_path):
    frame = pd.read_csv(csv_path)
    splits = load(csv_path, seed=5)
    for split in SPLITS:
        got = splits.frame(split)
        assert splits.ids(split) == got["row_id"].tolist()
        assert all(isinstance(i, int) for i in splits.ids(split))
        expected = frame.loc[got["row_id"], ["text", "label"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(got[["text", "label"]], expected, obj=split)


def test_several_outputs(tmp_path):
    frame = make_frame(n_per_label=4, labels=LABELS[:4])
    frame["city"] = ["Rome", "Paris", "Oslo", "Lima"] * 4
    path = write(frame, tmp_path / "two.csv")
    splits = load_splits(
        path, inputs=["text"], outputs=["label", "city"], label_fields=["label"], **(SMALL | {"test_size": None})
    )
    assert splits.outputs == ["label", "city"] and list(splits.labels) == ["label"]
    example = splits.examples("dev")[0]
    assert set(example.inputs().keys()) == {"text"}
    assert set(example.labels().keys()) == {"label", "city"}
    everything = pd.concat([splits.frame(s) for s in SPLITS])
    assert set(everything["city"]) == {"Rome", "Paris", "Oslo", "Lima"}  # not a label field: not lower-cased
    assert sorted(everything["row_id"]) == list(range(16))


def test_an_input_of_type_label_is_normalised_and_gets_a_label_set(tmp_path):
    frame = make_frame(n_per_label=4, labels=LABELS[:4])
    frame["tier"] = [" Free", "PRO ", "free", "pro"] * 4
    path = write(frame, tmp_path / "tiers.csv")
    splits = load_splits(path, inputs=["text", "tier"], outputs=["label"], label_fields=["label", "tier"], **SMALL)
    assert splits.labels == {"label": LABELS[:4], "tier": ["free", "pro"]}
    example = splits.examples("train")[0]
    assert set(example.inputs().keys()) == {"text", "tier"} and example.tier in {"free", "pro"}


def test_name_and_source_default_from_the_path_and_splits_are_named(csv_path):
    splits = load(csv_path)
    assert splits.name == "intents"
    assert splits.source.endswith("intents.csv") and splits.source.startswith("/")
    assert (splits.inputs, splits.outputs) == (["text"], ["label"])
    with pytest.raises(DataError, match=r"'validation'; choose one of \['train', 'val', 'dev', 'test'\]"):
        splits.examples("validation")


# -- splits ---------------------------------------------------------------------------------------


def test_same_seed_same_rows_different_seed_different_rows(csv_path):
    a, b, c = load(csv_path, seed=1), load(csv_path, seed=1), load(csv_path, seed=2)
    assert [a.ids(s) for s in SPLITS] == [b.ids(s) for s in SPLITS]
    assert [a.ids(s) for s in SPLITS] != [c.ids(s) for s in SPLITS]


def test_four_split_roles_are_disjoint_and_sized(csv_path):
    splits = load(csv_path, train_size=8, val_size=6, dev_size=16, test_size=10, seed=0)
    ids = {s: splits.ids(s) for s in SPLITS}
    assert list(splits.frames) == ["train", "val", "dev", "test"]
    assert {s: len(v) for s, v in ids.items()} == {"train": 8, "val": 6, "dev": 16, "test": 10}
    assert len(set().union(*ids.values())) == 8 + 6 + 16 + 10  # no row in two roles
    assert all(0 <= r < 40 for v in ids.values() for r in v)
    assert {s: len(splits.examples(s)) for s in SPLITS} == {"train": 8, "val": 6, "dev": 16, "test": 10}


def test_test_size_none_takes_the_rest(csv_path):
    splits = load(csv_path, test_size=None)
    assert len(splits.frame("test")) == 40 - 24
    assert sorted(sum((splits.ids(s) for s in SPLITS), [])) == list(range(40))


def test_train_size_none_takes_the_rest_after_the_held_out_splits(csv_path):
    splits = load(csv_path, train_size=None, val_size=8, dev_size=8, test_size=8)
    assert list(splits.frames) == ["train", "val", "dev", "test"]
    assert {s: len(splits.ids(s)) for s in SPLITS} == {"train": 16, "val": 8, "dev": 8, "test": 8}
    assert sorted(sum((splits.ids(s) for s in SPLITS), [])) == list(range(40))
    # The held-out splits come from the balanced stratified prefix: every label, in proportion.
    assert sorted(splits.frame("test")["label"]) == LABELS
    fixed = load(csv_path, train_size=16, val_size=8, dev_size=8, test_size=8)
    assert splits.ids("val") == fixed.ids("train")[:8]  # same order, cut from the front


def test_train_and_test_cannot_both_take_the_rest(csv_path):
    with pytest.raises(DataError, match="cannot both be null"):
        load(csv_path, train_size=None, test_size=None)


def test_stratified_prefix_covers_every_label(csv_path):
    for seed in (0, 1, 7):
        splits = load(csv_path, train_size=8, val_size=8, dev_size=16, test_size=8, seed=seed)
        assert sorted(splits.frame("train")["label"]) == LABELS, seed
        assert sorted(splits.frame("val")["label"]) == LABELS, seed
        assert splits.frame("dev")["label"].value_counts().to_dict() == dict.fromkeys(LABELS, 2)


def test_a_task_without_a_label_field_is_shuffled_not_stratified(csv_path):
    plain = load_splits(csv_path, inputs=["text"], outputs=["label"], label_fields=None, **SIZES, seed=4)
    order = sum((plain.ids(s) for s in SPLITS), [])
    # Exactly the seeded shuffle of the source rows, cut in order: no interleaving by label.
    assert order == pd.RangeIndex(40).to_series().sample(frac=1.0, random_state=4).tolist()[:32]
    assert plain.labels == {}
    stratified = load(csv_path, seed=4)
    assert sum((stratified.ids(s) for s in SPLITS), []) != order


def test_labels_are_normalised_to_lower_case(tmp_path):
    frame = pd.DataFrame({"text": list("abcd"), "label": ["Card_Arrival", " card_arrival ", "TOP_UP", "top_up"]})
    path = write(frame, tmp_path / "mixed.csv")
    small = {"train_size": 1, "val_size": 1, "dev_size": 1, "test_size": None}
    splits = load(path, **small)
    assert splits.labels == {"label": ["card_arrival", "top_up"]}
    assert set(pd.concat(splits.frames.values())["label"]) == {"card_arrival", "top_up"}

    raw = load(path, normalize_labels=False, **small)
    assert raw.labels == {"label": ["Card_Arrival", "TOP_UP", "card_arrival", "top_up"]}  # stripped, not lowered


def test_label_subset_filter(csv_path):
    wanted = ["intent_5", "INTENT_2"]  # normalised like the data
    splits = load(csv_path, labels=wanted, train_size=2, val_size=2, dev_size=2, test_size=None)
    assert splits.labels == {"label": ["intent_2", "intent_5"]}
    everything = pd.concat(splits.frames.values())
    assert set(everything["label"]) == {"intent_2", "intent_5"} and len(everything) == 10
    assert sorted(splits.frame("train")["label"]) == ["intent_2", "intent_5"]
    assert set(everything["row_id"]) == set(range(10, 15)) | set(range(25, 30))  # their source rows


# -- errors ---------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "missing.csv"
    with pytest.raises(DataError, match="not found") as info:
        load(missing)
    assert str(missing) in str(info.value)


def test_unsupported_extension_names_the_file_and_formats(tmp_path):
    with pytest.raises(DataError) as info:
        load(write(make_frame(), tmp_path / "data.xlsx"))
    message = str(info.value)
    assert "data.xlsx" in message and "'.xlsx'" in message
    assert all(ext in message for ext in (".csv", ".jsonl", ".parquet"))


def test_unreadable_file_is_a_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="broken.parquet"):
        load(path)


def test_missing_column_lists_available_columns(csv_path):
    with pytest.raises(DataError) as info:
        load(csv_path, columns={"text": "utterance"})
    message = str(info.value)
    assert "intents.csv" in message and "'utterance'" in message
    assert "'text'" in message and "'label'" in message  # what the file does have


def test_mapping_an_unknown_field_is_an_error(csv_path):
    with pytest.raises(DataError) as info:
        load(csv_path, columns={"text": "text", "intent": "label"})
    assert "'intent'" in str(info.value) and "not task fields" in str(info.value)


@pytest.mark.parametrize("column", ["text", "label"])
def test_empty_values_name_the_column_and_rows(tmp_path, column):
    frame = make_frame()
    frame.loc[3, column] = ""
    frame.loc[17, column] = "   "
    frame.loc[22, column] = None
    with pytest.raises(DataError) as info:
        load(write(frame, tmp_path / "holes.csv"))
    message = str(info.value)
    assert "holes.csv" in message and f"'{column}'" in message and "[3, 17, 22]" in message


def test_unknown_label_in_subset_is_named(csv_path):
    with pytest.raises(DataError) as info:
        load(csv_path, labels=["intent_1", "no_such_intent"])
    message = str(info.value)
    assert "no_such_intent" in message
    assert "intent_7" in message  # lists the labels the file has
    with pytest.raises(DataError, match="has none"):  # a subset needs a label field to filter
        load(csv_path, label_fields=None, labels=["intent_1"])


def test_asking_for_too_many_rows(csv_path):
    with pytest.raises(DataError) as info:
        load(csv_path, train_size=20, val_size=10, dev_size=10, test_size=1)
    message = str(info.value)
    assert "41" in message and "only 40" in message and "intents.csv" in message


def test_too_many_rows_after_label_filter(csv_path):
    with pytest.raises(DataError, match="only 10"):
        load(csv_path, labels=["intent_0", "intent_1"], train_size=4, val_size=4, dev_size=4, test_size=None)


@pytest.mark.parametrize(("split", "size"), [("train", -1), ("val", None), ("dev", 2.5), ("test", "8")])
def test_bad_sizes_name_the_split(csv_path, split, size):
    with pytest.raises(DataError, match=f"{split}_size must be a non-negative integer"):
        load(csv_path, **{f"{split}_size": size})


# -- the real default task ------------------------------------------------------------------------


def test_default_task_data_loads_from_the_composed_config(make_cfg):
    cfg = make_cfg("train", ["task.data.train_size=40", "task.data.dev_size=60", "task.data.test_size=80"])
    splits = instantiate(cfg.task.data, inputs=["text"], outputs=["label"], label_fields=["label"])
    assert isinstance(splits, Splits) and splits.name == "travel_intents"
    assert splits.source.endswith("data/travel_intents/intents.csv")
    assert len(splits.labels["label"]) == 8
    assert [len(splits.frame(s)) for s in SPLITS] == [40, 16, 60, 80]
    assert set(splits.frame("train")["label"].value_counts()) == {5}  # 40 rows over 8 labels, stratified
    assert set(splits.labels["label"]) == set(splits.frame("dev")["label"])


# -- MLflow logging -------------------------------------------------------------------------------


def test_log_to_mlflow_logs_four_dataset_inputs(tmp_path, csv_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        experiment_id = mlflow.create_experiment("data-test", artifact_location=str(tmp_path / "artifacts"))
        splits = load(csv_path, test_size=None, name="toy")
        with mlflow.start_run(experiment_id=experiment_id) as active:
            digests = splits.log_to_mlflow()
        client = MlflowClient()
        run = client.get_run(active.info.run_id)

        assert set(digests) == set(SPLITS) and all(digests.values())
        assert len(set(digests.values())) == 4  # different rows, different digests
        by_name = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        assert set(by_name) == {f"toy-{s}" for s in SPLITS}
        for split in SPLITS:
            dataset_input = by_name[f"toy-{split}"]
            assert {t.value for t in dataset_input.tags if t.key == "mlflow.data.context"} == {split}
            assert dataset_input.dataset.digest == digests[split]
            assert run.data.tags[f"data.digest.{split}"] == digests[split]
        assert run.data.tags["data.source"] == splits.source

        local = client.download_artifacts(run.info.run_id, "data/splits.json", str(tmp_path / "dl"))
        with open(local) as fh:
            logged = json.load(fh)
        assert logged == {s: splits.ids(s) for s in SPLITS}
        assert len(logged["test"]) == 40 - 24
        # Same data, same seed: the same digests (what the gate matches results by).
        assert load(csv_path, test_size=None, name="toy").mlflow_dataset("dev").digest == digests["dev"]
    finally:
        mlflow.set_tracking_uri(None)


def test_require_refuses_an_unknown_split_up_front(tmp_path):
    path = write(make_frame(), tmp_path / "d.csv")
    splits = load_splits(
        path,
        inputs=["text"],
        outputs=["label"],
        label_fields=["label"],
        train_size=4,
        val_size=4,
        dev_size=4,
        test_size=4,
    )
    splits.require("dev", "test")
    with pytest.raises(
        DataError, match=r"Unknown split\(s\) \['validation'\]; choose from \['train', 'val', 'dev', 'test'\]"
    ):
        splits.require("dev", "validation")


def test_a_dataset_another_run_logged_a_moment_earlier_is_linked_not_fatal(tmp_path, csv_path, monkeypatch):
    """Two runs logging the same split at once on one server (a sweep beside a single run) can both miss
    the dataset and both insert it: the loser gets the store's key error, retries, and links the dataset."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    real_log_input = mlflow.log_input
    calls = []

    def lost_the_race_once(dataset, context=None, **kwargs):
        calls.append(context)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException(
                '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
            )
        return real_log_input(dataset, context=context, **kwargs)

    try:
        experiment_id = mlflow.create_experiment("race", artifact_location=str(tmp_path / "artifacts"))
        splits = load(csv_path, test_size=None, name="toy")
        monkeypatch.setattr(mlflow, "log_input", lost_the_race_once)
        with mlflow.start_run(experiment_id=experiment_id) as active:
            splits.log_to_mlflow()
        run = MlflowClient().get_run(active.info.run_id)
        assert calls[:2] == ["train", "train"]
        assert {i.dataset.name for i in run.inputs.dataset_inputs} == {f"toy-{s}" for s in SPLITS}

        # Any other store error is the run's failure, not retried.
        def refused(dataset, context=None, **kwargs):
            raise mlflow.exceptions.MlflowException("permission denied")

        monkeypatch.setattr(mlflow, "log_input", refused)
        with mlflow.start_run(experiment_id=experiment_id), pytest.raises(mlflow.exceptions.MlflowException):
            splits.log_to_mlflow()
    finally:
        mlflow.set_tracking_uri(None)


def test_test_per_label_holds_out_exactly_n_of_every_label_before_the_other_splits(csv_path):
    splits = load(csv_path, train_size=None, val_size=4, dev_size=4, test_size=None, test_per_label=2)
    assert splits.frame("test")["label"].value_counts().to_dict() == dict.fromkeys(LABELS, 2)
    assert {s: len(splits.ids(s)) for s in SPLITS} == {"train": 16, "val": 4, "dev": 4, "test": 16}
    assert sorted(sum((splits.ids(s) for s in SPLITS), [])) == list(range(40))  # disjoint, nothing lost
    # The same seed holds out the same rows whatever the other splits' sizes: a test set that never moves.
    other = load(csv_path, train_size=8, val_size=2, dev_size=2, test_size=None, test_per_label=2)
    assert sorted(other.ids("test")) == sorted(splits.ids("test"))
    # test_size keeps a balanced prefix of the same held-out rows (a smaller look, never other rows).
    prefix = load(csv_path, train_size=None, val_size=4, dev_size=4, test_size=8, test_per_label=2)
    assert sorted(prefix.frame("test")["label"]) == LABELS and set(prefix.ids("test")) < set(splits.ids("test"))
    with pytest.raises(DataError, match="leaves no rows for the other splits"):
        load(csv_path, train_size=None, test_size=None, test_per_label=5)


def test_train_per_label_caps_each_label_in_train(csv_path):
    splits = load(csv_path, train_size=None, val_size=8, dev_size=8, test_size=8, train_per_label=1)
    assert splits.frame("train")["label"].value_counts().to_dict() == dict.fromkeys(LABELS, 1)
