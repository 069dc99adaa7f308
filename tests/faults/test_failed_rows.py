"""Failure is failure: a row whose program raised is an error, never a wrong answer; keys never reach its text."""

from __future__ import annotations

import math

import dspy
import pandas as pd
import pytest
from dspy.utils.exceptions import AdapterParseError

from pipelines.config import REDACTED
from pipelines.evaluation.metrics import exact_match
from pipelines.evaluation.runner import EvalSettings, EvaluationFailed, NoUsableAnswers, evaluate_program
from pipelines.lm.secrets import register_secret, scrub_exception
from pipelines.registry.gate import decide

KEY = "fk-rows-SENTINEL-4411"
TEXTS = ["refund a", "book b", "cancel c", "book d", "refund e", "cancel f"]


def examples() -> list[dspy.Example]:
    return [dspy.Example(text=t, label=t.split()[0]).with_inputs("text") for t in TEXTS]


class Echo(dspy.Module):
    """Answers the first word (always right), raising on `fail_on` texts; counts its calls."""

    def __init__(self, fail_on=(), message="upstream down"):
        super().__init__()
        self.fail_on, self.message, self.calls = set(fail_on), message, 0

    def forward(self, text):
        self.calls += 1
        if text in self.fail_on:
            raise ConnectionError(f"{self.message} for {text!r}")
        return dspy.Prediction(label=text.split()[0])


def run(program, **kwargs):
    return evaluate_program(program, examples(), exact_match, outputs=["label"], **kwargs)


def test_a_failed_row_is_excluded_from_the_score_not_counted_as_zero():
    outcome = run(Echo(fail_on={"book b"}), max_error_rate=0.2)  # 1 of 6 allowed
    table = outcome.table.set_index("text")
    assert outcome.errors == 1 and outcome.score == 1.0  # the five answered rows are all right
    failed = table.loc["book b"]
    assert failed["error"] == "ConnectionError: upstream down for 'book b'"
    assert math.isnan(failed["score"]) and pd.isna(failed["predicted.label"]) and pd.isna(failed["latency_s"])
    assert table.drop(index="book b")["error"].isna().all()
    assert outcome.ci() == (1.0, 1.0)
    assert outcome.metrics("dev")["dev/errors"] == 1.0 and outcome.metrics("dev")["dev/examples"] == 6.0


def test_by_default_one_failure_fails_the_evaluation_at_once_naming_it():
    program = Echo(fail_on={"book b", "book d"})
    with pytest.raises(EvaluationFailed) as info:
        run(program)
    assert "1 of 6 examples raised, more than the 0" in str(info.value)
    assert "first error: ConnectionError: upstream down for 'book b'" in str(info.value)
    assert program.calls == 2  # DSPy's max_errors follows our limit: it stopped at the first failure


@pytest.mark.parametrize(("failing", "rate", "fails"), [(3, 0.5, False), (4, 0.5, True), (5, 1.0, False)])
def test_the_error_rate_limit_decides(failing, rate, fails):
    program = Echo(fail_on=set(TEXTS[:failing]))
    if fails:
        with pytest.raises(EvaluationFailed, match=f"{failing} of 6 examples raised"):
            run(program, max_error_rate=rate)
    else:
        outcome = run(program, max_error_rate=rate)
        assert outcome.errors == failing and outcome.table["error"].notna().sum() == failing
        assert outcome.score == 1.0


def test_a_split_on_which_every_row_failed_fails_whatever_the_limit():
    with pytest.raises(NoUsableAnswers, match=r"all 6 dev rows raised: ConnectionError: upstream down for") as info:
        run(Echo(fail_on=set(TEXTS)), max_error_rate=1.0, split="dev")
    assert "check the adapter" in str(info.value)


def test_a_metric_that_raises_is_an_error_too():
    def broken(example, prediction, trace=None):
        raise RuntimeError("judge unavailable")

    outcome = evaluate_program(Echo(), examples()[:2], broken, outputs=["label"], max_error_rate=1.0)
    assert outcome.table["error"].tolist() == ["metric raised RuntimeError: judge unavailable"] * 2


class Garbled(dspy.Module):
    """Answers the first word, except on `garbled` texts, where its LM's answer does not parse."""

    def __init__(self, garbled=("book b",), fail_on=()):
        super().__init__()
        self.garbled, self.fail_on = set(garbled), set(fail_on)

    def forward(self, text):
        if text in self.fail_on:
            raise TimeoutError(f"no answer in time for {text!r}")
        if text in self.garbled:
            raise AdapterParseError("JSONAdapter", dspy.Signature("text -> label"), "Sure! It depends.")
        return dspy.Prediction(label=text.split()[0])


