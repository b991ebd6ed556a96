"""The Go engines' workflow programs through the CLI: a worker kill inside calls, a worker kill inside
durable sleeps, a store restart while workflows wait for signals (tests/e2e/programs-go.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import ledger
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.real]

ENGINES = ("dbos-go", "temporal-go")
# DBOS-Go checkpoints a sleep's wake-up time in whole milliseconds, rounded down (dbos/workflow.go:
# Sleep stores deadline.UnixMilli()), so its timers may fire up to 1 ms before the ledger's due time.
EARLY_TOLERANCE_MS = {"dbos-go": 1.0, "temporal-go": 0.0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("programs-go")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "tests/e2e/programs-go.yaml", "--out", str(out),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = [p for p in out.iterdir() if p.is_dir()]
    return path


def _by_wf(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(events, key=lambda e: e["ns"]):
        if "wf" in e:
            out.setdefault(e["wf"], []).append(e)
    return out


def _first(records: list[dict[str, Any]], ev: str, **match: Any) -> dict[str, Any] | None:
    return next((r for r in records if r["ev"] == ev and all(r.get(k) == v for k, v in match.items())), None)


@pytest.mark.parametrize("engine", ENGINES)
def test_faults_inside_calls_sleeps_and_signal_waits(engine: str, run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())["engines"][engine]
    assert summary["status"] == "ok", summary.get("error")
    assert summary["completed"] == summary["acknowledged"] == summary["submitted"] > 0, summary
    assert summary["lost"] == summary["unknown"] == summary["unexpected"] == 0, summary
    program = summary["program"]
    counts = program["counts"]
    for check in ("effects_duplicated", "effects_missing", "signals_lost", "signals_duplicated", "signals_timed_out",
                  "calls_without_success"):
        assert counts[check] == 0, (check, counts)
    assert program["effects"]["rows"] == summary["completed"]  # one row per workflow: the key deduplicated
    assert program["calls"]["logical_calls"] == summary["completed"]
    assert program["calls"]["retry_amplification"] >= 1.0

    checker = json.loads((run_dir / "engines" / engine / "checker.json").read_text())
    lateness = checker["program"]["timers"]["lateness_values_ms"]
    assert len(lateness) == summary["completed"], "every workflow's timer fired"
    assert min(lateness) >= -EARLY_TOLERANCE_MS[engine], sorted(lateness)[:5]

    events = ledger.read_dir(run_dir / "engines" / engine / "history")
    faults = sorted((e for e in events if e["ev"] == "fault_start"), key=lambda e: e["ns"])
    ends = {e["fault_id"]: e["ns"] for e in events if e["ev"] == "fault_end"}
    assert [f["kind"] for f in faults] == ["kill-worker", "kill-worker", "restart-store"]
    kill_call, kill_sleep, restart = faults
    flows = _by_wf(events)

    def call_in_flight(records: list[dict[str, Any]]) -> bool:
        """A call attempt started by a killed process before the kill and never answered there."""
        pids = set(kill_call["pids"].values())
        starts = [r for r in records if r["ev"] == "step_start" and r["step"] == 0 and r["pid"] in pids
                  and r["ns"] < kill_call["ns"]]
        return any(not any(r["ev"] == "call_attempt" and r["pid"] == s["pid"] and r["ns"] > s["ns"] for r in records)
                   for s in starts)

    def sleep_spanning(records: list[dict[str, Any]]) -> bool:
        """A timer armed before the kill (every worker died), fired after it."""
        armed, fired = _first(records, "timer_set", step=1), _first(records, "timer_fired", step=1)
        return armed is not None and fired is not None and armed["ns"] < kill_sleep["ns"] < fired["ns"]

    def waiting_through(records: list[dict[str, Any]]) -> bool:
        """Waiting for its signal before the store went down, received it after the store was back."""
        wait, got = _first(records, "signal_wait", step=2), _first(records, "signal_received", step=2)
        back_ns = ends[restart["fault_id"]]
        return wait is not None and got is not None and wait["ns"] < restart["ns"] and got["ns"] > back_ns

    hit_calls = [wf for wf, rs in flows.items() if call_in_flight(rs)]
    hit_sleeps = [wf for wf, rs in flows.items() if sleep_spanning(rs)]
    hit_waits = [wf for wf, rs in flows.items() if waiting_through(rs)]
    assert hit_calls, "the first kill landed inside no call"
    assert hit_sleeps, "the second kill landed inside no sleep"
    assert hit_waits, "the store restart found no workflow waiting for its signal"
    completed = set(checker["ids"]["completed"])
    assert set(hit_calls) | set(hit_sleeps) | set(hit_waits) <= completed
