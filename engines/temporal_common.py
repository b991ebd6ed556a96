"""Helpers shared by the Temporal adapters (``engines.temporal`` and ``engines.temporal_go``).

A library of one engine family, not an adapter (it registers no engine): the client that
starts workflows and looks their outcomes up (parametrized by the workflow's registered name and
its input, which differ between the Python and the Go worker), the namespace probe of
``prepare``, the workflow settings both adapters record, and small helpers.

Imports nothing from temporalio at import time (``durabench engines`` works without it) and has
no side effects: Temporal's workflow sandbox re-imports it with ``engines.temporal``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from importlib import metadata
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from harness.contract import EngineContext, EngineRecord, Status, Workload
from harness.errors import SubmitRejected

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecution

T = TypeVar("T")
RELIST_MIN_MISSES = 100  # lookup: list the task queue again when more ids than this miss the last listing
RELIST_AFTER_S = 1.0  # ... and that listing is older than this

# Timeouts that detect a dead worker: this many step times, at least MIN_DETECT_S.
DETECT_STEP_FACTOR = 20
MIN_DETECT_S = 2.0
WORKFLOW_TASK_TIMEOUT_DEFAULT_S = 10.0  # the server's default (a start without task_timeout gets 10 s)
RETRY_PAUSE_S = 0.1  # between attempts of prepare's / the worker's readiness probes

# gRPC codes on which a start surely did not happen and will not happen by itself.
_REJECTING_CODES = ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED")


FRONTEND_SERVICES = ("temporal-server", "temporal")  # the production server's, else the dev server's


def frontend(endpoints: Mapping[str, str]) -> str:
    """The Temporal frontend's address among a run's endpoints (the Go worker's ``frontend`` too)."""
    for name in FRONTEND_SERVICES:
        if name in endpoints:
            return endpoints[name]
    raise KeyError(f"no Temporal server among the endpoints {sorted(endpoints)}")


def task_queue(settings: dict[str, Any], run_id: str) -> str:
    return f"{settings['task_queue_prefix']}-{run_id}"


def workflow_settings(workload: Workload) -> dict[str, Any]:
    """The workflow's timeouts, retries and id policies, sized against the workload (README: "Settings")."""
    detect_s = round(max(MIN_DETECT_S, DETECT_STEP_FACTOR * workload.step_duration_s), 3)
    return {
        "activity_start_to_close_s": detect_s,
        "retry_initial_interval_s": 1.0,
        "retry_backoff_coefficient": 2.0,
        "retry_maximum_interval_s": 100.0,
        "retry_maximum_attempts": 0,
        # never above the server's default: a workflow task runs no step (the SDK heartbeats one that runs
        # long local activities), so a longer timeout only delays the recovery of a dead worker's task
        "workflow_task_timeout_s": min(detect_s, WORKFLOW_TASK_TIMEOUT_DEFAULT_S),
        "id_conflict_policy": "USE_EXISTING",
        "id_reuse_policy": "REJECT_DUPLICATE",
    }


# The production shape: a Temporal server built from the Go module proxy on the run's PostgreSQL
# (harness/run/temporal_server.py), PostgreSQL first so that ``service:store`` is the database.
SERVER_PG_SERVICES = ("postgres", "temporal-server")
SERVER_PG_NOTE = ("Temporal server {version} (one process, four services) on the run's PostgreSQL 18, which is "
                  "outside Temporal's tested PostgreSQL versions (13-16)")


def server_pg_unavailable_reason() -> str | None:
    """Why the production server cannot run here (no Go toolchain), else None (first use builds it)."""
    from harness import temporalbuild

    return temporalbuild.unavailable_reason()


def server_pg_versions() -> dict[str, str]:
    from harness import temporalbuild

    return {"temporal-server": temporalbuild.SERVER_VERSION,
            "go (server build)": temporalbuild.go_version() or "absent",
            "postgres-tested-by-temporal": "13-16 (this run: 18, untested by Temporal)"}


# Harness plumbing (no effect on measured latency).
PLUMBING_SETTINGS: Mapping[str, Any] = MappingProxyType({
    "lookup_concurrency": 64,
    "prepare_timeout_s": 60.0,
    "ready_timeout_s": 60.0,
})


def package_versions(*dists: str) -> dict[str, str]:
    """Installed versions of Python distributions (``absent`` where not installed)."""
    out: dict[str, str] = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def plan_fields(workload: Workload, settings: dict[str, Any]) -> dict[str, Any]:
    """The workflow input's fields: ``engines.temporal.workflow.Plan``, the Go worker's ``Plan`` struct."""
    return {
        "steps": workload.steps,
        "local": bool(settings["local_activities"]),
        "start_to_close_s": float(settings["activity_start_to_close_s"]),
        "retry_initial_interval_s": float(settings["retry_initial_interval_s"]),
        "retry_backoff_coefficient": float(settings["retry_backoff_coefficient"]),
        "retry_maximum_interval_s": float(settings["retry_maximum_interval_s"]),
        "retry_maximum_attempts": int(settings["retry_maximum_attempts"]),
        "program": workload.program,  # the stages (docs/engines.md "Workflow programs")
    }


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

    return await Client.connect(endpoint, namespace=settings["namespace"], identity=identity, runtime=runtime())


@functools.cache
def runtime() -> Any:
    """The process's Temporal runtime, with the SDK's default log levels (core WARN, other ERROR) but with the
    Rust core's logs forwarded to the Python logger ``temporalio.core`` instead of written to stderr by the
    core itself: in the driver they then land in the engine's logs/driver.log (harness/run/runner.py)."""
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    forward = LogForwardingConfig(logger=logging.getLogger("temporalio.core"))
    return Runtime(telemetry=TelemetryConfig(
        logging=LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forward)))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
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


