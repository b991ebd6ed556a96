"""Long jobs on Temporal (scenarios/usecases/background-jobs-long.yaml, shrunk): with activity
heartbeats a killed job is retried after the heartbeat timeout, long before its start-to-close
(600 s here, beyond the drain): nothing lost, the re-run counted as a killed execution (work lost),
not as a duplicate without a fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.real]

SCENARIO = """
name: heartbeats
usecase: background-jobs
engines: [temporal]
workload: {steps: 1, step_duration: 4s, payload_bytes: 16}
load: {rate: 1, warmup: 0s, duration: 3s, drain_timeout: 40s, drain_quiet: 20s}
workers: {count: 1, restart_delay: 500ms}
faults: [{kind: kill-worker, target: "worker:0", at: 2.5s}]
floors: {enabled: false}
resources: {interval: 0}
engine_settings:
  temporal: {activity_start_to_close_s: 600, activity_heartbeat_timeout_s: 1}
"""


def test_heartbeats_resume_a_killed_long_job_before_start_to_close(tmp_path: Path) -> None:
    path = tmp_path / "heartbeats.yaml"
    path.write_text(SCENARIO)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--out", str(tmp_path / "out"),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    e = json.loads((run_dir / "summary.json").read_text())["engines"]["temporal"]
    assert e["settings"]["activity_heartbeat_timeout_s"] == 1
    assert e["submitted"] == 3 and e["completed"] == 3 and e["lost"] == 0, e  # start-to-close alone: lost
    assert e["duplicated_steps"] >= 1  # the jobs in flight at the kill ran again
    assert e["reexecution"]["duplicates_without_fault"] == 0
    assert e["reexecution"]["wasted_executions"] == e["extra_step_executions"]
    assert e["reexecution"]["work_lost_s"] > 0
    report = (run_dir / "report.md").read_text()
    assert "## Use case" in report and "| temporal |" in report.split("## Use case", 1)[1]
