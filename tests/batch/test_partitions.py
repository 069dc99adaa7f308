"""The pieces of batch scoring that need no Spark: bad-row isolation, input formats, reserved names."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from pipelines.batch.partitions import RowRetries, predict_isolating
from pipelines.batch.row_results import check_names, input_format


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
    scored = predict_isolating(model, pd.DataFrame({"text": ["a", "bb"]}), ["label", "score"])
    assert model.calls == 1 and scored.errors == [None, None]
    assert scored.predicted.to_dict("list") == {"label": ["A", "BB"], "score": [1, 2]}
    assert scored.guard_hits == [None, None]  # a model without guards


def test_a_bad_row_costs_only_itself():
    model = PickyModel()
    frame = pd.DataFrame({"text": ["a", " ", "ccc"]}, index=[7, 8, 9])  # Spark hands batches any index
    scored = predict_isolating(model, frame, ["label"], sleep=pytest.fail)  # a bad input is never retried
    assert model.calls == 1 + 3  # the batch, then each row alone
    assert scored.predicted["label"].isna().tolist() == [False, True, False]
    assert scored.predicted["label"][[0, 2]].tolist() == ["A", "CCC"]
    assert scored.errors[0] is None and scored.errors[2] is None
    assert scored.errors[1] == "MlflowException: Row 0, column 'text': empty text"


class FlakyLM(PickyModel):
    """Its LM is down for the first `outage` calls (the model's 503), then answers."""

    def __init__(self, outage: int):
        super().__init__()
        self.outage = outage

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.calls < self.outage:
            self.calls += 1
            raise MlflowException("The model's LM is unavailable; retry later", error_code=TEMPORARILY_UNAVAILABLE)
        return super().predict(frame)


def test_a_row_whose_lm_is_down_is_tried_again_with_backoff():
    waits: list[float] = []
    model = FlakyLM(outage=3)  # the batch call, then row 0 twice
    scored = predict_isolating(model, pd.DataFrame({"text": ["a", "bb"]}), ["label"], RowRetries(2, 5.0), waits.append)
    assert scored.errors == [None, None] and scored.predicted["label"].tolist() == ["A", "BB"]
    assert waits == [5.0, 10.0] and model.calls == 5


def test_an_outage_longer_than_the_retries_is_the_rows_error():
    waits: list[float] = []
    scored = predict_isolating(
        FlakyLM(outage=99), pd.DataFrame({"text": ["a"]}), ["label"], RowRetries(1, 2.0), waits.append
    )
    assert waits == [2.0] and scored.errors[0].startswith("MlflowException: The model's LM is unavailable")


def test_retry_settings_are_checked():
    with pytest.raises(ValueError, match="row_retries"):
        RowRetries(-1, 5.0)
    assert MlflowException("x", error_code=INVALID_PARAMETER_VALUE).error_code == "INVALID_PARAMETER_VALUE"


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
