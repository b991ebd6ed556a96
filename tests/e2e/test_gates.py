"""CI gates end to end: ``run --fail-on ... --junit``, ``--repeat``, ``analyze`` re-judging a run, and
``compare --fail-on-regression``, with the documented exit codes (0 pass, 1 gate failed, 2 user
error, 3 an engine failed to run). Runs use the in-memory reference engine (a few seconds each)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.analysis import gates
from harness.report import compare
from tests.conftest import ROOT
from tests.unit import runbuilder

pytestmark = pytest.mark.e2e
DURABENCH = [sys.executable, "-m", "harness.cli"]

BASE = """
name: gates
engines: [memory]
workload: {steps: 2, step_duration: 100ms, payload_bytes: 16}
load: {rate: 30, warmup: 0.5s, duration: 2s, drain_timeout: 3s, drain_quiet: 2s}
workers: {count: 2, restart_delay: 200ms}
floors: {enabled: false}
resources: {interval: 0}
"""
KILL = "faults: [{kind: kill-worker, target: 'worker:0', at: 1.5s}]\n"


def durabench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DURABENCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def scenario(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.yaml"
    path.write_text(BASE + text)
    return str(path)


def cases(path: Path) -> dict[tuple[str, str], ET.Element]:
    root = ET.parse(path).getroot()
    return {(str(c.get("classname")).rsplit(".", 1)[1], str(c.get("name"))): c for c in root.iter("testcase")}


def test_exit_codes_are_documented_in_help() -> None:
    proc = durabench("run", "--help")
    assert proc.returncode == 0
    for line in ("0    pass", "1    a gate of --fail-on failed", "2    user error", "3    an engine failed to run",
                 "130  interrupted"):
        assert line in proc.stdout, proc.stdout
    assert "## Exit codes" in (ROOT / "README.md").read_text()


def test_fail_on_slo_fails_with_exit_1_and_a_junit_file(tmp_path: Path) -> None:
    """The memory engine loses the workflows in flight on a killed worker: max_lost 0 fails, the loose
    latency limit passes; analyze re-judges the same run for violations without running it again."""
    sc = scenario(tmp_path, KILL + "slo: {all: {max_lost: 0, max_e2e_p99: 60s}, "
                                   "engines: {memory: {max_replayed: 0}}}\n")
    xml = tmp_path / "ci" / "junit.xml"
    proc = durabench("run", sc, "--out", str(tmp_path / "out"), "--quiet", "--fail-on", "slo", "--junit", str(xml))
    assert proc.returncode == gates.EXIT_GATE_FAILED, proc.stdout + proc.stderr[-3000:]
    assert "FAIL  memory: slo.max_lost" in proc.stdout and "gates: FAIL" in proc.stdout
    found = cases(xml)
    assert found[("memory", "slo.max_lost")].find("failure") is not None
    assert found[("memory", "slo.max_e2e_p99")].find("failure") is None
    assert found[("memory", "slo.max_replayed")].find("failure") is None
    assert found[("memory", "ran")].find("error") is None
    (run_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())["engines"]["memory"]
    assert summary["lost"] > 0
    again = tmp_path / "again.xml"
    proc = durabench("analyze", str(run_dir), "--fail-on", "violations", "--junit", str(again))
    assert proc.returncode == gates.EXIT_GATE_FAILED, proc.stderr
    assert cases(again)[("memory", "violations")].find("failure") is not None
    proc = durabench("analyze", str(run_dir))  # no gate selected: the run ran, exit 0
    assert proc.returncode == gates.EXIT_PASS, proc.stderr


def test_limits_met_pass_over_repetitions(tmp_path: Path) -> None:
    """--repeat 2 of two results (a sweep of two variants, memory@a and memory@b): interleaved (a b a b)
    into one directory of runs, a report with medians and [min-max], gates judged over both
    repetitions (exit 0), and compare of the group with itself finds no regression."""
    sc = scenario(tmp_path, "variants: [{name: a}, {name: b}]\n"
                            "slo: {all: {max_lost: 0, max_duplicated: 0, min_throughput_ratio: 0.5, "
                            "max_e2e_p99: 30s, max_e2e_p99_9: 30s}}\n")
    xml = tmp_path / "junit.xml"
    proc = durabench("run", sc, "--out", str(tmp_path / "out"), "--repeat", "2",
                     "--fail-on", "violations,slo", "--junit", str(xml))
    assert proc.returncode == gates.EXIT_PASS, proc.stdout + proc.stderr[-3000:]
    starts = [line.split(" starting")[0] + line.split("workers")[1] for line in proc.stderr.splitlines()
              if "starting servers and workers" in line]
    assert starts == ["[memory@a] (repetition 1 of 2)", "[memory@b] (repetition 1 of 2)",
                      "[memory@a] (repetition 2 of 2)", "[memory@b] (repetition 2 of 2)"]
    found = cases(xml)
    assert len(found) == 2 * 7  # per result: ran, violations and 5 limits
    assert all(c.find("failure") is None and c.find("error") is None for c in found.values())
    (group,) = (tmp_path / "out").iterdir()
    reps = sorted(p for p in group.iterdir() if (p / "manifest.json").is_file())
    assert [json.loads((p / "manifest.json").read_text())["repetition"] for p in reps] == [
        {"index": 1, "of": 2}, {"index": 2, "of": 2}]
    report = (group / "report.md").read_text()
    assert "2 runs" in report and "median over the runs with [min-max]" in report and "interleaved" in report
    proc = durabench("compare", str(group), str(group), "--fail-on-regression")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no regression beyond spread" in proc.stdout


def test_an_engine_that_fails_to_run_exits_3(tmp_path: Path) -> None:
    """Workers that may not take any time to become ready: the engine run fails, the gates say so."""
    sc = scenario(tmp_path, "slo: {all: {max_lost: 0}}\n")
    text = Path(sc).read_text()
    Path(sc).write_text(text.replace("{count: 2, restart_delay: 200ms}", "{count: 1, ready_timeout: 0s}"))
    xml = tmp_path / "junit.xml"
    proc = durabench("run", sc, "--out", str(tmp_path / "out"), "--quiet", "--fail-on", "slo", "--junit", str(xml))
    assert proc.returncode == gates.EXIT_ENGINE_FAILED, proc.stdout + proc.stderr[-3000:]
    assert "engines that failed to run: memory" in proc.stderr
    assert cases(xml)[("memory", "ran")].find("error") is not None


def test_compare_fails_on_a_regression_beyond_spread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Synthetic runs (tests/unit/runbuilder.py): B's steps are slower than A's beyond both sides'
    spread, so --fail-on-regression exits 1; the other way round latency improved, and that passes."""
    from harness.cli import main

    a = runbuilder.make_run(tmp_path / "a", engines=("alpha",))
    b = runbuilder.make_run(tmp_path / "b", engines=("alpha",), slow_ms=400.0)
    assert main(["compare", str(a), str(b)]) == 0  # without the flag: a table, exit 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == compare.EXIT_REGRESSION
    out = capsys.readouterr().out
    assert "regressions beyond both sides' spread" in out and "B alpha e2e p50 ms: 240" in out
    assert main(["compare", str(b), str(a), "--fail-on-regression"]) == 0, capsys.readouterr().out


@pytest.mark.real
def test_fail_on_slo_with_a_real_engine(tmp_path: Path) -> None:
    """DBOS on the harness's PostgreSQL: its guarantees pass (nothing lost or replayed), an impossible
    1 ms p99 fails; exit 1 and the JUnit file say which."""
    text = BASE.replace("engines: [memory]", "engines: [dbos]").replace("rate: 30", "rate: 10")
    path = tmp_path / "dbos.yaml"
    path.write_text(text + "slo: {engines: {dbos: {max_lost: 0, max_replayed: 0, max_e2e_p99: 1ms}}}\n")
    xml = tmp_path / "junit.xml"
    proc = durabench("run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--fail-on", "violations,slo",
                     "--junit", str(xml))
    assert proc.returncode == gates.EXIT_GATE_FAILED, proc.stdout + proc.stderr[-3000:]
    found = cases(xml)
    assert found[("dbos", "ran")].find("error") is None
    assert found[("dbos", "violations")].find("failure") is None
    assert found[("dbos", "slo.max_lost")].find("failure") is None
    assert found[("dbos", "slo.max_replayed")].find("failure") is None
    assert found[("dbos", "slo.max_e2e_p99")].find("failure") is not None