def wait_for_namespace(ctx: EngineContext) -> None:
    """Wait until the server serves the namespace and its visibility (the dev server accepts TCP earlier)."""
    s = ctx.settings
    query = f"TaskQueue = '{task_queue(s, ctx.run_id)}'"

    async def probe() -> None:
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

        client = await connect(frontend(ctx.endpoints), s, "durabench-prepare")
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=s["namespace"]))
        await client.count_workflows(query)  # visibility answers for this namespace

    run_sync(retry_until("namespace " + s["namespace"], float(s["prepare_timeout_s"]), probe))


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
    if status == "pending" and ex.history_length:
        # A workflow's history begins WorkflowExecutionStarted, WorkflowTaskScheduled; the first workflow task's
        # WorkflowTaskStarted is written when a worker takes it (only later attempts' are transient, not written:
        # temporalio/temporal docs/architecture/speculative-workflow-task.md). Two events: no worker took it yet.
        detail["claimed"] = ex.history_length > 2
    return EngineRecord(status, closed_ns if status == "completed" else None, detail)


def first_task_evidence(events: Any) -> dict[str, Any] | None:
    """From a workflow's history events: who started its first workflow task and when, and how many times a
    workflow task was started before one completed; None when the first attempt completed (no interruption)."""
    from temporalio.api.enums.v1 import EventType

    first: Any = None
    attempts = 0
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            attempts += 1
            first = first or event
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            break
    if first is None or attempts < 2:
        return None
    return {"dequeued_by": first.workflow_task_started_event_attributes.identity,
            "dequeued_ns": first.event_time.ToNanoseconds(), "start_attempts": attempts}


