"""MkDocs hook: pages that are generated at build time, so they never drift from what they describe.

Two markers, each an HTML comment on a line of its own in a page's Markdown:

    <!-- config-reference -->            every config group under conf/ (and experiments/): its options,
                                         their keys, defaults and comments, read from the YAML files
    <!-- results: quality*.json -->      every docs/results/ file matching the glob, as tables, with the
                                         command and date the file records

A results file is the JSON a benchmark writes (the quality benchmark's `bench.json`, the speed benchmark's
`speed.json`), copied into docs/results/ with a `command` and a `date` added where the benchmark did not record
them (optional: `title`, `commit`, `machine`, `source`, `description`); or a plain table (`columns` + `rows`) for
figures measured outside the benchmarks. A results file that no page shows is a warning, so
`mkdocs build --strict` fails on it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import re
import statistics
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("mkdocs.hooks.generated")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
CONF = ROOT / "conf"
EXPERIMENTS = ROOT / "experiments"
BENCH_CONF = ROOT / "benchmarks" / "conf"
MARKER = re.compile(r"^<!--\s*(config-reference|results:\s*(?P<glob>\S+))\s*-->\s*$", re.M)
_shown: set[str] = set()


# --- results tables ---------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _cell(value: Any) -> str:
    return _num(value).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _quality(data: dict) -> str:
    """`bench.json` of the quality benchmark: one row per recipe, anchors marked, the paired test against the
    best anchor on the same rows."""
    split = data.get("split", "test")
    best = data.get("best_anchor")
    has_note = any(r.get("note") for r in data["results"])
    head = [
        "recipe", f"{split} accuracy", "95% CI", f"vs {best or 'best anchor'} (diff, one-sided p, rows better/worse)",
        "compile LM calls", "eval LM calls", "wall s", "peak RSS MB",
    ] + (["notes"] if has_note else [])  # fmt: skip
    rows = []
    for r in data["results"]:
        test = r.get("vs_best_anchor") or {}
        if test:
            vs = f"{test['diff']:+.3f}, p={test['p_value']:.2g} ({test['wins']}/{test['losses']})"
        else:
            vs = "best anchor" if r["name"] == best else "-"
        ci = r.get("ci95")
        row = [
            f"{r['name']} (anchor)" if r.get("anchor") else r["name"],
            f"{r['accuracy']:.3f}" if r.get("accuracy") is not None else "-",
            f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-",
            vs, r.get("compile_lm_calls"), r.get("eval_lm_calls"), r.get("wall_s"), r.get("peak_rss_mb"),
        ] + ([r.get("note") or ""] if has_note else [])  # fmt: skip
        rows.append(row)
    facts = [f"task `{data['task']}`" if data.get("task") else None, f"LM `{data['lm']}`" if data.get("lm") else None]
    if sizes := data.get("sizes"):
        facts.append("splits " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    if "seed" in data:
        facts.append(f"seed {data['seed']}")
    return _table(head, rows) + "\n\n" + "; ".join(f for f in facts if f) + "."


# Details of a speed row worth a reader's eye, in this order: the benchmark's key -> how the note writes it.
_SPEED_NOTES = {
    "n": "n {}", "num_threads": "num_threads {}", "n_contexts": "{} contexts", "latency_s": "LM latency {} s",
    "lm": "LM {}", "traced": "traced {}", "max_tokens": "max_tokens {}", "same_answers": "same answers {}",
    "same_scores": "same scores {}", "p50_s": "p50 {} s", "p99_s": "p99 {} s", "errors": "{} errors",
    "workers": "{} workers", "lm_engine": "LM engine {}", "server_cpu_ms_per_request": "server CPU {} ms/request",
    "machine_cpu_ms_per_request": "all processes {} ms/request",
}  # fmt: skip


def _speed(data: dict) -> str:
    """`speed.json` of the speed benchmark: each measurement beside its anchor, medians over the repeats, the
    ratio the median of the per-repeat ratios."""
    head = ["measurement", "ours", "anchor", "ratio", "per repeat", "bound", "holds", "notes"]
    rows = []
    for r in data["rows"]:
        value = r.get("value")
        bound = r.get("threshold")
        bound = "-" if bound is None else ("≥ " if r.get("higher_is_better") else "≤ ") + f"{bound:g}"
        holds = {None: "-", True: "yes", False: "**no**"}[r.get("holds")]
        details = r.get("details") or {}
        notes = ", ".join(text.format(_num(details[k])) for k, text in _SPEED_NOTES.items() if k in details)
        if raw := details.get("raw_ratios"):  # engine beside burners: how much the same burners slowed llama-cpp
            notes = f"raw llama-cpp-python slowed {statistics.median(raw):.2f}x by the same burners"
        rows.append([
            f"`{r['name']}`", f"{_num(value)} {r.get('unit', '')}".strip(),
            f"{_num(r.get('anchor_value'))} ({r.get('anchor')})", f"{r['ratio']:.3f}" if r.get("ratio") else "-",
            ", ".join(f"{x:.3g}" for x in r.get("ratios") or []) or "-", bound, holds, notes,
        ])  # fmt: skip
    facts = [f"task `{data['task']}`" if data.get("task") else None]
    if "repeats" in data:
        facts.append(f"{data['repeats']} repeats")
    if "cpus" in data:
        facts.append(f"{data['cpus']} CPUs")
    if load := data.get("load_average"):
        facts.append("load average " + (", ".join(_num(x, 2) for x in load) if isinstance(load, list) else str(load)))
    return _table(head, rows) + "\n\n" + "; ".join(f for f in facts if f) + "."


def _plain(data: dict) -> str:
    return _table(data["columns"], data["rows"])


def render_results(path: Path, link: str) -> str:
    data = json.loads(path.read_text())
    if "results" in data:
        body = _quality(data)
    elif "rows" in data and data["rows"] and isinstance(data["rows"][0], dict):
        body = _speed(data)
    elif "columns" in data:
        body = _plain(data)
    else:
        raise ValueError(f"{path}: neither a quality nor a speed benchmark's JSON, nor a table (columns + rows)")
    title = data.get("title") or path.stem
    meta = [f"`{data['command']}`" if data.get("command") else "command not recorded"]
    meta.append(f"measured {data['date']}" if data.get("date") else "date not recorded")
    if data.get("commit"):
        meta.append(f"at commit `{data['commit']}`")
    if data.get("machine"):
        meta.append(data["machine"])
    if data.get("source"):
        meta.append(f"source: {data['source']}")
    out = [f"#### {title}", "", "; ".join(meta) + f" ([JSON]({link})).", ""]
    if data.get("description"):
        out += [data["description"], ""]
    return "\n".join(out + [body, ""])


def results_section(glob: str, page_uri: str) -> str:
    paths = sorted(p for p in RESULTS.glob("*.json") if fnmatch.fnmatch(p.name, glob))
    if not paths:
        log.warning("results: no docs/results/ file matches %r", glob)
        return ""
    # newest first, by the date each file records
    paths.sort(key=lambda p: (str(json.loads(p.read_text()).get("date", "")), p.name), reverse=True)
    _shown.update(p.name for p in paths)
    up = "../" * page_uri.count("/")  # a link is relative to the page's Markdown file
    return "\n".join(render_results(p, f"{up}results/{p.name}") for p in paths)


# --- configuration reference ------------------------------------------------------------------------------

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:'\"-][^:#]*?|'[^']*'|\"[^\"]*\"):(?:\s+(?P<rest>.*))?$")


def _split_comment(text: str) -> tuple[str, str]:
    """`value  # comment` -> (value, comment), leaving a # inside quotes alone."""
    quote = None
    for i, ch in enumerate(text):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), ""


