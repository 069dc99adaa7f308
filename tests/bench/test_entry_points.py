"""The entry-point benchmark's arithmetic and commands (no process is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.entry_points import Case, fit, fits, table


def test_fit_separates_the_fixed_cost_from_the_cost_per_row():
    a, b = fit([60, 240, 1000], [10 + 0.05 * n for n in (60, 240, 1000)])
    assert a == pytest.approx(10) and b == pytest.approx(0.05)
    value, slope = fit([60], [12.0])
    assert value == 12.0 and slope != slope  # one row count: no slope


def test_cases_run_each_entry_point_against_the_plain_script_on_the_same_rows():
    ours, plain = Case("evaluate", 60).commands("http://127.0.0.1:1/v1", Path("/s"))
    assert ours[1:5] == ["-m", "pipelines.evaluate", "fresh=true", "eval.split=dev"]
    assert "task.data.dev_size=60" in ours and "lm.cache=false" in ours
    assert plain[plain.index("--rows") + 1] == "60" and plain[plain.index("--csv") + 1].endswith("intents.csv")
    big, plain = Case("main", 1000).commands("http://127.0.0.1:1/v1", Path("/s"))
    assert "task=banking77" in big and "task.data.dev_size=500" in big and "task.data.test_size=500" in big
    assert {"--log-model", "--register"} <= set(plain) and plain[plain.index("--splits") + 1] == "2"


def test_the_table_and_fits_read_the_cases():
    cases = [Case("evaluate", n, ours=[2 + n / 100] * 2, plain=[1 + n / 100] * 2) for n in (60, 240)]
    for case in cases:
        case.ours_cpu, case.plain_cpu = case.ours, case.plain
    (row,) = fits(cases)
    assert row["ours_fixed_s"] == pytest.approx(2) and row["plain_per_row_ms"] == pytest.approx(10)
    assert "evaluate 240 rows" in table([c.summary() for c in cases], [row])