def test_an_unparseable_answer_is_a_wrong_answer_not_a_failure():
    outcome = run(Garbled())  # max_error_rate 0.0, and still no EvaluationFailed
    row = outcome.table.set_index("text").loc["book b"]
    assert outcome.errors == 0 and row["score"] == 0.0 and pd.isna(row["error"]) and pd.isna(row["predicted.label"])
    assert row["parse_error"].startswith("AdapterParseError: ") and "Sure! It depends." in row["parse_error"]
    assert outcome.table["parse_error"].notna().sum() == 1
    assert outcome.score == pytest.approx(5 / 6)
    assert outcome.metrics("dev")["dev/parse_failures"] == 1.0 and outcome.metrics("dev")["dev/errors"] == 0.0


def test_a_split_on_which_no_answer_parsed_fails_naming_the_first_and_what_to_check():
    with pytest.raises(NoUsableAnswers) as info:
        run(Garbled(garbled=TEXTS), split="dev")
    message = str(info.value)
    assert message.startswith("all 6 dev rows failed to parse: AdapterParseError: ")
    assert "Sure! It depends." in message and "\n" not in message
    assert "check the adapter" in message and "the model" in message and "the server" in message
    # raised or unparsed, row by row: still no usable answer anywhere
    with pytest.raises(NoUsableAnswers, match=r"all 6 dev rows failed \(2 raised, 4 failed to parse\)"):
        run(Garbled(garbled=TEXTS[2:], fail_on=TEXTS[:2]), max_error_rate=0.5, split="dev")


def test_the_error_text_never_holds_the_key():
    register_secret(KEY)
    program = Echo(fail_on={"cancel c"}, message=f"401 received Authorization: Bearer {KEY}")
    outcome = run(program, max_error_rate=0.5)
    error = outcome.table.set_index("text").loc["cancel c", "error"]
    assert KEY not in error and f"Bearer {REDACTED}" in error
    with pytest.raises(EvaluationFailed) as info:
        run(Echo(fail_on={"cancel c"}, message=f"Bearer {KEY}"))
    assert KEY not in str(info.value)


def test_scrub_exception_cleans_the_whole_chain_in_place():
    register_secret(KEY)
    try:
        try:
            raise ValueError({"detail": f"echo {KEY}"})
        except ValueError as inner:
            outer = RuntimeError(f"wrapped: {KEY}")
            outer.message = f"message {KEY}"
            raise outer from inner
    except RuntimeError as exc:
        caught = exc
    scrub_exception(caught)
    assert KEY not in str(caught) and KEY not in caught.message and KEY not in str(caught.__cause__)


def test_eval_settings_take_the_limit_from_config_and_refuse_a_bad_one():
    from omegaconf import OmegaConf

    settings = EvalSettings.from_config(OmegaConf.create({"num_threads": 2, "display_progress": False}))
    assert settings.max_error_rate == 0.0 and settings.num_threads == 2
    cfg = OmegaConf.create({"num_threads": 1, "display_progress": False, "max_error_rate": 0.1})
    assert EvalSettings.from_config(cfg).max_error_rate == 0.1
    with pytest.raises(ValueError, match="eval.max_error_rate must be a fraction"):
        EvalSettings(max_error_rate=1.5)


def results(scores, errors=None) -> pd.DataFrame:
    errors = errors or [None] * len(scores)
    return pd.DataFrame({"row_id": range(len(scores)), "score": scores, "error": errors})


def test_the_gate_refuses_a_challenger_with_failed_rows_even_forced_or_first():
    strong = [1.0] * 30
    failed = results([*strong[:-1], float("nan")], [None] * 29 + ["LMTimeoutError: timed out"])
    champion = results([0.0] * 30)
    for decision in (decide(failed, champion), decide(failed, champion, force=True), decide(failed, None)):
        assert not decision.promote and decision.test is None
        assert "the challenger's results hold 1 failed example(s) of 30" in decision.reason
        assert "row 29: LMTimeoutError: timed out" in decision.reason
    assert decide(results(strong), champion).promote  # the same challenger without the failure wins
    assert not decide(results(strong), failed.assign(score=0.0)).promote  # a champion's failures: no comparison
