"""A run against a server durabench did not start: a PostgreSQL the test starts separately stands in
for the user's own. Faults that need process control of it are refused at check time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.run import services
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.real]
DURABENCH = [sys.executable, "-m", "harness.cli"]

SCENARIO = """\
name: external
engines: [dbos]
workload: {{steps: 2, step_duration: 20ms, payload_bytes: 16}}
load: {{rate: 20, warmup: 0.5s, duration: 3s, drain_timeout: 30s}}
workers: {{count: 2}}
floors: {{enabled: true, iterations: 20, rate_duration: 0.5s, workflow_duration: 0s}}
services:
  postgres: {{url: "{url}"}}
faults:
{faults}
"""


def durabench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DURABENCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_dbos_on_an_external_postgres(tmp_path: Path) -> None:
    with services.running(["postgres"], tmp_path / "theirs", "relaxed") as theirs:  # the user's server
        url = theirs.endpoints["postgres"]
        refused = tmp_path / "refused.yaml"
        refused.write_text(SCENARIO.format(url=url, faults="  - {kind: restart-store, at: 1s}"))
        proc = durabench("check", str(refused))
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "needs process control of postgres" in line and "external server services.postgres" in line
        good = tmp_path / "external.yaml"
        good.write_text(SCENARIO.format(url=url, faults="  - {kind: latency, at: 1s, duration: 1s, latency: 5ms}"))
        proc = durabench("run", str(good), "--out", str(tmp_path / "out"), "--quiet")
        assert proc.returncode == 0, proc.stderr[-3000:]
        own = theirs.services["postgres"].proc
        assert own is not None and own.poll() is None  # durabench neither stopped nor restarted their server
    (run_dir,) = list((tmp_path / "out").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    pg = manifest["engines"]["dbos"]["services"]["postgres"]
    assert pg["external"] is True and pg["profile"] == "external" and pg["argv"] == []
    assert pg["settings"]["synchronous_commit"] == "off"  # read from the server (it runs relaxed), not the profile's
    assert pg["version"].startswith("PostgreSQL 18")
    assert pg["proxied_url"] != pg["url"]  # the latency fault went through the harness's proxy
    e = json.loads((run_dir / "summary.json").read_text())["engines"]["dbos"]
    assert e["verdict"] == "correct" and e["completed"] == e["submitted"] == 70
    assert e["floors"]["postgres"]["commit_rtt_ms"]["count"] == 20  # floors measured on their server