class TemporalClient:
    """Starts ``workflow_name(plan)`` on the run's task queue; reads outcomes from visibility, then describe().

    ``plan`` is the workflow input as the worker's SDK decodes it: a ``Plan`` dataclass for the
    Python worker, a dict (JSON object) for the Go worker's ``Plan`` struct.
    """

    def __init__(self, client: Client, ctx: EngineContext, workflow_name: str, plan: Any) -> None:
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

        s = ctx.settings
        self._client = client
        self._workflow_name = workflow_name
        self._plan = plan
        self._task_queue = task_queue(s, ctx.run_id)
        self._task_timeout = float(s["workflow_task_timeout_s"])
        self._conflict = WorkflowIDConflictPolicy[s["id_conflict_policy"]]
        self._reuse = WorkflowIDReusePolicy[s["id_reuse_policy"]]
        self._lookup_concurrency = int(s["lookup_concurrency"])
        # closed workflows seen in visibility listings: later lookup batches are answered from here
        # instead of listing the whole task queue again for every batch. Closed is final only when an
        # id cannot be started again (REJECT_DUPLICATE, the default); other policies list every call.
        self._keep_closed = s["id_reuse_policy"] == "REJECT_DUPLICATE"
        self._closed: dict[str, EngineRecord] = {}
        self._listed_at: float | None = None

    async def submit(self, workflow_id: str) -> None:
        from datetime import timedelta

        from temporalio.exceptions import WorkflowAlreadyStartedError
        from temporalio.service import RPCError

        try:
            # Returns once the server has persisted the start (the StartWorkflowExecution RPC).
            await self._client.start_workflow(
                self._workflow_name, self._plan, id=workflow_id, task_queue=self._task_queue,
                task_timeout=timedelta(seconds=self._task_timeout),
                id_conflict_policy=self._conflict, id_reuse_policy=self._reuse,
            )
        except WorkflowAlreadyStartedError:
            return  # a closed run with this id exists: an earlier submit of it was accepted
        except RPCError as exc:
            if exc.status.name in _REJECTING_CODES:
                raise SubmitRejected(f"temporal refused {workflow_id}: {exc.status.name} {exc.message}") from exc
            raise

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """A wait_signal stage's signal: ``WorkflowHandle.signal`` (SignalWorkflowExecution, persisted
        in the workflow's history before the call returns)."""
        await self._client.get_workflow_handle(workflow_id).signal(name, payload)

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        from temporalio.service import RPCError, RPCStatusCode

        # A paged visibility query for the run's task queue (1000 per page) answers closed
        # workflows, kept across calls; visibility lags the history store, so anything not closed
        # there is asked again with describe(), which reads the workflow's own (consistent) state.
        # The listing is repeated only when many ids miss it and it is older than a second: one
        # listing per lookup batch would make a run's final lookup quadratic in its workflows.
        misses = sum(1 for wf_id in workflow_ids if wf_id not in self._closed)
        if misses and (self._listed_at is None or (misses > RELIST_MIN_MISSES
                                                   and time.monotonic() - self._listed_at > RELIST_AFTER_S)):
            self._listed_at = time.monotonic()
            async for ex in self._client.list_workflows(f"TaskQueue = '{self._task_queue}'", page_size=1000):
                if ex.close_time is not None:
                    self._closed[ex.id] = _record(ex)
        out = {wf_id: self._closed[wf_id] for wf_id in workflow_ids if wf_id in self._closed}
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
        described = dict(await asyncio.gather(*(describe(wf_id) for wf_id in rest)))
        self._closed.update((wf_id, r) for wf_id, r in described.items() if r.status in ("completed", "failed"))
        out.update(described)
        if not self._keep_closed:
            self._closed, self._listed_at = {}, None
        await self._dequeue_evidence(out, sem)
        return out

    async def _dequeue_evidence(self, out: dict[str, EngineRecord], sem: asyncio.Semaphore) -> None:
        """Where a worker took a workflow's first workflow task and never completed it (killed between dequeue
        and first step), add ``dequeued_by`` (that worker's identity: the durabench worker id), ``dequeued_ns``
        and ``start_attempts`` (workflow task starts before the first completed one) from its history. Only
        histories longer than the batch's shortest completed one (or of unfinished workflows) are read."""
        lengths = [r.detail["history_length"] for r in out.values()
                   if r.status == "completed" and r.detail.get("history_length")]
        normal = min(lengths) if lengths else 0
        odd = [wf for wf, r in out.items() if r.status != "not_found"
               and (r.status != "completed" or (r.detail.get("history_length") or 0) > normal)]

        async def read(wf_id: str) -> None:
            async with sem:
                history = await self._client.get_workflow_handle(wf_id).fetch_history()
            evidence = first_task_evidence(history.events)
            if evidence is not None:
                record = out[wf_id]
                out[wf_id] = EngineRecord(record.status, record.completed_ns, {**record.detail, **evidence})

        await asyncio.gather(*(read(wf) for wf in odd))

    async def close(self) -> None:
        return None  # temporalio's Client has no close(); its connection ends with the object


async def open_client(ctx: EngineContext, workflow_name: str, plan: Any) -> TemporalClient:
    """Connect as ``durabench-driver`` and wrap the connection in a :class:`TemporalClient`."""
    client = await connect(frontend(ctx.endpoints), ctx.settings, "durabench-driver")
    return TemporalClient(client, ctx, workflow_name, plan)
