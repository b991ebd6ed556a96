"""Every fault kind against real servers, through the CLI; the checker's attribution of losses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ledger
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.real]


def run(scenario: str, out: Path, *flags: str) -> tuple[Path, dict]:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", scenario, "--out", str(out), "--quiet", *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_every_fault_kind_on_dbos(tmp_path: Path) -> None:
    run_dir, summary = run("tests/e2e/all-faults.yaml", tmp_path)
    e = summary["engines"]["dbos"]
    kinds = [f["kind"] for f in e["recovery"]]
    assert kinds == ["kill-worker", "pause-worker", "latency", "partition", "reset-connections", "restart-store"]
    for fault in e["recovery"]:
        assert fault["end_s"] is not None and fault["end_s"] >= fault["start_s"], fault
    pause = e["recovery"][1]
    assert 1.4 <= pause["end_s"] - pause["start_s"] < 1.5 + 5.0  # ends once its 1.5 s are over (slack: a busy machine)
    counts = {k: e[k] for k in ("submitted", "acknowledged", "completed", "failed", "unknown", "resolved_unknown",
                                "lost", "unfinished")}
    assert e["lost"] == 0 and e["replayed_completed_steps"] == 0, counts
    # Every workflow the engine accepted completed, or the engine still holds it and a fault explains it: DBOS 3.4
    # can leave a claim whose commit's reply a fault cut off PENDING on a live worker, which recovers it only at
    # its next start (seen once in CI: reset-connections 59 ms after worker:1 claimed two workflows).
    assert e["completed"] + e["unfinished"] == e["acknowledged"] > 0, counts
    assert e["unfinished"] <= 10, counts
    checker = json.loads((run_dir / "engines/dbos/checker.json").read_text())
    explained = {wf for fault in checker["faults"].values() for wf in fault["unfinished"]}
    assert set(checker["ids"]["unfinished"]) <= explained, checker["faults"]
    for wf, ev in checker["unfinished_evidence"].items():  # the engine holds it, and the evidence says how
        assert ev["engine_status"] in ("PENDING", "ENQUEUED") and ev["state"] != "unknown", (wf, ev)
    assert e["verdict"] == ("violations" if e["unfinished"] else "correct"), e["verdict"]  # stuck is not correct
    # A submission may fail while the store is cut off or restarting (the client's INSERT cannot commit): never
    # a loss, and only when a store-side fault overlapped it (from its send to its failure; 2 s for reconnecting).
    assert e["failed"] + e["unknown"] <= 10, counts
    records = ledger.read_dir(run_dir / "engines/dbos/history")
    ends = {r["fault_id"]: r["ns"] for r in records if r["ev"] == "fault_end"}
    windows = [(r["ns"], ends.get(r["fault_id"], r["ns"]) + 2_000_000_000) for r in records
               if r["ev"] == "fault_start" and r["kind"] not in ("kill-worker", "pause-worker")]
    refused = [r for r in records if r["ev"] == "ack" and r["outcome"] != "ok"]
    for r in refused:
        assert r["error"] and any(r["sent_ns"] <= end and r["ns"] >= start for start, end in windows), (r, windows)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    proxied = manifest["engines"]["dbos"]["services"]["postgres"]["proxied_url"]
    assert proxied != manifest["engines"]["dbos"]["services"]["postgres"]["url"]


@pytest.mark.parametrize("profile", ["strict", "volatile"])
def test_store_crash_with_a_backlog(profile: str, tmp_path: Path) -> None:
    run_dir, summary = run("tests/e2e/backlog-store-crash.yaml", tmp_path, "--durability", profile)
    e = summary["engines"]["celery"]
    assert summary["durability"] == profile
    crash = e["recovery"][1]
    assert crash["kind"] == "restart-store"
    checker = json.loads((run_dir / "engines/celery/checker.json").read_text())
    if profile == "strict":  # AOF with appendfsync always: the backlog survives the crash
        assert e["lost"] == 0, e
    else:  # no persistence: the queued backlog dies with the server, and the checker names it
        assert e["lost"] > 0, e
        assert set(checker["ids"]["lost"]) <= set(checker["faults"]["f1"]["affected"])
        assert crash["affected_unfinished"] == e["lost"]