def scan_yaml(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """A YAML file's leading comment and its keys: [(dotted key, value as written, comment)].

    A key's comment is the one at the end of its line, continued by comment lines starting in the same column,
    or else the comment lines right above it."""
    lines = text.splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    keys: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    trailing_col = None  # column of the last key's trailing comment: comment lines there continue it
    for line in lines[len(header) :]:
        stripped = line.strip()
        if not stripped:
            pending, trailing_col = [], None
            continue
        if stripped.startswith("#"):
            col = len(line) - len(line.lstrip())
            if trailing_col is not None and abs(col - trailing_col) <= 2:
                key, value, comment = keys[-1]
                keys[-1] = (key, value, f"{comment} {stripped.lstrip('# ')}")
            else:
                pending.append(stripped.lstrip("# "))
                trailing_col = None
            continue
        m = _KEY.match(line)
        if not m or stripped.startswith("- "):
            pending, trailing_col = [], None
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = m["key"].strip().strip("'\"")
        value, comment = _split_comment(m["rest"] or "")
        trailing_col = (len(line) - len(line.split("#")[-1]) - 1) if comment else None
        keys.append((".".join([k for _, k in stack] + [name]), value, comment or " ".join(pending)))
        pending = []
        stack.append((indent, name))
    text = " ".join(h.lstrip("# ").rstrip() for h in header if not h.startswith("# @package"))
    return text, keys


def _value(data: Any, path: str, written: str) -> str:
    """The value as YAML reads it: a list or a block mapping written over several lines becomes one line."""
    if written:
        return written
    node = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, dict):
        return ""  # a section: its keys follow
    text = json.dumps(node) if node is not None else "null"
    return text if len(text) <= 80 else text[:77] + "..."


