"""DBOS adapter: workflows checkpointed into the Postgres the harness runs (dbos 3.x, Python).

The harness process never launches DBOS (a process-global singleton): ``prepare`` migrates the
system database and registers the queue in a short bootstrap subprocess, workers launch DBOS
themselves, and the driver only uses ``DBOSClient`` (enqueue) and plain SQL (lookup).
See README.md in this folder for every setting and its source.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from harness import procs
from harness.contract import CONFIG_ENV, EngineContext, EngineRecord, WorkerConfig, Workload

if TYPE_CHECKING:
    from dbos import DBOSClient

APP_NAME = "durabench"  # DBOS application name: owns the queue and the workflows (workers + client)
WORKFLOW_NAME = "durabench_workflow"  # the name the worker registers; the client enqueues by this name
STEP_NAME = "durabench_step"
SCHEMA = "dbos"  # DBOS's default system schema
BOOTSTRAP_TIMEOUT_S = 120.0

_PENDING = {"PENDING", "ENQUEUED", "DELAYED"}
_LOOKUP_SQL = (
    f"SELECT workflow_uuid, status, completed_at, updated_at, created_at, started_at_epoch_ms,"
    f" recovery_attempts, executor_id, application_version"
    f" FROM {SCHEMA}.workflow_status WHERE workflow_uuid = ANY(%s)"
)
_LOOKUP_CHUNK = 10_000


def system_database_url(postgres_url: str, database: str) -> str:
    """The harness's Postgres URL pointed at the dedicated DBOS system database."""
    parts = urlsplit(postgres_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def executor_id(settings: dict[str, Any], run_id: str, worker_index: int) -> str:
    """Stable per worker identity: the same after a restart, so the worker recovers its own work."""
    return str(settings["executor_id_pattern"]).format(run_id=run_id, worker_index=worker_index)


def _recreate_database(postgres_url: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


class DbosClient:
    """Enqueues through ``DBOSClient`` on a thread pool; looks outcomes up with one SQL query."""

    def __init__(self, client: DBOSClient, url: str, settings: dict[str, Any]) -> None:
        self._client = client
        self._url = url
        self._queue = str(settings["queue_name"])
        self._version = str(settings["application_version"])
        # DBOSClient is synchronous: one thread per pooled connection, so no thread waits on the pool.
        self._pool = ThreadPoolExecutor(int(settings["client_pool_size"]), thread_name_prefix="dbos-enqueue")

    def _enqueue(self, workflow_id: str) -> None:
        self._client.enqueue(
            {
                "queue_name": self._queue,
                "workflow_name": WORKFLOW_NAME,
                "workflow_id": workflow_id,
                "app_version": self._version,
            }
        )

    async def submit(self, workflow_id: str) -> None:
        # Returns once the ENQUEUED row is committed (one INSERT transaction in the system database).
        await asyncio.get_running_loop().run_in_executor(self._pool, self._enqueue, workflow_id)

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        import psycopg

        rows: list[tuple[Any, ...]] = []
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            for start in range(0, len(workflow_ids), _LOOKUP_CHUNK):
                cur = await conn.execute(_LOOKUP_SQL, (workflow_ids[start : start + _LOOKUP_CHUNK],))
                rows.extend(await cur.fetchall())
        out = {wf: EngineRecord("not_found") for wf in workflow_ids}
        for wf, status, completed_at, updated_at, created_at, started_at, attempts, executor, version in rows:
            detail = {
                "dbos_status": status,
                "recovery_attempts": attempts,
                "executor_id": executor,
                "application_version": version,
                "created_at_ms": created_at,
                "started_at_ms": started_at,
                "completed_at_ms": completed_at,
                "updated_at_ms": updated_at,
            }
            if status == "SUCCESS":
                # completed_at is set with updated_at by the statement that commits SUCCESS (Postgres now(), ms).
                done_ms = completed_at if completed_at is not None else updated_at
                out[wf] = EngineRecord("completed", int(done_ms) * 1_000_000, detail)
            elif status in _PENDING:
                out[wf] = EngineRecord("pending", None, detail)
            else:  # ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED
                out[wf] = EngineRecord("failed", None, detail)
        return out

    async def close(self) -> None:
        await asyncio.to_thread(self._client.destroy)
        self._pool.shutdown(wait=True)


class DbosEngine:
    name: ClassVar[str] = "dbos"
    description: ClassVar[str] = (
        "DBOS Transact (Python): async workflows on a Postgres-backed queue, DBOSClient enqueues"
    )
    services: ClassVar[tuple[str, ...]] = ("postgres",)

    def unavailable_reason(self) -> str | None:
        for module, package in (("dbos", "dbos==3.4.0"), ("psycopg", "psycopg[binary]")):
            if importlib.util.find_spec(module) is None:
                return f"pip install {package}"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        return {
            "database": "durabench_dbos",  # dedicated system database, dropped and recreated by prepare
            "queue_name": "durabench",
            "worker_concurrency": 1000,  # per worker; DBOS's own queue benchmark default
            "polling_interval_s": 0.05,  # queue poll period (DBOS default 1.0 s quantizes latency)
            "sys_db_pool_size": 10,  # per worker (DBOS default 20; its benchmark uses 5)
            "max_executor_threads": 512,  # DBOS's own benchmark; DBOS default is unbounded
            "client_pool_size": 8,  # driver-side DBOSClient pool and enqueue threads (DBOSClient default 5)
            "application_version": "durabench-1",  # explicit: a source hash would change with every edit
            "executor_id_pattern": "durabench-{run_id}-w{worker_index}",
        }

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for package in ("dbos", "sqlalchemy", "psycopg"):
            try:
                out[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                out[package] = "missing"
        return out

    def _url(self, ctx: EngineContext) -> str:
        return system_database_url(ctx.endpoints["postgres"], str(ctx.settings["database"]))

    def prepare(self, ctx: EngineContext) -> None:
        """Recreate the system database, then migrate it and register the queue in a subprocess."""
        _recreate_database(ctx.endpoints["postgres"], str(ctx.settings["database"]))
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        config_path = ctx.work_dir / "dbos-bootstrap.json"
        WorkerConfig(
            engine=ctx.engine, run_id=ctx.run_id, worker_id="dbos-bootstrap", worker_index=-1,
            endpoints=ctx.endpoints, workload=ctx.workload, settings=ctx.settings, ledger_dir=str(ctx.ledger_dir),
        ).dump(config_path)
        log = ctx.work_dir / "dbos-bootstrap.log"
        proc = procs.spawn(
            [sys.executable, "-m", "engines.dbos.worker", "--bootstrap"],
            log=log,
            env={**os.environ, CONFIG_ENV: str(config_path)},
        )
        try:
            code = proc.wait(BOOTSTRAP_TIMEOUT_S)
        finally:
            procs.stop(proc)
        if code != 0:
            raise RuntimeError(f"DBOS bootstrap (migrations, queue) failed with exit code {code}; see {log}")

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [sys.executable, "-m", "engines.dbos.worker"]

    async def open_client(self, ctx: EngineContext) -> DbosClient:
        from dbos import DBOSClient

        url = self._url(ctx)
        client = await asyncio.to_thread(
            DBOSClient,
            system_database_url=url,
            system_database_pool_size=int(ctx.settings["client_pool_size"]),
            application_name=APP_NAME,
        )
        return DbosClient(client, url, ctx.settings)
