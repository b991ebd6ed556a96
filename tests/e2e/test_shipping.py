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
    for name in ("dbos",):
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


@pytest.mark.e2e
@pytest.mark.real
def test_a_remote_worker_host_sigkilled_mid_run_loses_nothing(tmp_path: Path) -> None:
    """worker:1 on a second "host" (its own directory and processes, started by this test from the
    command durabench prints), SIGKILLed mid-load with its shipper and restarted: exact checker counts."""
    import os
    import re
    import signal
    import threading
    import time

    run = subprocess.Popen([*DURABENCH, "run", "tests/e2e/remote.yaml", "--out", str(tmp_path / "out")], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert run.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(run.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    host_b = tmp_path / "host-b"
    host_b.mkdir()
    hosts: list[subprocess.Popen[bytes]] = []

    def start_host(command: list[str]) -> None:
        hosts.append(subprocess.Popen([*DURABENCH, *command, "--spool", str(host_b / "spool")], cwd=host_b,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    try:
        deadline = time.monotonic() + 120
        command = None
        while command is None and time.monotonic() < deadline:
            found = [re.search(r"durabench (worker --run \S+ --index 1)", line) for line in list(lines)]
            command = next((m.group(1).split() for m in found if m), None)
            time.sleep(0.1)
        assert command is not None, "".join(lines)
        start_host(command)
        ledger_b = host_b / "spool"
        while time.monotonic() < deadline:  # kill it once it has run steps
            if any('"step_end"' in p.read_text() for p in ledger_b.glob("worker-1.*.jsonl")):
                break
            time.sleep(0.1)
        os.killpg(hosts[0].pid, signal.SIGKILL)  # the host's durabench worker, its shipper, and (PDEATHSIG) its worker
        hosts[0].wait(10)
        start_host(command)  # its supervisor (here: the test) restarts it on the same spool
        run.wait(timeout=600)
        reader.join(10)
        assert run.returncode == 0, "".join(lines)[-3000:]
        assert hosts[1].wait(60) == 0  # asked by the run to stop, it shipped everything and confirmed
    finally:
        for host in hosts:
            if host.poll() is None:
                os.killpg(host.pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    edir = run_dir / "engines" / "dbos"
    spooled = sorted((host_b / "spool").glob("worker-1.*.jsonl"))
    assert len(spooled) == 2  # the killed worker process and its successor
    for path in spooled + sorted((edir / "hosts").glob("worker-0/*.jsonl")):
        assert (edir / "history" / path.name).read_bytes() == path.read_bytes(), path.name
    e = json.loads((run_dir / "summary.json").read_text())["engines"]["dbos"]
    assert e["verdict"] == "correct", e
    assert e["completed"] == e["submitted"] == e["acknowledged"] and e["lost"] == 0 and e["missing_steps"] == 0
    assert e["worker_restarts"] == 1  # the supervisor's; the remote host's restart is its own business
    ran_on = {r["src"] for p in (edir / "history").glob("worker-*.jsonl") for r in map(json.loads, p.open())}
    assert ran_on == {"worker:0", "worker:1"}
