"""``durabench report``, ``compare`` and ``ls`` end to end on real runs of the smoke scenario."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unit import runbuilder

pytestmark = pytest.mark.e2e
DURABENCH = [sys.executable, "-m", "harness.cli"]


def durabench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DURABENCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _one_line_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("durabench: error: "), proc.stderr
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/strict/<2 runs> and results/relaxed/<1 run> of scenarios/smoke.yaml (memory engine)."""
    root = tmp_path_factory.mktemp("results")
    for out, extra in ((root / "strict", []), (root / "strict", []), (root / "relaxed", ["--durability", "relaxed"])):
        proc = durabench("run", "scenarios/smoke.yaml", "--out", str(out), "--quiet", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def _runs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())


def test_every_run_ends_with_a_report_and_charts(results_dir: Path) -> None:
    for run_dir in _runs(results_dir / "strict"):
        assert (run_dir / "report.md").is_file()
        html = (run_dir / "report.html").read_text()
        assert "data:image/png;base64," in html and "memory" in html
        assert (run_dir / "charts" / "throughput.png").is_file()
        measured = (run_dir / "engines" / "memory" / "resources.jsonl").is_file()
        assert (run_dir / "charts" / "resources.png").exists() == measured


def test_report_rebuilds_a_run_and_pools_repetitions(results_dir: Path, tmp_path: Path) -> None:
    run_dir = _runs(results_dir / "strict")[0]
    (run_dir / "report.html").unlink()
    proc = durabench("report", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "report.html").is_file() and "report.html" in proc.stdout
    proc = durabench("report", str(results_dir / "strict"))  # a directory of repetitions
    assert proc.returncode == 0, proc.stderr
    md = (results_dir / "strict" / "report.md").read_text()
    assert "# durabench report: smoke, 2 runs" in md and "n=2 runs" in md
    _one_line_error(durabench("report", *map(str, _runs(results_dir / "strict"))), "--out")
    relaxed = _runs(results_dir / "relaxed")[0]
    _one_line_error(durabench("report", str(run_dir), str(relaxed), "--out", str(tmp_path)), "not a repetition")


def test_compare_lines_up_runs_with_ratios(results_dir: Path) -> None:
    a, b = _runs(results_dir / "strict")
    proc = durabench("compare", str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "A (baseline)" in out and "== memory ==" in out and "B/A" in out
    assert "throughput wf/s" in out and "e2e p99 ms" in out and "durability strict" in out
    assert "MISMATCHED" not in out
    proc = durabench("compare", str(results_dir / "strict"), str(a))  # repetitions pooled on one side
    assert proc.returncode == 0, proc.stderr
    assert "[n=2 runs]" in proc.stdout


def test_compare_refuses_mismatched_profiles_unless_forced(results_dir: Path) -> None:
    strict, relaxed = _runs(results_dir / "strict")[0], _runs(results_dir / "relaxed")[0]
    _one_line_error(durabench("compare", str(strict), str(relaxed)), "durability profiles differ: A strict, B relaxed")
    proc = durabench("compare", str(strict), str(relaxed), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "MISMATCHED RUNS" in proc.stdout and "DURABILITY RELAXED != STRICT" in proc.stdout


def test_compare_refuses_other_scenarios_and_single_runs(results_dir: Path, tmp_path: Path) -> None:
    smoke = _runs(results_dir / "strict")[0]
    other = runbuilder.make_run(tmp_path, engines=("memory",))
    _one_line_error(durabench("compare", str(smoke), str(other)), "scenarios differ (A smoke, B synthetic)")
    assert durabench("compare", str(smoke), str(other), "--force").returncode == 0
    _one_line_error(durabench("compare", str(smoke)), "at least two runs")


def test_ls_lists_runs_with_scenario_engines_date_and_verdict(results_dir: Path) -> None:
    proc = durabench("ls", str(results_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["run", "date", "scenario", "durability", "engines", "verdict"]
    body = lines[2:]
    assert len(body) == 3
    assert sum("strict/" in line for line in body) == 2 and sum("relaxed/" in line for line in body) == 1
    for line in body:
        assert "smoke" in line and "memory" in line and "memory: " in line
    _one_line_error(durabench("ls", str(results_dir / "nope")), "no such results directory")
