"""Temporal's lookup answers later batches from the visibility listing it already made.

The run's final lookup goes in batches (runner.LOOKUP_BATCH); listing the whole task queue for every
batch made it quadratic in the run's workflows. Against the real dev server: batched lookups list
once and give the same records as one lookup of every id.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from harness import ledger, registry
from harness.contract import EngineContext, Workload
from harness.run import services
from harness.supervisor import Supervisor

pytestmark = pytest.mark.real
WORKLOAD = Workload(steps=1, step_duration_s=0.0, payload_bytes=16)
WORKFLOWS = 30
BATCH = 5
TIMEOUT_S = 60.0


def test_batched_lookups_list_once(tmp_path: Path) -> None:
    engine = registry.load("temporal")
    if reason := engine.unavailable_reason():
        pytest.skip(reason)
    settings = engine.default_settings(WORKLOAD, 1)
    with services.running(engine.services, tmp_path / "logs") as svc:
        history = tmp_path / "history"
        history.mkdir()
        ctx = EngineContext("temporal", "100c0ffe", svc.endpoints, WORKLOAD, 1, settings, tmp_path, history)
        engine.prepare(ctx)
        sup = Supervisor(engine, ctx, 1, 0.5, ledger.Ledger(ctx.ledger_dir, "supervisor"))
        sup.start()
        try:
            asyncio.run(_check(engine, ctx))
        finally:
            sup.stop()


async def _check(engine: Any, ctx: EngineContext) -> None:
    ids = [f"lookup-{i}" for i in range(WORKFLOWS)]
    client = await engine.open_client(ctx)
    await asyncio.gather(*(client.submit(wf) for wf in ids))
    deadline = time.monotonic() + TIMEOUT_S
    whole = await client.lookup(ids)
    while any(r.status != "completed" for r in whole.values()):
        assert time.monotonic() < deadline, {wf: r.status for wf, r in whole.items() if r.status != "completed"}
        await asyncio.sleep(0.2)
        whole = await client.lookup(ids)

    fresh = await engine.open_client(ctx)  # an empty cache, as the runner's client at the end of a run
    listings = 0
    list_workflows = fresh._client.list_workflows

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal listings
        listings += 1
        return list_workflows(*args, **kwargs)

    fresh._client.list_workflows = counted
    batched: dict[str, Any] = {}
    for i in range(0, WORKFLOWS, BATCH):
        batched.update(await fresh.lookup(ids[i : i + BATCH]))
    assert listings == 1
    # visibility stores close times to the microsecond, describe() to the nanosecond
    assert {wf: (r.status, r.completed_ns // 1000) for wf, r in batched.items()} == \
        {wf: (r.status, r.completed_ns // 1000) for wf, r in whole.items()}
    unknown = await fresh.lookup(["never-submitted"])
    assert unknown["never-submitted"].status == "not_found"
