"""absurd adapter: durable tasks whose steps are checkpointed in PostgreSQL (absurd-sdk 0.5.1).

A third-party plugin: its own distribution, registered through the entry-point group
``durabench.engines``, importing only the harness's engine API. ``prepare`` installs absurd's
schema and the queue with ``absurdctl`` (which shells out to ``psql``); workers run
``Absurd.start_worker``; the driver spawns tasks with ``AsyncAbsurd.spawn`` and reads outcomes
from absurd's task and run tables. Settings and their sources: README.md next to this package.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import itertools
import math
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from harness.contract import STAGE_KINDS, EngineContext, EngineRecord, Workload, run_tool
from harness.supervisor import python_worker

if TYPE_CHECKING:
    from absurd_sdk import AsyncAbsurd

TASK_NAME = "durabench_workflow"
# A lease must outlive one step plus its checkpoint write (each checkpoint extends it): this many
# step times, at least MIN_CLAIM_TIMEOUT_S (absurd takes whole seconds). The same rule as the
# Temporal adapter's activity timeout and the Celery adapter's visibility timeout.
CLAIM_STEP_FACTOR = 20
MIN_CLAIM_TIMEOUT_S = 2
_LOOKUP_CHUNK = 10_000
_PENDING = {"pending", "running", "sleeping"}


def event_name(signal: str, workflow_id: str) -> str:
    """The absurd event a ``wait_signal`` stage awaits (events are queue-wide: one per workflow)."""
    return f"{signal}:{workflow_id}"


def call_stages(program: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The program's ``call`` stages (top level: this adapter runs no ``parallel`` stage)."""
    return [s for s in program if s["kind"] == "call"]


def retry_strategy(program: list[dict[str, Any]]) -> dict[str, Any] | None:
    """absurd's task retry strategy for a program's call stages (absurd retries tasks, not steps):
    exponential from the initial backoff, capped at the maximum (``absurd.retry_delay_seconds``:
    ``least(base * factor ^ (attempt - 1), max_seconds)``). One strategy per task: the call stages
    must agree on it."""
    policies = {(float(s["retry"]["initial_backoff_s"]), float(s["retry"]["multiplier"]),
                 float(s["retry"]["max_backoff_s"])) for s in call_stages(program)}
    if not policies:
        return None
    if len(policies) > 1:
        raise ValueError("absurd has one retry strategy per task: every call stage must share its backoff")
    ((base, factor, cap),) = policies
    return {"kind": "exponential", "base_seconds": base, "factor": factor, "max_seconds": cap}


