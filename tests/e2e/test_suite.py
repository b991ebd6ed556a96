"""``durabench suite``: several scenarios one after another on the in-memory reference engine, one of
them failing on purpose; the suite goes on, says which failed, exits 3, and its index links every
report and gathers the answer tables. Bad inputs are refused before anything runs (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis import gates
from harness.cli import main
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

BASE = """
engines: [memory]
workload: {steps: 2, step_duration: 50ms, payload_bytes: 16}
load: {rate: 20, warmup: 0.5s, duration: 1.5s, drain_timeout: 3s, drain_quiet: 2s}
floors: {enabled: false}
resources: {interval: 0}
"""


def _write(directory: Path, name: str, workers: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + BASE + f"workers: {workers}\n")
    return path


def test_suite_keeps_going_past_a_failed_scenario(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    _write(scenarios, "a-fails", "{count: 1, ready_timeout: 0s}")  # workers never ready: the engine fails to run
    _write(scenarios, "b-works", "{count: 2, restart_delay: 200ms}")
    (scenarios / "notes.txt").write_text("not a scenario")  # a directory stands for its *.yaml files only
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "suite", str(scenarios), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == gates.EXIT_ENGINE_FAILED, proc.stdout + proc.stderr[-3000:]
    assert "[suite 1/2] a-fails" in proc.stderr and "[suite 2/2] b-works" in proc.stderr  # progress lines
    assert "scenarios that failed: a-fails" in proc.stderr
    (suite_dir,) = out.iterdir()
    assert suite_dir.name.endswith("suite-scenarios")
    runs = sorted(p for p in suite_dir.iterdir() if (p / "manifest.json").is_file())
    assert [p.name.split("-", 1)[1] for p in runs] == ["a-fails", "b-works"]
    index_md = (suite_dir / "index.md").read_text()
    index_html = (suite_dir / "index.html").read_text()
    assert "2 of 2 scenarios run, 1 failed" in index_md
    assert "failed: engines that failed to run: memory" in index_md
    # every report the index links exists, and the working scenario's answer table is on the page
    ok_run = runs[1]
    assert f"]({ok_run.name}/report.html)" in index_md and (ok_run / "report.html").is_file()
    assert f'href="{ok_run.name}/report.md"' in index_html
    answers = index_md.split("### b-works", 1)[1]
    row = next(line for line in answers.splitlines() if line.startswith("| memory"))
    assert "| correct |" in row  # the headline row of the engine: the checker's verdict
    completed = int(row.split("|")[10])
    assert completed > 0
    assert "<table>" in index_html and "b-works" in index_html
    # suite.json: the entries, for `durabench analyze SUITE_DIR`
    data = json.loads((suite_dir / "suite.json").read_text())
    assert data["name"] == "scenarios" and data["title"] == "durabench suite: scenarios"
    assert [(e["name"], e["path"], e["status"], e["run_dir"]) for e in data["entries"]] == [
        ("a-fails", str(scenarios / "a-fails.yaml"), "failed", runs[0].name),
        ("b-works", str(scenarios / "b-works.yaml"), "ok", runs[1].name)]
    assert all(e["elapsed_s"] > 0 for e in data["entries"])
    # durabench analyze SUITE_DIR: every run re-analyzed, the index rewritten, the suite's exit code
    (ok_run / "summary.json").unlink()
    (suite_dir / "index.md").unlink()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", str(suite_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == gates.EXIT_ENGINE_FAILED, proc.stdout + proc.stderr[-3000:]
    assert f"[analyze 1/2] a-fails: {runs[0].name}" in proc.stderr and f"[analyze 2/2] b-works: {ok_run.name}" in (
        proc.stderr)
    assert (ok_run / "summary.json").is_file()
    again = (suite_dir / "index.md").read_text()
    assert "2 of 2 scenarios run, 1 failed" in again and str(scenarios / "b-works.yaml") in again
    assert again.split("### b-works", 1)[1] == answers  # the same files analyze to the same answer table


def test_suite_refuses_bad_inputs_before_running_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["suite", str(tmp_path / "missing"), "--out", str(out)]) == gates.EXIT_USER_ERROR
    assert "no such scenario file or directory" in capsys.readouterr().err
    good = _write(tmp_path, "good", "{count: 1}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("name: good", "name: bad").replace("rate: 20", "rate: 20, rtae: 3"))
    assert main(["suite", str(good), str(bad), "--out", str(out)]) == gates.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("durabench: error: ") and "rtae" in err and len(err.strip().splitlines()) == 1
    twin = tmp_path / "twin.yaml"
    twin.write_text(good.read_text())
    assert main(["suite", str(good), str(twin), "--out", str(out)]) == gates.EXIT_USER_ERROR
    assert "more than one file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["suite", str(empty), "--out", str(out)]) == gates.EXIT_USER_ERROR
    assert not out.exists()  # nothing ran, no suite directory
