"""The pieces of batch scoring that need no Spark: bad-row isolation, input formats, reserved names."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from pipelines.batch.partitions import predict_isolating
from pipelines.batch.rows import check_names, input_format


class PickyModel:
    """Refuses a whole batch when any row is empty, as our model's validation does; counts its calls."""

    def __init__(self):
        self.calls = 0

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls += 1
        if (frame["text"].str.strip() == "").any():
            raise MlflowException("Row 0, column 'text': empty text")
        return pd.DataFrame({"label": [t.upper() for t in frame["text"]], "score": [len(t) for t in frame["text"]]})


def test_a_clean_batch_is_one_call():
    model = PickyModel()
    predicted, errors = predict_isolating(model, pd.DataFrame({"text": ["a", "bb"]}), ["label", "score"])
    assert model.calls == 1 and errors == [None, None]
    assert predicted.to_dict("list") == {"label": ["A", "BB"], "score": [1, 2]}


def test_a_bad_row_costs_only_itself():
    model = PickyModel()
    frame = pd.DataFrame({"text": ["a", " ", "ccc"]}, index=[7, 8, 9])  # Spark hands batches any index
    predicted, errors = predict_isolating(model, frame, ["label"])
    assert model.calls == 1 + 3  # the batch, then each row alone
    assert predicted["label"].isna().tolist() == [False, True, False]
    assert predicted["label"][[0, 2]].tolist() == ["A", "CCC"]
    assert errors[0] is None and errors[2] is None
    assert errors[1] == "MlflowException: Row 0, column 'text': empty text"


def test_formats_come_from_the_name_unless_declared(tmp_path):
    assert input_format("in.csv") == "csv"
    assert input_format("in.JSONL") == "json"
    assert input_format("in.parquet") == "parquet"
    assert input_format(str(tmp_path)) == "parquet"  # a directory, as Spark writes Parquet
    assert input_format("in.txt", "jsonl") == "json"
    with pytest.raises(ValueError, match="input_format"):
        input_format("in.txt")


def test_columns_scoring_writes_must_not_be_in_the_input():
    check_names(["text", "label"], ["label"])  # a labelled file: predictions go to predicted_label
    with pytest.raises(ValueError, match="predicted_label"):
        check_names(["text", "predicted_label"], ["label"])
    with pytest.raises(ValueError, match="error"):
        check_names(["text", "error"], ["label"])
