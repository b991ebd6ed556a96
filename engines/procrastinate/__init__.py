"""procrastinate 3.10 adapter: a Postgres job queue (no step checkpoints), one job per step.

A workflow is a chain of jobs: the driver defers step 0, each step's job defers the next with the
payload as its argument. A dead worker's jobs are found by their stale heartbeat and retried by the
periodic sweep procrastinate's docs prescribe. Settings, sources and what this costs under a
crash: README.md here. procrastinate is imported lazily, so ``durabench engines`` works without it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from harness.contract import STAGE_KINDS, EngineContext, EngineRecord, Workload

if TYPE_CHECKING:
    import procrastinate

_LOOKUP_CHUNK = 10_000
# A worker is dead once it missed this many heartbeats, and never sooner than MIN_STALLED_S.
STALLED_HEARTBEATS = 4
MIN_STALLED_S = 2.0


def run_url(endpoints: dict[str, str], settings: dict[str, Any]) -> str:
    """The harness's Postgres URL pointed at the run's procrastinate database."""
    parts = urlsplit(endpoints["postgres"])
    return urlunsplit((parts.scheme, parts.netloc, f"/{settings['database']}", parts.query, parts.fragment))


def connector_kwargs(url: str, pool_size: int) -> dict[str, Any]:
    """``PsycopgConnector`` arguments: forwarded to psycopg_pool's ``AsyncConnectionPool``."""
    return {"conninfo": url, "min_size": 1, "max_size": pool_size}


def _ns(ts: Any) -> int:
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


class ProcrastinateClient:
    """Defers step 0 of each workflow; looks outcomes up in procrastinate_jobs / procrastinate_events."""

    def __init__(self, app: procrastinate.App, url: str, settings: dict[str, Any], steps: int) -> None:
        from engines.procrastinate.tasks import STEP_TASK

        self._app = app
        self._url = url
        self._steps = steps
        self._deferrer = app.configure_task(STEP_TASK, queue=str(settings["queue_name"]))

    async def submit(self, workflow_id: str) -> None:
        # one INSERT into procrastinate_jobs (autocommit, from the pool): durable on return
        await self._deferrer.defer_async(workflow_id=workflow_id, index=0, payload="")

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        import psycopg

        from engines.procrastinate.tasks import STEP_TASK

        query = (
            "SELECT j.args->>'workflow_id', (j.args->>'index')::int, j.status::text, j.attempts,"
            " (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id AND e.type = 'succeeded')"
            " FROM procrastinate_jobs j WHERE j.task_name = %s AND j.args->>'workflow_id' = ANY(%s)"
        )
        rows: list[tuple[Any, ...]] = []
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            for start in range(0, len(workflow_ids), _LOOKUP_CHUNK):
                cur = await conn.execute(query, (STEP_TASK, workflow_ids[start : start + _LOOKUP_CHUNK]))
                rows.extend(await cur.fetchall())
        jobs: dict[str, list[tuple[int, str, int, Any]]] = {}
        for wf, index, status, attempts, succeeded_at in rows:
            jobs.setdefault(wf, []).append((index, status, attempts, succeeded_at))
        out: dict[str, EngineRecord] = {}
        last = self._steps - 1
        for wf in workflow_ids:
            found = sorted(jobs.get(wf, []), key=lambda j: j[0])
            if not found:
                out[wf] = EngineRecord("not_found")
                continue
            detail = {"jobs": [{"step": i, "status": st, "attempts": a} for i, st, a, _ in found]}
            done = [at for i, st, _, at in found if i == last and st == "succeeded" and at is not None]
            if done:
                # the 'succeeded' event of the last step's job: now() of the transaction that finished it
                out[wf] = EngineRecord("completed", _ns(min(done)), detail)
            elif any(st in ("failed", "cancelled", "aborted") for _, st, _, _ in found):
                out[wf] = EngineRecord("failed", None, detail)
            else:  # claimed: a worker took a job of it (doing, succeeded, or an attempt counted); else all wait
                claimed = any(st != "todo" or a for _, st, a, _ in found)
                out[wf] = EngineRecord("pending", None, {**detail, "claimed": claimed})
        return out

    async def close(self) -> None:
        await self._app.close_async()


