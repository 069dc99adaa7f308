"""The minimal script a user would write to evaluate a DSPy program under MLflow: the anchor of the
entry-point benchmark (`benchmarks.entry_points`).

`dspy.Predict` with a `Literal` output, `JSONAdapter`, `mlflow.dspy.autolog()`, `dspy.Evaluate` inside
`mlflow.start_run`, one metric logged. Options add what `train` and `main` also do (log the program as a model,
score a second split, register the model), so each entry point is compared with a script doing the same work.

    MLFLOW_TRACKING_URI=sqlite:////tmp/plain.db python -m benchmarks.plain_dspy_eval \
        --api-base http://127.0.0.1:8011/v1 --csv data/travel_intents/intents.csv --rows 60
"""

from __future__ import annotations

import argparse
from typing import Literal

import dspy
import mlflow
import pandas as pd


def load_rows(csv: str, label_column: str, labels: list[str] | None, rows: int, seed: int = 0) -> pd.DataFrame:
    data = pd.read_csv(csv).rename(columns={label_column: "label"})
    data["label"] = data["label"].str.lower()
    if labels:
        data = data[data["label"].isin(labels)]
    return data.sample(n=min(rows, len(data)), random_state=seed)


def exact_match(example, prediction, trace=None) -> bool:
    return example.label == prediction.label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--model", default="openai/fake")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--labels", nargs="*", default=None, help="keep only these labels")
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--splits", type=int, default=1, help="score the rows in this many equal splits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-model", action="store_true", help="log the program as an MLflow model (train)")
    parser.add_argument("--register", default=None, help="register the logged model under this name (main)")
    parser.add_argument("--experiment", default="plain")
    args = parser.parse_args()

    data = load_rows(args.csv, args.label_column, args.labels, args.rows)
    labels = tuple(sorted(data["label"].unique()))
    signature = dspy.Signature(
        {"text": (str, dspy.InputField()), "label": (Literal[labels], dspy.OutputField())},
        "Classify the customer's message into exactly one intent.",
    )
    lm = dspy.LM(args.model, api_base=args.api_base, api_key="fake", cache=False)
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
    program = dspy.Predict(signature)
    examples = [
        dspy.Example(text=t, label=lab).with_inputs("text") for t, lab in zip(data["text"], data["label"], strict=True)
    ]

    mlflow.set_experiment(args.experiment)
    mlflow.dspy.autolog()
    size = len(examples) // args.splits
    with mlflow.start_run():
        for i in range(args.splits):
            split = examples[i * size : (i + 1) * size]
            evaluate = dspy.Evaluate(devset=split, metric=exact_match, num_threads=args.threads)
            mlflow.log_metric(f"accuracy_{i}", evaluate(program).score)
            if i == 0 and args.log_model:
                info = mlflow.dspy.log_model(program, name="model", input_example={"text": examples[0].text})
        if args.register:
            mlflow.register_model(info.model_uri, args.register)


if __name__ == "__main__":
    main()
