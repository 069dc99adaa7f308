"""The package's layers hold: an import only goes down, and `pipelines` never imports `tests` or `benchmarks`.

The contracts are `[tool.importlinter]` in pyproject.toml (entry points -> batch -> registry | serving | optimizers
-> model -> evaluation -> tracking -> programs | lm | guards -> data -> config); a broken one fails with
import-linter's report, which names each offending import chain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelines.config import PROJECT_ROOT


def test_imports_keep_the_layers():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(PROJECT_ROOT / "pyproject.toml")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
