"""The contract suite for workflow programs: every adapter runs a program with every stage kind
against real servers (the flaky API and the application database included), or declares the
kinds it does not run with a reason and runs the rest. Its work stage draws a uniform duration: every
engine's workers must sleep the duration drawn for (seed, workflow, step) (harness/program.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness import ledger, program, registry, scenario
from harness.analysis.program_checks import TIMER_RESOLUTION_MS
from harness.contract import SignalClient, stage_support
from harness.ledger import Follower
from harness.run import appdb, services
from harness.run.driver import LiveView
from harness.run.flaky_api import FlakyApi
from harness.supervisor import Supervisor

ENGINES = os.environ.get("DURABENCH_ENGINES",
                         "memory,dbos,dbos-go,temporal,temporal-local,temporal-go,celery,restate,absurd,procrastinate").split(",")
WORKFLOWS = 3
TIMEOUT_S = 90.0
SEED = 7  # not the default: the seed must reach every worker (its work durations depend on it)
STAGES: list[dict[str, Any]] = [
    {"kind": "work", "duration": {"dist": "uniform", "min": "5ms", "max": "15ms"}},
    {"kind": "call", "retry": {"max_attempts": 10, "initial_backoff": "50ms", "max_backoff": "200ms",
                               "attempt_timeout": "2s"}},
    {"kind": "parallel", "branches": 2, "program": [{"kind": "work", "duration": "10ms"}, {"kind": "call"}]},
    {"kind": "sleep", "duration": "1s"},
    {"kind": "wait_signal", "delay": "200ms", "timeout": "30s"},
    {"kind": "effect", "idempotency": "none"},
    {"kind": "effect", "idempotency": "key"},
]
API = {"latency": "5ms", "error_rate": 0.3}

pytestmark = pytest.mark.real


def _workload(kinds_left_out: set[str]) -> Any:
    stages = [s for s in STAGES if s["kind"] not in kinds_left_out]
    for s in stages:  # a branch's call uses the default policy: make it quick
        for sub in s.get("program", []):
            if sub["kind"] == "call":
                sub["retry"] = STAGES[1]["retry"]
    # the flaky API's behaviour only with a call stage (the schema refuses it otherwise)
    api = {"api": API} if "call" not in kinds_left_out else {}
    doc = {"name": "contract", "engines": ["memory"], "workload": {"program": stages, **api}}
    return scenario.parse(doc, "contract").workload.to_workload(SEED)


@pytest.mark.parametrize("name", ENGINES)
def test_adapter_runs_every_stage_kind_or_says_why_not(name: str, tmp_path: Path) -> None:
    engine = registry.load(name)
    reason = engine.unavailable_reason()
    if reason and name.endswith("-go"):  # as tests/real/test_contract.py: no Go toolchain here
        pytest.skip(f"{name}: {reason}")
    support = stage_support(engine)
    unsupported = {kind for kind, why in support.items() if why is not None}
    for kind in unsupported:
        why = support[kind]
        assert why and "\n" not in why, f"{name} must say in one line why it does not run {kind}"
    assert "work" not in unsupported
    workload = _workload(unsupported)
    api = {"latency": {"dist": "fixed", "value_s": 0.005}, "error_rate": 0.3, "hang_rate": 0.0,
           "rate_limit": 0.0, "burst": 0, "seed": 5}
    ledger_dir = _run(engine, name, workload, api, tmp_path)
    _check(tmp_path, ledger_dir, workload, name)


def _run(engine: Any, name: str, workload: Any, api_config: dict[str, Any], tmp_path: Path) -> Path:
    """Run WORKFLOWS workflows of ``workload`` on ``engine`` against real servers, the flaky API
    (``api_config``) and the application database; return the history directory."""
    settings = engine.default_settings(workload, 2)
    needed = [*engine.services, *(["postgres"] if "postgres" not in engine.services else [])]
    ledger_dir = tmp_path / "history"
    ledger_dir.mkdir()
    with services.running(needed, tmp_path / "logs") as svc:
        api = FlakyApi(api_config, tmp_path, ledger_dir)
        api.start()
        try:
            endpoints = {**svc.endpoints, "flaky_api": api.url}
            endpoints["app_db"] = appdb.create(svc.endpoints["postgres"], svc.endpoints["postgres"])
            from harness.contract import EngineContext

            ctx = EngineContext(name, "c0ffee01", endpoints, workload, 2, settings, tmp_path, ledger_dir)
            engine.prepare(ctx)
            sup = Supervisor(engine, ctx, 2, 0.5, ledger.Ledger(ledger_dir, "supervisor"))
            sup.start()
            try:
                asyncio.run(_exercise(engine, ctx, workload))
            finally:
                sup.stop()
            appdb.dump(svc.endpoints["postgres"], tmp_path / "effects.json")
        finally:
            api.stop()
    return ledger_dir


# engines whose call stages honour a 429's Retry-After-Ms through their own retry mechanism (README)
RETRY_AFTER_ENGINES = [e for e in ENGINES if e in ("restate",)]


@pytest.mark.parametrize("name", RETRY_AFTER_ENGINES)
def test_a_rate_limited_call_is_retried_no_sooner_than_retry_after(name: str, tmp_path: Path) -> None:
    """A bucket of one request per second and a 50 ms backoff: a retry that ignored Retry-After-Ms
    would come back after 50 ms; the engine must wait the API's delay."""
    engine = registry.load(name)
    doc = {"name": "contract", "engines": ["memory"], "workload": {
        "program": [{"kind": "call", "retry": {"max_attempts": 20, "initial_backoff": "50ms",
                                               "max_backoff": "50ms", "attempt_timeout": "2s"}}],
        "api": {"latency": "5ms", "rate_limit": 1, "burst": 1}}}
    workload = scenario.parse(doc, "contract").workload.to_workload(1)
    api = {"latency": {"dist": "fixed", "value_s": 0.005}, "error_rate": 0.0, "hang_rate": 0.0,
           "rate_limit": 1.0, "burst": 1, "seed": 5}
    ledger_dir = _run(engine, name, workload, api, tmp_path)
    attempts: dict[str, list[dict[str, Any]]] = {}
    for e in ledger.read_dir(ledger_dir):
        if e["ev"] == "call_attempt":
            attempts.setdefault(e["wf"], []).append(e)
    limited = 0
    for wf, tries in attempts.items():
        tries.sort(key=lambda e: e["sent_ns"])
        assert tries[-1]["status"] == 200, (wf, tries)
        for first, then in itertools.pairwise(tries):
            if first["status"] == 429 and first["retry_after_s"]:
                limited += 1
                waited_s = (then["sent_ns"] - first["sent_ns"]) / 1e9
                assert waited_s >= first["retry_after_s"], (wf, waited_s, first)
    assert limited >= 1, "the rate limit answered no 429: the test exercised nothing"


