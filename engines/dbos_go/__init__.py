"""DBOS-Go adapter: DBOS Transact for Go (dbos-transact-golang) checkpointing into the harness's Postgres.

Workers, the one-shot bootstrap (migrations, queue) and the default submitter are one Go binary
built from this folder by ``harness.gobuild`` (``<binary> worker|bootstrap|submit``). The
harness process only runs SQL (create the database, look outcomes up) and talks to the Go
submitter over a pipe. See README.md in this folder for every setting and its source.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from harness import gobuild, procs
from harness.contract import CONFIG_ENV, EngineContext, EngineRecord, WorkerConfig, Workload
from harness.errors import UserError

if TYPE_CHECKING:
    from dbos import DBOSClient

SRC_DIR = Path(__file__).resolve().parent
BINARY = "dbos_go"  # harness.gobuild names a binary after its source directory
APP_NAME = "durabench"  # DBOS application name (worker, bootstrap and submitters alike)
WORKFLOW_NAME = "durabench_workflow"  # the name the Go worker registers
SCHEMA = "dbos"
BOOTSTRAP_TIMEOUT_S = 120.0
SUBMITTER_START_TIMEOUT_S = 60.0
SUBMITTER_STOP_TIMEOUT_S = 10.0

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


def _recreate_database(postgres_url: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


async def lookup_workflow_status(url: str, workflow_ids: list[str]) -> dict[str, EngineRecord]:
    """Outcomes from ``dbos.workflow_status`` (the schema DBOS-Go and DBOS-Python share)."""
    import psycopg

    rows: list[tuple[Any, ...]] = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
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
            # completed_at and updated_at are set by the statement that commits SUCCESS (Postgres now(), ms).
            done_ms = completed_at if completed_at is not None else updated_at
            out[wf] = EngineRecord("completed", int(done_ms) * 1_000_000, detail)
        elif status in _PENDING:
            out[wf] = EngineRecord("pending", None, detail)
        else:  # ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED
            out[wf] = EngineRecord("failed", None, detail)
    return out


def _helper_config(ctx: EngineContext, role: str) -> Path:
    """A WorkerConfig file for the bootstrap or the submitter (they read the same JSON as workers)."""
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.work_dir / f"dbos-go-{role}.json"
    WorkerConfig(
        engine=ctx.engine, run_id=ctx.run_id, worker_id=f"dbos-go-{role}", worker_index=-1,
        endpoints=ctx.endpoints, workload=ctx.workload, settings=ctx.settings, ledger_dir=str(ctx.ledger_dir),
    ).dump(path)
    return path


class GoSubmitter:
    """A long-lived ``<binary> submit`` process: one workflow id per stdin line, one answer per id.

    Answers (``ok <id>`` / ``err <id> <message>``) come back in completion order; each pending
    submit waits on a future keyed by its id. The process leaves when its stdin closes, so it
    never outlives the driver; it is also registered with the harness's reaper.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self._argv = argv
        self._env = env
        self._log = log
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=self._env,
                start_new_session=True,  # its own process group, killed by the reaper if the harness dies
            )
        procs.REGISTRY.add(proc.pid)
        self._proc = proc
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), SUBMITTER_START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.close()
            raise RuntimeError(f"dbos-go submitter did not start (said {line!r}); see {self._log}")
        self._reader = asyncio.create_task(self._read_answers(proc.stdout))

    async def _read_answers(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            verdict, _, rest = line.decode().rstrip("\n").partition(" ")
            wf, _, message = rest.partition(" ")
            waiters = self._pending.get(wf)
            if not waiters:
                continue  # its submit was cancelled (driver timeout)
            fut = waiters.pop(0)
            if not waiters:
                del self._pending[wf]
            if fut.done():
                continue
            if verdict == "ok":
                fut.set_result(None)
            else:
                fut.set_exception(RuntimeError(f"dbos-go enqueue of {wf} failed: {message}"))
        error = RuntimeError(f"dbos-go submitter exited (code {self._proc.returncode if self._proc else None});"
                             f" see {self._log}")
        for waiters in self._pending.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
        self._pending.clear()

    async def submit(self, workflow_id: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._reader is None or self._reader.done():
            raise RuntimeError(f"dbos-go submitter is not running; see {self._log}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(workflow_id, []).append(fut)
        try:
            async with self._write_lock:
                proc.stdin.write(workflow_id.encode() + b"\n")
                await proc.stdin.drain()
            await fut
        finally:
            waiters = self._pending.get(workflow_id)
            if waiters and fut in waiters:  # cancelled before its answer arrived
                waiters.remove(fut)
                if not waiters:
                    del self._pending[workflow_id]

    async def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # EOF: the submitter finishes what is in flight and exits
        try:
            await asyncio.wait_for(proc.wait(), SUBMITTER_STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        procs.REGISTRY.remove(proc.pid)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._proc = None


class DbosGoClient:
    """Submits through the Go submitter (default) or DBOSClient (Python, portable JSON); looks up with SQL."""

    def __init__(self, url: str, settings: dict[str, Any], submitter: GoSubmitter | None,
                 py_client: DBOSClient | None) -> None:
        self._url = url
        self._submitter = submitter
        self._py_client = py_client
        self._queue = str(settings["queue_name"])
        self._version = str(settings["application_version"])
        self._pool = (ThreadPoolExecutor(int(settings["client_pool_size"]), thread_name_prefix="dbos-go-enqueue")
                      if py_client is not None else None)

    def _enqueue_portable(self, workflow_id: str) -> None:
        from dbos import WorkflowSerializationFormat

        assert self._py_client is not None
        # portable_json: the cross-language format the Go library decodes (dbos/serialization.go).
        self._py_client.enqueue({
            "queue_name": self._queue,
            "workflow_name": WORKFLOW_NAME,
            "workflow_id": workflow_id,
            "app_version": self._version,
            "serialization_type": WorkflowSerializationFormat.PORTABLE,
        })

    async def submit(self, workflow_id: str) -> None:
        if self._submitter is not None:
            await self._submitter.submit(workflow_id)
        else:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._enqueue_portable, workflow_id)

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        return await lookup_workflow_status(self._url, workflow_ids)

    async def close(self) -> None:
        if self._submitter is not None:
            await self._submitter.close()
        if self._py_client is not None:
            await asyncio.to_thread(self._py_client.destroy)
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _go_module_version(module: str) -> str:
    text = (SRC_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(\S+)", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def go_toolchain_version() -> str:
    if shutil.which("go") is None:
        return "absent"
    try:
        return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class DbosGoEngine:
    name: ClassVar[str] = "dbos-go"
    description: ClassVar[str] = (
        "DBOS Transact Go: workflows on a Postgres-backed queue, Go workers, Go client enqueues"
    )
    services: ClassVar[tuple[str, ...]] = ("postgres",)

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("psycopg") is None:
            return "pip install psycopg[binary]"
        if gobuild.cached(SRC_DIR, BINARY) is not None:
            return None
        return gobuild.go_unavailable_reason()

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        return {
            "database": "durabench_dbos_go",  # dedicated system database, dropped and recreated by prepare
            "queue_name": "durabench",
            "worker_concurrency": 1000,  # per worker, as the Python adapter (DBOS benchmark default)
            "polling_interval_s": 0.05,  # queue base polling interval (DBOS-Go default 1 s)
            "sys_db_pool_size": 10,  # per worker: pgx pool_max_conns (DBOS-Go default 20)
            "client_pool_size": 8,  # submitter's pool (pool_max_conns), or DBOSClient's for submitter=python
            "application_version": "durabench-1",  # explicit: else DBOS-Go hashes the binary's workflows
            "executor_id_pattern": "durabench-{run_id}-w{worker_index}",
            "submitter": "go",  # "go": Go client in a long-lived process; "python": DBOSClient, portable JSON
            "enqueue_retry_connection_errors": True,  # Go submitter: retry like DBOSClient does (README)
        }

    def versions(self) -> dict[str, str]:
        out = {
            "dbos-transact-golang": _go_module_version("github.com/dbos-inc/dbos-transact-golang"),
            "pgx": _go_module_version("github.com/jackc/pgx/v5"),
            "go": go_toolchain_version(),
        }
        for package in ("psycopg", "dbos"):
            try:
                out[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                out[package] = "missing"
        return out

    def _url(self, ctx: EngineContext) -> str:
        return system_database_url(ctx.endpoints["postgres"], str(ctx.settings["database"]))

    def prepare(self, ctx: EngineContext) -> None:
        """Build the Go binary, recreate the system database, then migrate it and register the queue."""
        binary = gobuild.build(SRC_DIR, BINARY)
        _recreate_database(ctx.endpoints["postgres"], str(ctx.settings["database"]))
        config_path = _helper_config(ctx, "bootstrap")
        log = ctx.work_dir / "logs" / "dbos-go-bootstrap.log"
        proc = procs.spawn([str(binary), "bootstrap"], log=log, env={**os.environ, CONFIG_ENV: str(config_path)})
        try:
            code = proc.wait(BOOTSTRAP_TIMEOUT_S)
        finally:
            procs.stop(proc)
        if code != 0:
            raise RuntimeError(f"DBOS-Go bootstrap (migrations, queue) failed with exit code {code}; see {log}")

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [str(gobuild.build(SRC_DIR, BINARY)), "worker"]

    async def open_client(self, ctx: EngineContext) -> DbosGoClient:
        url = self._url(ctx)
        kind = str(ctx.settings["submitter"])
        if kind == "go":
            binary = await asyncio.to_thread(gobuild.build, SRC_DIR, BINARY)
            config_path = _helper_config(ctx, "submitter")
            submitter = GoSubmitter([str(binary), "submit"], {**os.environ, CONFIG_ENV: str(config_path)},
                                    ctx.work_dir / "logs" / "dbos-go-submitter.log")
            await submitter.start()
            return DbosGoClient(url, ctx.settings, submitter, None)
        if kind == "python":
            from dbos import DBOSClient

            client = await asyncio.to_thread(
                DBOSClient, system_database_url=url,
                system_database_pool_size=int(ctx.settings["client_pool_size"]), application_name=APP_NAME,
            )
            return DbosGoClient(url, ctx.settings, None, client)
        raise UserError(f"dbos-go: setting submitter must be 'go' or 'python', not {kind!r}")