def _defaults(text: str) -> list[str]:
    """The defaults list's entries as written, each with its comment."""
    items, inside = [], False
    for line in text.splitlines():
        if line.startswith("defaults:"):
            inside = True
        elif inside and line.lstrip().startswith("- "):
            entry, comment = _split_comment(line.strip()[2:])
            items.append(f"`{entry}`" + (f" ({comment})" if comment else ""))
        elif inside and line.strip() and not line.lstrip().startswith("#"):
            break
    return items


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def render_config_file(path: Path, group: str | None) -> str:
    text = path.read_text()
    header, keys = scan_yaml(text)
    data = yaml.safe_load(text) or {}
    rel = path.relative_to(ROOT)
    name = path.stem
    title = f"`{group}={name}`" if group else f"`{name}`"
    out = [f"### {title}", "", f"`{rel}`{': ' + header if header else ''}", ""]
    if defaults := _defaults(text):
        out += ["Composes: " + "; ".join(defaults) + ".", ""]
    rows = [
        [f"`{k}`", _code(_value(data, k, v).replace("|", "\\|")), c.replace("|", "\\|")]
        for k, v, c in keys
        if k != "defaults" and k.split(".")[0] != "hydra"
    ]
    if rows:
        out += ["| key | default | what |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        out.append("")
    return "\n".join(out)


def config_reference() -> str:
    out = ["## Entry points' root configs", ""]
    out.append("Each entry point composes one root config; `_base.yaml` is shared by all of them.")
    out.append("")
    for path in sorted(CONF.glob("*.yaml")):
        out.append(render_config_file(path, None))
    for group in sorted(p for p in CONF.iterdir() if p.is_dir() and not p.is_symlink()):
        out += [f"## `{group.name}/`", ""]
        out.append("Choose one with `" + group.name + "=<option>`: " + ", ".join(
            f"`{p.stem}`" for p in sorted(group.glob("*.yaml"))) + ".")  # fmt: skip
        out.append("")
        for path in sorted(group.glob("*.yaml")):
            out.append(render_config_file(path, group.name))
    out += ["## `experiment/` presets", ""]
    out += ["`experiment=<name>` (files in `experiments/`): only the values that differ.", ""]
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        out.append(render_config_file(path, "experiment"))
    if bench := sorted(BENCH_CONF.glob("*.yaml")):  # the benchmarks' own configs, outside the package
        out += ["## Benchmarks' configs", "", "`benchmarks/conf/`: see [Benchmarks](benchmarks.md).", ""]
        out += [render_config_file(path, None) for path in bench]
    return "\n".join(out)


# --- MkDocs events ----------------------------------------------------------------------------------------


def on_pre_build(config, **kwargs) -> None:
    _shown.clear()


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    def replace(m: re.Match) -> str:
        return config_reference() if m.group(1) == "config-reference" else results_section(m["glob"], page.file.src_uri)

    return MARKER.sub(replace, markdown)


def on_post_build(config, **kwargs) -> None:
    for path in sorted(RESULTS.glob("*.json")):
        if path.name not in _shown:
            log.warning("results: docs/results/%s is shown on no page (add a <!-- results: ... --> marker)", path.name)
