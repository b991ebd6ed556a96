"""A workflow taken off the queue by a worker that dies before its first step: the engine's record of the
dequeue reaches reconcile, and the recovery analysis attributes the workflow to the fault (real Temporal)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from harness import ledger, registry
from harness.analysis import checker, metrics
from harness.contract import EngineContext, Workload
from harness.ledger import Follower
from harness.run import services
from harness.run.driver import LiveView
from harness.supervisor import Supervisor

pytestmark = pytest.mark.real
WORKLOAD = Workload(steps=2, step_duration_s=0.01, payload_bytes=16)
TIMEOUT_S = 90.0


def test_temporal_records_the_dequeue_of_a_task_whose_worker_never_finished_it(tmp_path: Path) -> None:
    engine = registry.load("temporal")
    settings = engine.default_settings(WORKLOAD, 1)
    with services.running(engine.services, tmp_path / "logs") as svc:
        ledger_dir = tmp_path / "history"
        ledger_dir.mkdir()
        ctx = EngineContext("temporal", "dq0dq0dq", svc.endpoints, WORKLOAD, 1, settings, tmp_path, ledger_dir)
        engine.prepare(ctx)
        sup = Supervisor(engine, ctx, 1, 0.5, ledger.Ledger(ledger_dir, "supervisor"))
        try:
            out = asyncio.run(_exercise(engine, ctx, sup))
        finally:
            sup.stop()
    records, taken_ns, fault_ns = out["records"], out["taken_ns"], out["fault_ns"]
    stolen = records["temporal-dq-stolen"].detail
    assert stolen["dequeued_by"] == "worker:0"  # the identity that polled the first workflow task
    assert stolen["start_attempts"] >= 2
    assert taken_ns[0] - 1_000_000_000 <= stolen["dequeued_ns"] <= taken_ns[1] + 1_000_000_000
    assert "dequeued_by" not in records["temporal-dq-plain"].detail  # its first task completed: no evidence
    # the analysis: a kill of worker:0 after the dequeue, before any step, is this workflow's fault
    trs = checker.traces(ledger.read_dir(ledger_dir))
    for wf in ("temporal-dq-stolen", "temporal-dq-plain"):
        trs[wf].intended_ns = trs[wf].sent_ns = taken_ns[0] - 1000
        trs[wf].outcome = "ok"
    fault = {"ns": fault_ns, "fault_id": "f0", "kind": "kill-worker", "target": "worker:0", "workers": ["worker:0"]}
    win = metrics.Window(taken_ns[0] - 10**9, taken_ns[0] - 10**9, fault_ns + 60 * 10**9)
    rec = metrics.recovery(fault, None, trs, records, WORKLOAD.steps, win)
    assert "temporal-dq-stolen" in rec["affected_ids"] and rec["affected_by_dequeue"] >= 1
    assert rec["affected_unfinished"] == 0


async def _exercise(engine: Any, ctx: EngineContext, sup: Supervisor) -> dict[str, Any]:
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import PollWorkflowTaskQueueRequest

    from engines import temporal_common

    client = await engine.open_client(ctx)
    raw = client._client  # the test plays a worker that dies holding a task
    await client.submit("temporal-dq-stolen")
    before = time.time_ns()
    task = await raw.workflow_service.poll_workflow_task_queue(PollWorkflowTaskQueueRequest(
        namespace=ctx.settings["namespace"], identity="worker:0",
        task_queue=TaskQueue(name=temporal_common.task_queue(ctx.settings, ctx.run_id))))
    after = time.time_ns()
    assert task.workflow_execution.workflow_id == "temporal-dq-stolen"
    fault_ns = time.time_ns()  # the "worker" dies here, never answering: the task times out and is retried
    await client.submit("temporal-dq-plain")
    view = LiveView(WORKLOAD.steps, Follower(ctx.ledger_dir))
    sup.start()
    follow = asyncio.create_task(view.follow())
    try:
        await asyncio.wait_for(asyncio.gather(view.wait_completed("temporal-dq-stolen"),
                                              view.wait_completed("temporal-dq-plain")), TIMEOUT_S)
    finally:
        follow.cancel()
    ids = ["temporal-dq-stolen", "temporal-dq-plain"]
    records = await client.lookup(ids)
    deadline = time.monotonic() + TIMEOUT_S
    while any(records[wf].status != "completed" for wf in ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        records = await client.lookup(ids)
    await client.close()
    return {"records": records, "taken_ns": (before, after), "fault_ns": fault_ns}
