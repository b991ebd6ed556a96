"""Workers that ship their ledger: everything a worker wrote reaches the run's history, even when its
host (worker and shipper together) is SIGKILLed mid-load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.run.shipping import Collector
from tests.conftest import ROOT

DURABENCH = [sys.executable, "-m", "harness.cli"]


def test_collector_appends_once_skips_overlaps_and_reports_gaps(tmp_path: Path) -> None:
    c = Collector(tmp_path)
    a, b = b'{"ev":"a"}\n', b'{"ev":"b"}\n'
    assert c.append("worker-0.1.jsonl", 0, a) == (200, len(a))
    assert c.append("worker-0.1.jsonl", 0, a + b) == (200, len(a + b))  # a retry that overlaps: only b is new
    assert c.append("worker-0.1.jsonl", 0, a) == (200, len(a + b))  # a full retry: nothing written
    assert c.append("worker-0.1.jsonl", 99, a) == (409, len(a + b))  # a gap: the shipper resends from here
    assert (tmp_path / "worker-0.1.jsonl").read_bytes() == a + b
    assert c.offsets() == {"worker-0.1.jsonl": len(a + b)}


@pytest.mark.e2e
@pytest.mark.real
def test_shipped_ledgers_are_complete_after_sigkilled_hosts(tmp_path: Path) -> None:
    proc = subprocess.run([*DURABENCH, "run", "tests/e2e/shipped.yaml", "--out", str(tmp_path), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    for name in ("memory", "dbos"):
        edir = run_dir / "engines" / name
        spooled = sorted((edir / "hosts").glob("worker-*/*.jsonl"))
        # two hosts, each killed once: four worker processes, each with its own ledger file
        assert len(spooled) == 4, spooled
        for path in spooled:  # byte for byte: every record any worker wrote is in the run's history
            assert (edir / "history" / path.name).read_bytes() == path.read_bytes(), path.name
        e = summary["engines"][name]
        assert e["worker_restarts"] == 2 and e["unexpected"] == 0
        assert e["lost"] == e["acknowledged"] - e["completed"]
    dbos = summary["engines"]["dbos"]
    assert dbos["verdict"] == "correct", dbos
    assert dbos["completed"] == dbos["submitted"] and dbos["missing_steps"] == 0
    assert dbos["replayed_completed_steps"] == 0