async def _exercise(engine: Any, ctx: Any, workload: Any) -> None:
    view = LiveView(workload.steps, Follower(ctx.ledger_dir))
    deadline = time.monotonic() + TIMEOUT_S
    while {"worker:0", "worker:1"} - view.ready.keys():
        assert time.monotonic() < deadline, f"workers not ready; logs in {ctx.work_dir / 'logs'}"
        view.poll()
        await asyncio.sleep(0.02)
    client = await engine.open_client(ctx)
    ids = [f"{ctx.engine}-program-{i}" for i in range(WORKFLOWS)]
    await asyncio.gather(*(client.submit(wf) for wf in ids))
    stages = {s["step"]: s for s in program.walk(workload.program)}
    try:
        while not all(wf in view.completed for wf in ids):
            assert time.monotonic() < deadline + TIMEOUT_S, f"not all completed; logs in {ctx.work_dir / 'logs'}"
            view.poll()
            while view.new_waits:  # the driver's part: answer each wait with its signal
                wf, step, _ = view.new_waits.pop(0)
                assert isinstance(client, SignalClient)
                await client.signal(wf, stages[step]["signal"], f"{wf}#{step}#1")
            await asyncio.sleep(0.05)
    finally:
        await client.close()


def _check(tmp_path: Path, ledger_dir: Path, workload: Any, name: str) -> None:
    from harness import results

    events = ledger.read_dir(ledger_dir)
    stages = list(program.walk(workload.program))
    rows = Counter((r["wf"], r["step"]) for r in results.read_json(tmp_path / "effects.json")["rows"])
    for i in range(WORKFLOWS):
        wf = f"{name}-program-{i}"
        mine = [e for e in events if e.get("wf") == wf]
        for stage in stages:
            step, kind = stage["step"], stage["kind"]
            evs = Counter(e["ev"] for e in mine if e.get("step") == step)
            if kind in ("work", "call", "effect"):
                assert evs["step_end"] >= 1, (wf, stage)
            if kind == "work":  # every execution slept the duration drawn for (seed, workflow, step): the same
                # on every engine (the ids' sequence numbers are) and on a re-execution (docs/engines.md)
                want_s = program.step_draw_s(stage["duration"], SEED, wf, step)
                drawn = [e["duration_s"] for e in mine if e["ev"] == "step_start" and e["step"] == step]
                assert drawn and drawn == pytest.approx([want_s] * len(drawn), rel=1e-9), (wf, step, drawn, want_s)
            if kind == "call":
                api = [e for e in mine if e["ev"] == "api_request" and e["step"] == step]
                assert any(e["status"] == 200 for e in api), (wf, step, api)
            if kind == "effect":
                assert rows[(wf, step)] == 1, (wf, step, "applied once, from the application table")
            if kind == "sleep":
                due = min(e["due_ns"] for e in mine if e["ev"] == "timer_set" and e["step"] == step)
                fired = min(e["ns"] for e in mine if e["ev"] == "timer_fired" and e["step"] == step)
                # within the checker's resolution of stored deadlines (DBOS-Go keeps whole milliseconds)
                assert fired >= due - TIMER_RESOLUTION_MS * 1e6, (wf, "timer fired early", (fired - due) / 1e6)
            if kind == "wait_signal":
                got = [e for e in mine if e["ev"] == "signal_received" and e["step"] == step]
                assert got and got[0]["payload"] == f"{wf}#{step}#1"
            if kind == "parallel":
                assert {e["branch"] for e in mine if e["ev"] == "branch_end" and e["step"] == step} == {0, 1}
                assert evs["join"] >= 1