class ProcrastinateEngine:
    name: ClassVar[str] = "procrastinate"
    description: ClassVar[str] = (
        "procrastinate 3.10 Postgres job queue: a job per step chaining the next; stalled-job sweep recovery"
    )
    services: ClassVar[tuple[str, ...]] = ("postgres",)
    recovery_settings: ClassVar[tuple[str, ...]] = (
        "update_heartbeat_interval_s", "stalled_worker_timeout_s", "stalled_sweep_cron")
    workflow_code: ClassVar[tuple[str, ...]] = ("tasks.py",)
    # a job queue without workflow state: each step is a job deferring the next (tasks.py); there is
    # no journal to resume a call's retries, timer, signal wait, effect checkpoint or fan-in from
    stages: ClassVar[Mapping[str, str | None]] = {
        k: None if k == "work" else "a job queue without workflow state (runs work chains only)" for k in STAGE_KINDS}
    changed_defaults: ClassVar[dict[str, Any]] = {
        "concurrency": 1,
        "update_heartbeat_interval_s": 10.0,
        "stalled_worker_timeout_s": 30.0,
        "stalled_sweep_cron": "none: a dead worker's jobs stay 'doing'",
        "worker_pool_size": 4,
    }

    def unavailable_reason(self) -> str | None:
        for module, package in (("procrastinate", "procrastinate==3.10.0"), ("psycopg_pool", "psycopg[pool]")):
            if importlib.util.find_spec(module) is None:
                return f"pip install {package}"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        heartbeat_s = 0.5
        return {
            "database": "durabench_procrastinate",  # dedicated database, dropped and recreated by prepare
            "queue_name": "durabench",
            "concurrency": 32,  # jobs at once per worker (default 1); the step is an async sleep
            "listen_notify": True,  # default: LISTEN/NOTIFY wakes a worker on every new job
            "fetch_job_polling_interval_s": 5.0,  # default: the fallback poll when no notification came
            "update_heartbeat_interval_s": heartbeat_s,  # default 10 s
            # a worker whose heartbeat is older than this is dead (default 30 s), for the sweep too
            "stalled_worker_timeout_s": max(MIN_STALLED_S, STALLED_HEARTBEATS * heartbeat_s),
            "stalled_sweep_cron": "* * * * * *",  # every second (croniter's 6th field); docs example: 10 min
            "worker_pool_size": 10,  # psycopg pool per worker (connector default: psycopg_pool's 4)
            "client_pool_size": 8,  # driver-side pool (harness plumbing)
        }

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for package in ("procrastinate", "psycopg", "psycopg-pool"):
            try:
                out[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                out[package] = "missing"
        return out

    def prepare(self, ctx: EngineContext) -> None:
        """Recreate the database and apply procrastinate's schema (what ``procrastinate schema --apply`` runs)."""
        import psycopg
        from procrastinate.schema import SchemaManager
        from psycopg import sql

        with psycopg.connect(ctx.endpoints["postgres"], autocommit=True) as conn:
            db = sql.Identifier(str(ctx.settings["database"]))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(db))
        with psycopg.connect(run_url(ctx.endpoints, ctx.settings), autocommit=True) as conn:
            conn.execute(SchemaManager.get_schema())

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [sys.executable, "-m", "engines.procrastinate.worker"]

    async def open_client(self, ctx: EngineContext) -> ProcrastinateClient:
        import procrastinate

        url = run_url(ctx.endpoints, ctx.settings)
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(
            **connector_kwargs(url, int(ctx.settings["client_pool_size"]))))
        await app.open_async()
        return ProcrastinateClient(app, url, ctx.settings, ctx.workload.steps)
