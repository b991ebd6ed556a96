"""The fast analysis (orjson ledger reading, bulk histograms, cached traces) gives the figures the previous
analysis wrote for the committed reference run: summary, histogram encodings and checker ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import summary
from tests.conftest import ROOT

REFERENCE = sorted((ROOT / "results" / "reference").glob("*/summary.json"))


def _same(before: Any, after: Any, path: str, out: list[str]) -> None:
    """Every figure of ``before`` is in ``after`` with the same value (``after`` may add new fields)."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            if key not in after:
                out.append(f"{path}/{key}: gone")
            else:
                _same(value, after[key], f"{path}/{key}", out)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            _same(a, b, f"{path}[{i}]", out)
    elif before != after:
        out.append(f"{path}: {str(before)[:60]} -> {str(after)[:60]}")


@pytest.mark.skipif(not REFERENCE, reason="no committed reference run under results/reference/")
def test_reference_run_analyzes_to_the_committed_figures(tmp_path: Path) -> None:
    src = REFERENCE[0].parent
    run = tmp_path / src.name
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("charts", "report.*"))
    committed = json.loads((src / "summary.json").read_text())
    engines = list(committed["engines"])
    derived = {e: {f: json.loads((src / "engines" / e / f).read_text()) for f in ("histograms.json", "checker.json")}
               for e in engines}
    fresh = summary.analyze(run)
    diffs: list[str] = []
    _same({k: v for k, v in committed.items() if k != "analyzed_at"}, fresh, "summary", diffs)
    for e in engines:
        for name, before in derived[e].items():
            _same(before, json.loads((run / "engines" / e / name).read_text()), f"{e}/{name}", diffs)
    assert not diffs, diffs
    assert sum(fresh["engines"][e]["completed"] for e in engines) > 0  # figures, not empty dicts, were compared


def test_analysis_speed_benchmark_runs_on_a_small_history() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "benchmarks/analysis_speed.py", "--events", "4000"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert 3900 <= figures["events"] <= 4100 and figures["submitted"] == 500
    assert figures["completed"] + figures["lost"] <= figures["submitted"] and figures["completed"] > 450
    assert figures["events_per_s"] > 0 and figures["peak_rss_bytes"] > 0