def database_url(postgres_url: str, database: str) -> str:
    """The harness's Postgres URL pointed at ``database``."""
    parts = urlsplit(postgres_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def run_url(ctx_endpoints: dict[str, str], settings: dict[str, Any]) -> str:
    return database_url(ctx_endpoints["postgres"], str(settings["database"]))


def _absurdctl() -> str:
    """The ``absurdctl`` script installed next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "absurdctl"
    if beside.exists():
        return str(beside)
    found = shutil.which("absurdctl")
    if found is None:
        raise RuntimeError("absurdctl is not installed: pip install absurdctl==0.5.1")
    return found


def _ns(ts: Any) -> int:
    """A timezone-aware datetime from PostgreSQL as integer ns since the epoch (microsecond precision)."""
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


class AbsurdClient:
    """Spawns tasks on a few connections (one query at a time per connection) and looks them up."""

    def __init__(self, clients: list[AsyncAbsurd], url: str, settings: dict[str, Any],
                 program: list[dict[str, Any]]) -> None:
        self._clients = clients
        self._free: asyncio.Queue[AsyncAbsurd] = asyncio.Queue()
        for c in clients:
            self._free.put_nowait(c)
        self._url = url
        self._queue = str(settings["queue_name"])
        # runs per task: the crash allowance plus every call stage's retries (absurd counts the
        # task's failed runs, whatever failed: README.md "Programs")
        self._max_attempts = int(settings["max_attempts"]) + sum(
            int(s["retry"]["max_attempts"]) - 1 for s in call_stages(program))
        self._retry = retry_strategy(program)

    async def submit(self, workflow_id: str) -> None:
        client = await self._free.get()
        try:
            # spawn_task inserts the task and its first run in one statement (autocommit): durable on return.
            # The idempotency key makes a repeated submit of the same id return the existing task.
            await client.spawn(TASK_NAME, {"workflow_id": workflow_id}, max_attempts=self._max_attempts,
                               retry_strategy=self._retry, queue=self._queue,  # type: ignore[arg-type]
                               idempotency_key=workflow_id)
        finally:
            self._free.put_nowait(client)

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """``emit_event`` on the queue (one autocommit statement: durable on return; the first emit
        of a name wins, and a waiting task is woken)."""
        client = await self._free.get()
        try:
            await client.emit_event(event_name(name, workflow_id), payload, queue_name=self._queue)
        finally:
            self._free.put_nowait(client)

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        import psycopg
        from psycopg import sql

        query = sql.SQL(
            "SELECT t.idempotency_key, t.state, t.attempts, t.enqueue_at, t.first_started_at,"
            " r.state, r.claimed_by, r.completed_at"
            " FROM absurd.{t} t LEFT JOIN absurd.{r} r ON r.run_id = t.last_attempt_run"
            " WHERE t.idempotency_key = ANY(%s)"
        ).format(t=sql.Identifier(f"t_{self._queue}"), r=sql.Identifier(f"r_{self._queue}"))
        rows: list[tuple[Any, ...]] = []
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            for start in range(0, len(workflow_ids), _LOOKUP_CHUNK):
                cur = await conn.execute(query, (workflow_ids[start : start + _LOOKUP_CHUNK],))
                rows.extend(await cur.fetchall())
        out = {wf: EngineRecord("not_found") for wf in workflow_ids}
        for wf, state, attempts, enqueued, started, run_state, claimed_by, completed_at in rows:
            detail = {"absurd_state": state, "attempts": attempts, "last_run_state": run_state,
                      "claimed_by": claimed_by, "enqueue_at": str(enqueued), "first_started_at": str(started)}
            if state == "completed":
                # the task table has no completion time: the last run's completed_at, set by complete_run
                # (absurd.current_time() = clock_timestamp()) in the statement that commits it
                out[wf] = EngineRecord("completed", _ns(completed_at) if completed_at else None, detail)
            elif state in _PENDING:  # claimed: a run of it was started or claimed; else it waits in the queue
                claimed = state != "pending" or started is not None or claimed_by is not None
                out[wf] = EngineRecord("pending", None, {**detail, "claimed": claimed})
            else:  # failed, cancelled
                out[wf] = EngineRecord("failed", None, detail)
        return out

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


class AbsurdEngine:
    name: ClassVar[str] = "absurd"
    description: ClassVar[str] = (
        "absurd 0.5 (Python): durable tasks checkpointed per step in PostgreSQL, lease-based recovery"
    )
    services: ClassVar[tuple[str, ...]] = ("postgres",)
    recovery_settings: ClassVar[tuple[str, ...]] = ("claim_timeout_s", "poll_interval_s")
    workflow_code: ClassVar[tuple[str, ...]] = ("workflow.py",)
    changed_defaults: ClassVar[dict[str, Any]] = {"claim_timeout_s": 120, "poll_interval_s": 0.25, "concurrency": 1}
    # absurd's own constructs for each (workflow.py; README.md "Programs")
    stages: ClassVar[Mapping[str, str | None]] = {
        **dict.fromkeys(STAGE_KINDS),
        "parallel": "absurd runs a task's steps in sequence; a child task must be awaited from another queue",
    }

    def unavailable_reason(self) -> str | None:
        for module, package in (("absurd_sdk", "absurd-sdk==0.5.1"), ("absurdctl", "absurdctl==0.5.1"),
                                ("psycopg", "psycopg[binary]")):
            if importlib.util.find_spec(module) is None:
                return f"pip install {package}"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        # a call attempt holds the lease up to its attempt timeout (not in step_duration_s): twice that
        attempt_s = max((float(s["retry"]["attempt_timeout_s"]) for s in call_stages(workload.program)), default=0.0)
        claim = max(MIN_CLAIM_TIMEOUT_S, math.ceil(CLAIM_STEP_FACTOR * workload.step_duration_s),
                    math.ceil(2 * attempt_s))
        return {
            "database": "durabench_absurd",  # dedicated database, dropped and recreated by prepare
            "queue_name": "durabench",
            "storage_mode": "unpartitioned",  # absurdctl create-queue default
            "claim_timeout_s": claim,  # lease per claim and per checkpoint (SDK default 120 s)
            "poll_interval_s": 0.05,  # idle claim poll (SDK default 0.25 s); also when expired leases are swept
            "concurrency": 32,  # tasks per worker process, a thread each (SDK default 1)
            "max_attempts": 5,  # runs per task before it fails (SDK default 5); a lost lease is an attempt
            "client_connections": 8,  # driver-side connections, one spawn at a time each (harness plumbing)
        }

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for package in ("absurd-sdk", "absurdctl", "psycopg", "durabench-absurd"):
            try:
                out[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                out[package] = "missing"
        return out

    def prepare(self, ctx: EngineContext) -> None:
        """Recreate the database, then ``absurdctl init`` and ``absurdctl create-queue`` into it."""
        import psycopg
        from psycopg import sql

        s = ctx.settings
        with psycopg.connect(ctx.endpoints["postgres"], autocommit=True) as conn:
            db = sql.Identifier(str(s["database"]))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(db))
        env = {"ABSURD_DATABASE_URL": run_url(ctx.endpoints, s)}
        tool = _absurdctl()
        run_tool(ctx, [tool, "init"], "absurdctl-init", env=env)
        run_tool(ctx, [tool, "create-queue", "--storage-mode", str(s["storage_mode"]), str(s["queue_name"])],
                 "absurdctl-create-queue", env=env)

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return python_worker("durabench_absurd.worker")

    async def open_client(self, ctx: EngineContext) -> AbsurdClient:
        from absurd_sdk import AsyncAbsurd

        url = run_url(ctx.endpoints, ctx.settings)
        clients = [AsyncAbsurd(url, queue_name=str(ctx.settings["queue_name"]))
                   for _ in itertools.repeat(None, int(ctx.settings["client_connections"]))]
        return AbsurdClient(clients, url, ctx.settings, ctx.workload.program)
