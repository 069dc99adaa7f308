"""The documentation: the site builds with --strict (generated pages included), and the README stays a door.

`mkdocs build --strict` fails on a broken link or anchor, an API reference to a name that is gone, a config file
the hook cannot read, and a docs/results/ file that no page shows (docs/hooks/generated.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT

MKDOCS = Path(sys.executable).parent / "mkdocs"


@pytest.mark.skipif(not MKDOCS.exists(), reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_site_builds_strictly(tmp_path):
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    cmd = [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    site = tmp_path / "site"
    config = (site / "configuration" / "index.html").read_text()
    assert "optimizer=miprov2" in config and "max_error_rate" in config  # generated from conf/
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "knn_cascade" in benchmarks and "serving_16" in benchmarks  # generated from docs/results/*.json
    assert "load_splits" in (site / "reference" / "data" / "index.html").read_text()  # mkdocstrings
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()  # builds and reads offline


def test_readme_is_a_door():
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail to docs/"
    byo = [i for i, line in enumerate(lines, 1) if line.startswith("#") and "Bring your own program" in line]
    assert byo and byo[0] <= 120, f"'Bring your own program' must be a heading within README's first 120 lines: {byo}"


def _hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hook", PROJECT_ROOT / "docs" / "hooks" / "generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _paths(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict):
            yield from _paths(value, f"{path}.")


def test_config_reference_lists_every_key():
    """The generated reference reads comments line by line; every key YAML itself sees must be in it."""
    import yaml

    hook = _hook()
    files = [*(PROJECT_ROOT / "conf").rglob("*.yaml"), *(PROJECT_ROOT / "experiments").glob("*.yaml")]
    for path in files:
        text = path.read_text()
        _, keys = hook.scan_yaml(text)
        scanned = {k for k, _, _ in keys}
        flow = {k for k, v, _ in keys if v.startswith("{")}  # a flow mapping is one row: its keys are its value
        expected = {p for p in _paths(yaml.safe_load(text) or {}) if not any(p.startswith(f + ".") for f in flow)}
        assert expected <= scanned, f"{path}: keys missing from the reference: {sorted(expected - scanned)}"
