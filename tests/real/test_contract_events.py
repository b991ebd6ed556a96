"""The contract for events (``load.source: kafka``): every adapter that declares an event consumer, on a
real Kafka broker and its real servers, consumes events produced by the harness's EventClient, runs the
program once per event with the event id in its ledger records and effect rows, and answers the driver's
lookup per event id."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness import ledger, registry, scenario
from harness.contract import EngineContext, event_consumer
from harness.ledger import Follower
from harness.run import appdb, eventsource, kafka, services
from harness.run.driver import LiveView
from harness.supervisor import Supervisor

EVENTS = 6
TIMEOUT_S = 120.0

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(kafka.unavailable_reason() is not None, reason=str(kafka.unavailable_reason()))]


# dbos and temporal run the same path end to end, under a worker kill, in tests/e2e/test_events.py
ENGINES = os.environ.get("DURABENCH_EVENT_ENGINES", "celery").split(",")


@pytest.mark.parametrize("name", ENGINES)
def test_adapter_consumes_events_and_applies_each_effect_once(name: str, tmp_path: Path) -> None:
    engine = registry.load(name)
    assert event_consumer(engine), f"{name} declares no event consumer"
    doc = {"name": "contract", "engines": [name], "load": {"source": "kafka", "partitions": 2},
           "workload": {"program": [{"kind": "work", "duration": "10ms"}, {"kind": "effect", "idempotency": "none"}]}}
    workload = scenario.parse(doc, "contract").workload.to_workload(1)
    settings = engine.default_settings(workload, 2)
    needed = [*engine.services, *(["postgres"] if "postgres" not in engine.services else []), "kafka"]
    ledger_dir = tmp_path / "history"
    ledger_dir.mkdir()
    with services.running(needed, tmp_path / "logs", "volatile") as svc:
        endpoints = dict(svc.endpoints)
        endpoints["app_db"] = appdb.create(endpoints["postgres"], endpoints["postgres"])
        spec = eventsource.spec_for(endpoints["kafka"], "c0ffee02", name, 2)
        eventsource.create_topic(spec)
        ctx = EngineContext(name, "c0ffee02", endpoints, workload, 2, settings, tmp_path, ledger_dir, spec)
        engine.prepare(ctx)
        sup = Supervisor(engine, ctx, 2, 0.5, ledger.Ledger(ledger_dir, "supervisor"))
        sup.start()
        try:
            records = asyncio.run(_exercise(engine, ctx, workload.steps))
        finally:
            sup.stop()
        appdb.dump(endpoints["postgres"], tmp_path / "effects.json")
    from harness import results

    ids = [f"{name}-event-{i}" for i in range(EVENTS)]
    rows = Counter(r["wf"] for r in results.read_json(tmp_path / "effects.json")["rows"])
    assert rows == dict.fromkeys(ids, 1), "each event's effect applied once, keyed by the event id"
    produced = [e for e in ledger.read_dir(ledger_dir) if e["ev"] == "event_produced"]
    assert sorted(e["wf"] for e in produced) == ids and {e["partition"] for e in produced} <= {0, 1}
    assert {wf: r.status for wf, r in records.items()} == dict.fromkeys(ids, "completed")


async def _exercise(engine: Any, ctx: EngineContext, steps: int) -> dict[str, Any]:
    view = LiveView(steps, Follower(ctx.ledger_dir))
    deadline = time.monotonic() + TIMEOUT_S
    while {"worker:0", "worker:1"} - view.ready.keys():
        assert time.monotonic() < deadline, f"workers not ready; logs in {ctx.work_dir / 'logs'}"
        view.poll()
        await asyncio.sleep(0.02)
    assert ctx.events is not None
    client = eventsource.EventClient(engine, ctx.events, await engine.open_client(ctx),
                                     ledger.Ledger(ctx.ledger_dir, "driver"))
    ids = [f"{ctx.engine}-event-{i}" for i in range(EVENTS)]
    try:
        for wf in ids:
            await client.submit(wf)
        while not all(wf in view.completed for wf in ids):
            assert time.monotonic() < deadline + TIMEOUT_S, f"not all events processed; logs in {ctx.work_dir}"
            view.poll()
            await asyncio.sleep(0.05)
        for _ in range(100):  # the engine's own record may follow the last step by a moment
            records = await client.lookup(ids)
            if all(r.status == "completed" for r in records.values()):
                break
            await asyncio.sleep(0.2)
        return records
    finally:
        await client.close()
