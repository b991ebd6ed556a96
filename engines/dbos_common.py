"""Helpers shared by the DBOS adapters (``engines.dbos`` and ``engines.dbos_go``).

A library of one engine family, not an adapter (it registers no engine): the system database
(its URL, its recreation), the one-shot bootstrap subprocess, the Python ``DBOSClient``
submitter and the outcome lookup on ``dbos.workflow_status``, the schema DBOS-Python and DBOS-Go
share. Like an adapter it imports only the harness's adapter contract, and dbos/psycopg lazily.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from harness import procs
from harness.contract import CONFIG_ENV, EngineContext, EngineRecord, WorkerConfig

if TYPE_CHECKING:
    from dbos import DBOSClient, EnqueueOptions

APP_NAME = "durabench"  # DBOS application name: owns the queue and the workflows (workers + clients)
WORKFLOW_NAME = "durabench_workflow"  # the name every worker registers; clients enqueue by this name
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


def run_database_url(ctx: EngineContext) -> str:
    """The run's system database: ``settings["database"]`` on the harness's Postgres."""
    return system_database_url(ctx.endpoints["postgres"], str(ctx.settings["database"]))


def package_versions(*packages: str) -> dict[str, str]:
    """Installed versions of Python ``packages`` (``missing`` where not installed)."""
    out: dict[str, str] = {}
    for package in packages:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "missing"
    return out


def recreate_database(postgres_url: str, database: str) -> None:
    """Drop (forcing out any connection) and create ``database``: every run starts empty."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def helper_config(ctx: EngineContext, name: str) -> Path:
    """Write ``<work_dir>/<name>.json``: a WorkerConfig for a helper process (bootstrap, submitter)."""
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.work_dir / f"{name}.json"
    WorkerConfig(
        engine=ctx.engine, run_id=ctx.run_id, worker_id=name, worker_index=-1,
        endpoints=ctx.endpoints, workload=ctx.workload, settings=ctx.settings, ledger_dir=str(ctx.ledger_dir),
    ).dump(path)
    return path


def run_bootstrap(argv: list[str], config_path: Path, log: Path, what: str) -> None:
    """Run the one-shot bootstrap (migrations, queue) with ``config_path``; raise if it fails."""
    proc = procs.spawn(argv, log=log, env={**os.environ, CONFIG_ENV: str(config_path)})
    try:
        code = proc.wait(BOOTSTRAP_TIMEOUT_S)
    finally:
        procs.stop(proc)
    if code != 0:
        raise RuntimeError(f"{what} bootstrap (migrations, queue) failed with exit code {code}; see {log}")


_EXECUTOR_WORKER = re.compile(r"-w(\d+)$")  # executor_id_pattern: durabench-{run_id}-w{worker_index}


def _worker_of_executor(executor: str | None) -> str | None:
    match = _EXECUTOR_WORKER.search(executor or "")
    return f"worker:{match.group(1)}" if match else None


async def lookup_workflow_status(url: str, workflow_ids: list[str]) -> dict[str, EngineRecord]:
    """Outcomes from ``dbos.workflow_status``: one query per 10,000 ids, read-only."""
    import psycopg

    rows: list[tuple[Any, ...]] = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for start in range(0, len(workflow_ids), _LOOKUP_CHUNK):
            cur = await conn.execute(_LOOKUP_SQL, (workflow_ids[start : start + _LOOKUP_CHUNK],))
            rows.extend(await cur.fetchall())
    out = {wf: EngineRecord("not_found") for wf in workflow_ids}
    for wf, *row in rows:
        out[wf] = record_of(*row)
    return out


def record_of(status: str, completed_at: Any, updated_at: Any, created_at: Any, started_at: Any, attempts: Any,
              executor: str | None, version: str | None) -> EngineRecord:
    """The EngineRecord of one ``dbos.workflow_status`` row (the columns of ``_LOOKUP_SQL`` after the id)."""
    detail: dict[str, Any] = {
        "dbos_status": status,
        "recovery_attempts": attempts,
        "executor_id": executor,
        "application_version": version,
        "created_at_ms": created_at,
        "started_at_ms": started_at,
        "completed_at_ms": completed_at,
        "updated_at_ms": updated_at,
    }
    worker = _worker_of_executor(executor)
    if worker is not None and started_at is not None:  # the dequeue, as harness.contract names it
        detail.update(dequeued_by=worker, dequeued_ns=int(started_at) * 1_000_000, start_attempts=attempts)
    if status == "SUCCESS":
        # completed_at is set with updated_at by the statement that commits SUCCESS (Postgres now(), ms).
        done_ms = completed_at if completed_at is not None else updated_at
        return EngineRecord("completed", int(done_ms) * 1_000_000, detail)
    if status in _PENDING:
        # PENDING: an executor started it (a queue's dequeue sets PENDING, its executor_id and started_at);
        # ENQUEUED, DELAYED: still waiting in its queue, no executor has taken it
        return EngineRecord("pending", None, {**detail, "claimed": status == "PENDING"})
    return EngineRecord("failed", None, detail)  # ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED


async def open_dbos_client(url: str, settings: dict[str, Any]) -> DBOSClient:
    """A Python ``DBOSClient`` on the system database, pool sized by ``client_pool_size``."""
    from dbos import DBOSClient

    return await asyncio.to_thread(
        DBOSClient,
        system_database_url=url,
        system_database_pool_size=int(settings["client_pool_size"]),
        application_name=APP_NAME,
    )


class DbosClient:
    """Enqueues through ``DBOSClient`` on a thread pool; looks outcomes up with one SQL query.

    ``portable`` enqueues in DBOS's cross-language ``portable_json`` format (the one a Go worker
    decodes: Go ``dbos/serialization.go``) instead of the Python client's default, pickle.
    """

    def __init__(self, client: DBOSClient, url: str, settings: dict[str, Any], *, portable: bool = False) -> None:
        self._client = client
        self._url = url
        self._queue = str(settings["queue_name"])
        self._version = str(settings["application_version"])
        self._portable = portable
        # DBOSClient is synchronous: one thread per pooled connection, so no thread waits on the pool.
        self._pool = ThreadPoolExecutor(int(settings["client_pool_size"]), thread_name_prefix="dbos-enqueue")

    def _enqueue(self, workflow_id: str) -> None:
        options: EnqueueOptions = {
            "queue_name": self._queue,
            "workflow_name": WORKFLOW_NAME,
            "workflow_id": workflow_id,
            "app_version": self._version,
        }
        if self._portable:
            from dbos import WorkflowSerializationFormat

            options["serialization_type"] = WorkflowSerializationFormat.PORTABLE
        self._client.enqueue(options)

    async def submit(self, workflow_id: str) -> None:
        # Returns once the ENQUEUED row is committed (one INSERT transaction in the system database).
        await asyncio.get_running_loop().run_in_executor(self._pool, self._enqueue, workflow_id)

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """A wait_signal stage's signal: ``DBOSClient.send`` to the workflow on topic ``name`` (one
        insert into ``dbos.notifications``; the payload is the idempotency key)."""
        await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self._client.send(workflow_id, payload, topic=name, idempotency_key=payload))

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        return await lookup_workflow_status(self._url, workflow_ids)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.destroy)
        self._pool.shutdown(wait=True)
