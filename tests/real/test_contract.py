"""The contract suite: every adapter, against real servers started by the harness."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from harness import ledger, registry
from harness.contract import EngineClient, EngineContext, Workload
from harness.ledger import Follower
from harness.run import services
from harness.run.driver import LiveView
from harness.supervisor import Supervisor

# every registered engine (in-repo adapters and plugin distributions alike), or DURABENCH_ENGINES=a,b
ENGINES = os.environ["DURABENCH_ENGINES"].split(",") if os.environ.get("DURABENCH_ENGINES") else registry.names()
WORKFLOWS = 20
WORKLOAD = Workload(steps=3, step_duration_s=0.02, payload_bytes=128)
TIMEOUT_S = 60.0

pytestmark = pytest.mark.real


@pytest.mark.parametrize("name", ENGINES)
def test_adapter_contract(name: str, tmp_path: Path) -> None:
    engine = registry.load(name)
    assert engine.name == name
    reason = engine.unavailable_reason()
    if reason and not reason.startswith("pip install"):  # a toolchain outside PyPI (Go, npm) is missing
        pytest.skip(f"{name}: {reason}")
    assert reason is None
    assert engine.description and "\n" not in engine.description
    settings = engine.default_settings(WORKLOAD, 2)
    assert isinstance(settings, dict)
    assert engine.versions()
    with services.running(engine.services, tmp_path / "logs") as svc:
        assert set(engine.services) <= set(svc.endpoints)  # a service may add endpoints (restate-admin)
        ledger_dir = tmp_path / "history"
        ledger_dir.mkdir()
        ctx = EngineContext(name, "c0ffee00", svc.endpoints, WORKLOAD, 2, settings, tmp_path, ledger_dir)
        engine.prepare(ctx)
        sup = Supervisor(engine, ctx, 2, 0.5, ledger.Ledger(ledger_dir, "supervisor"))
        sup.start()
        try:
            asyncio.run(_exercise(engine, ctx, sup))
        finally:
            sup.stop()
    for i in range(2):
        assert sup.slots[i].proc is not None and sup.slots[i].proc.poll() is not None


async def _exercise(engine: object, ctx: EngineContext, sup: Supervisor) -> None:
    view = LiveView(WORKLOAD.steps, Follower(ctx.ledger_dir))
    deadline = time.monotonic() + TIMEOUT_S
    while {"worker:0", "worker:1"} - view.ready.keys():
        assert time.monotonic() < deadline, f"workers not ready; logs in {ctx.work_dir / 'logs'}"
        view.poll()
        await asyncio.sleep(0.02)
    client: EngineClient = await engine.open_client(ctx)  # type: ignore[attr-defined]
    assert isinstance(client, EngineClient)
    ids = [f"{ctx.engine}-contract-{i}" for i in range(WORKFLOWS)]
    submitted_ns = time.time_ns()
    await asyncio.gather(*(client.submit(wf) for wf in ids))
    follow = asyncio.create_task(view.follow())
    try:
        await asyncio.wait_for(asyncio.gather(*(view.wait_completed(wf) for wf in ids)), TIMEOUT_S)
    finally:
        follow.cancel()
    records = await client.lookup([*ids, "never-submitted"])
    deadline = time.monotonic() + TIMEOUT_S
    while any(records[wf].status == "pending" for wf in ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the engine records completion after the last step's ledger record
        records.update(await client.lookup(ids))
    await client.close()
    assert records["never-submitted"].status == "not_found"
    events = ledger.read_dir(ctx.ledger_dir)
    for wf in ids:
        rec = records[wf]
        assert rec.status == "completed", (wf, rec)
        starts = [(e["step"], e["ns"]) for e in events if e["ev"] == "step_start" and e.get("wf") == wf]
        ends = [e["ns"] for e in events if e["ev"] == "step_end" and e.get("wf") == wf]
        assert [s for s, _ in starts] == list(range(WORKLOAD.steps)), "each step exactly once, in order"
        if rec.completed_ns is not None:
            # the engine records completion after the last step ended (clock granularity: 1 ms)
            assert max(ends) - 2_000_000 <= rec.completed_ns <= time.time_ns()
            assert rec.completed_ns >= submitted_ns
    ready = [e for e in events if e["ev"] == "ready"]
    assert {e["src"] for e in ready} == {"worker:0", "worker:1"}
