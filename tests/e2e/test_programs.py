"""Workflow programs under faults, through the CLI: a worker kill during a call and during a sleep,
a store restart during a wait for a signal (memory for breadth, real engines per fault; Restate
beside Temporal for timers)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness import ledger
from tests.e2e.test_faults import run

pytestmark = [pytest.mark.e2e, pytest.mark.real]


def test_kill_during_a_call(tmp_path: Path) -> None:
    run_dir, summary = run("tests/e2e/program-kill-call.yaml", tmp_path)
    memory, dbos = summary["engines"]["memory"], summary["engines"]["dbos"]
    assert memory["lost"] > 0  # the reference engine keeps nothing: the kill loses its workflows
    assert dbos["lost"] == 0 and dbos["completed"] == dbos["submitted"] > 0, dbos
    assert dbos["program"]["counts"]["effects_duplicated"] == dbos["program"]["counts"]["effects_missing"] == 0
    api = [r for r in ledger.read_dir(run_dir / "engines/dbos/history") if r["ev"] == "api_request"]
    statuses = Counter(str(r["status"]) for r in api)
    assert statuses["abandoned"] > 0  # calls cut by the kill reached the API and were never answered
    assert dbos["program"]["calls"]["retry_amplification"] > 1.0  # ... and were made again after recovery
    checker = json.loads((run_dir / "engines/dbos/checker.json").read_text())
    assert checker["counts"]["calls_without_success"] == 0


def test_kill_during_a_sleep(tmp_path: Path) -> None:
    run_dir, summary = run("tests/e2e/program-kill-sleep.yaml", tmp_path)
    for name in ("temporal", "restate"):
        e = summary["engines"][name]
        assert e["lost"] == 0 and e["completed"] == e["submitted"] > 0, (name, e)
        timers = e["program"]["timers"]
        assert e["program"]["counts"]["timers_early"] == 0, name
        assert timers["lateness_ms"]["count"] == e["completed"], name
        assert timers["lateness_across_faults_ms"]["count"] > 0, name  # timers that spanned the kill fired after it
    assert (run_dir / "charts" / "timer-lateness.png").is_file()


def test_store_restart_during_a_wait_for_a_signal(tmp_path: Path) -> None:
    _, summary = run("tests/e2e/program-store-signal.yaml", tmp_path)
    e = summary["engines"]["dbos"]
    assert e["lost"] == 0 and e["completed"] == e["submitted"] > 0, e
    counts = e["program"]["counts"]
    assert counts["signals_lost"] == counts["signals_duplicated"] == 0
    assert e["program"]["signals"]["sent"] == e["completed"]
    assert e["recovery"][0]["kind"] == "restart-store"
