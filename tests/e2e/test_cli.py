"""The durabench CLI end to end: user errors, and whole runs with a worker kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
DURABENCH = [sys.executable, "-m", "harness.cli"]


def durabench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DURABENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "scenarios/nope.yaml"], "no such scenario file"),
        (["run", "scenarios/quick.yaml", "--engines", "dbos,nosuch"], "unknown engine 'nosuch'"),
        (["run", "scenarios/quick.yaml", "--rate", "-3"], "load.rate"),
        (["run", "scenarios/quick.yaml", "--durability", "paranoid"], "durability"),
        (["run", "scenarios/quick.yaml", "--engines", ","], "--engines is empty"),
        (["run"], "the following arguments are required: scenario"),
        (["frobnicate"], "invalid choice"),
        (["analyze", "/nonexistent"], "not a durabench run directory"),
        (["check", "tests/e2e/bad.yaml"], "faults.0.target: expected a known target"),
        (["engines", "--cost", "--idle", "soon"], "--idle 'soon'"),
    ],
)
def test_user_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    proc = durabench(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("durabench: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_check_and_engines() -> None:
    proc = durabench("check", *sorted(str(p) for p in (ROOT / "scenarios").glob("*.yaml")))
    assert proc.returncode == 0, proc.stderr
    assert "quick.yaml: ok" in proc.stdout
    proc = durabench("engines")
    assert proc.returncode == 0
    for name in ("dbos", "dbos-go", "temporal", "temporal-local", "temporal-go", "celery", "memory", "absurd",
                 "procrastinate", "restate"):
        assert name in proc.stdout


def test_engines_cost_without_servers() -> None:
    """The static integration cost of every engine (servers not started: --idle 0s)."""
    proc = durabench("engines", "--cost", "--idle", "0s")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:] if line.strip()}
    for name in ("absurd", "restate", "procrastinate", "dbos", "temporal", "celery"):
        assert int(rows[name][1]) > 0, proc.stdout  # workflow lines counted from the adapter's declared files
    assert "claim_timeout_s" in proc.stdout and "visibility_timeout" in proc.stdout  # defaults moved, by name


def _summary(out: Path) -> tuple[Path, dict]:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_memory_engine_loses_work_and_the_checker_sees_it(tmp_path: Path) -> None:
    """The reference engine keeps state in RAM: a kill must show up as lost workflows."""
    proc = durabench("run", "tests/e2e/memory-kill.yaml", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    run_dir, summary = _summary(tmp_path)
    e = summary["engines"]["memory"]
    assert e["verdict"] == "violations"
    assert e["lost"] > 0 and e["lost"] == e["acknowledged"] - e["completed"]
    ids = json.loads((run_dir / "engines/memory/checker.json").read_text())["ids"]
    assert len(ids["lost"]) == e["lost"]
    assert e["recovery"][0]["affected"] >= e["lost"]
    assert e["worker_restarts"] == 1
    # analysis is a pure function of the files: rebuilding gives the same figures
    before = {k: v for k, v in summary.items() if k != "analyzed_at"}
    again = durabench("analyze", str(run_dir))
    assert again.returncode == 0, again.stderr
    _, rebuilt = _summary(tmp_path)
    assert {k: v for k, v in rebuilt.items() if k != "analyzed_at"} == before


def test_newer_results_format_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"schema_version": 999}))
    proc = durabench("analyze", str(run))
    assert proc.returncode == 2
    assert "newer than this durabench reads" in proc.stderr and "upgrade" in proc.stderr


@pytest.mark.real
def test_worker_kill_on_every_engine(tmp_path: Path) -> None:
    """A kill of worker:0 mid-load: DBOS, Temporal (Python and Go), absurd (a plugin distribution, lease
    recovery) and Restate (journal replay) lose nothing and re-run no completed step.

    temporal-local loses nothing either, but local activities are recorded only when the workflow
    task completes, so a crash re-runs steps that had finished: the checker must count that, not pass it.
    """
    env = {**os.environ}
    proc = subprocess.run([*DURABENCH, "run", "tests/e2e/kill.yaml", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[dbos] load" in proc.stderr  # progress was shown
    run_dir, summary = _summary(tmp_path)
    assert (run_dir / "report.md").is_file()
    for name in ("dbos", "dbos-go", "temporal", "temporal-local", "temporal-go", "celery", "absurd", "procrastinate",
                 "restate"):
        e = summary["engines"][name]
        assert e["status"] == "ok", e
        assert e["submitted"] >= 100
        assert e["acknowledged"] == e["submitted"]
        assert e["unexpected"] == 0
        assert e["worker_restarts"] == 1
        assert len(e["recovery"]) == 1
        assert e["e2e_latency_ms"]["count"] > 0
        assert name in (run_dir / "report.md").read_text()
        assert e["integration"]["workflow_lines"] > 0  # integration cost: the adapter's declared workflow code
    for name in ("dbos", "dbos-go", "temporal", "temporal-local", "temporal-go", "absurd", "procrastinate", "restate"):
        e = summary["engines"][name]
        assert e["lost"] == 0 and e["missing_steps"] == 0, (name, e)
        assert e["completed"] == e["submitted"]
    for name in ("dbos", "dbos-go", "temporal", "temporal-go", "absurd", "restate"):
        e = summary["engines"][name]
        assert e["replayed_completed_steps"] == 0, (name, e)
        assert e["verdict"] == "correct"
        rec = e["recovery"][0]
        if rec["affected"]:
            assert rec["all_done_s"] is not None and rec["first_progress_s"] is not None
    absurd = summary["engines"]["absurd"]
    claim_s = absurd["settings"]["claim_timeout_s"]
    if absurd["recovery"][0]["affected"]:  # the killed worker's tasks wait for their lease to expire
        assert absurd["recovery"][0]["first_progress_s"] >= claim_s - 1.0, absurd["recovery"][0]
    assert "claim_timeout_s=" in (run_dir / "report.md").read_text()  # the plugin's declared recovery settings
    # procrastinate: no checkpoints; the stalled-job sweep re-runs the killed worker's jobs, and a job killed
    # after it deferred the next step re-runs a step the chain had moved past: counted, not hidden
    proc = summary["engines"]["procrastinate"]
    assert proc["settings"]["stalled_sweep_cron"] and proc["duplicated_steps"] >= proc["replayed_completed_steps"]
    celery = summary["engines"]["celery"]
    # acks_late + the visibility timeout redeliver the killed steps; kombu's BRPOP-then-HSET window can
    # still lose a message (engines/celery/README.md), so the counts must add up rather than be zero
    assert celery["lost"] == celery["acknowledged"] - celery["completed"]
    assert celery["settings"]["task_acks_late"] is True


def test_an_interrupted_run_names_the_engine_and_analyze_reports_its_partial_results(tmp_path: Path) -> None:
    proc = subprocess.Popen([*DURABENCH, "run", "tests/e2e/memory-interrupt.yaml", "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # progress lines: wait until the measured window has begun and work completed
            if line.startswith("[memory] load") and "completed=" in line:
                t = float(line.split("t=")[1].split("s")[0])
                if t >= 3.0 and int(line.split("completed=")[1].split()[0]) > 10:
                    break
        else:
            raise AssertionError("the run ended before its load was under way")
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "partial results of memory" in rest and "Traceback" not in rest
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["interrupted"]["engine"] == "memory"
    assert manifest["engines"]["memory"]["interrupted"] is True
    again = durabench("analyze", str(run_dir))
    assert again.returncode == 0, again.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"]["engine"] == "memory"
    e = summary["engines"]["memory"]
    assert e["interrupted"] is True and e["verdict"] == "interrupted"
    assert e["completed"] > 10 and e["throughput_per_s"] > 0
    assert 1.0 < e["measured_window_s"] < 60  # the window ends where the records end, not at the planned 120 s
    assert "Interrupted part-way" in (run_dir / "report.md").read_text()
    assert "interrupted" in again.stdout  # the headline table's verdict column


@pytest.mark.real
def test_quiet_run_prints_only_durabenchs_own_lines(tmp_path: Path) -> None:
    """Engine client libraries in the driver (DBOSClient's retries during a store crash, Temporal's core) log to
    each engine's logs/driver.log: with --quiet, the terminal holds the headline table and the paths only."""
    proc = durabench("run", "tests/e2e/quiet-store-crash.yaml", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    run_dir, summary = _summary(tmp_path)
    lines = proc.stdout.splitlines()
    table = lines[: 2 + len(summary["engines"])]
    assert table[0].split()[:2] == ["engine", "verdict"] and set(table[1]) <= {"-", " "}
    assert [row.split()[0] for row in table[2:]] == list(summary["engines"])
    assert lines[len(table):] == ["", f"results: {run_dir}", f"report:  {run_dir / 'report.md'}"]
    # the libraries did log (the crash made DBOSClient retry): into the file, not the terminal
    assert "WARNING dbos" in (run_dir / "engines" / "dbos" / "logs" / "driver.log").read_text()
