"""DBOS-Go adapter: DBOS Transact for Go (dbos-transact-golang) checkpointing into the harness's Postgres.

Workers, the one-shot bootstrap (migrations, queue) and the default submitter are one Go binary
built from this folder by ``harness.gobuild`` (``<binary> worker|bootstrap|submit``). The
harness process only runs SQL (create the database, look outcomes up) and talks to the Go
submitter over a pipe. What it shares with the Python ``dbos`` adapter (system database, bootstrap
runner, ``DBOSClient`` submitter, lookup) is in ``engines.dbos_common``. See README.md in this
folder for every setting and its source.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from engines import goworkers
from engines.dbos_common import (
    DbosClient,
    helper_config,
    lookup_workflow_status,
    open_dbos_client,
    package_versions,
    recreate_database,
    run_bootstrap,
    run_database_url,
)
from harness import gobuild, procs
from harness.contract import CONFIG_ENV, STAGE_KINDS, EngineContext, EngineRecord, Workload
from harness.errors import UserError

SRC_DIR = Path(__file__).resolve().parent
BINARY = "dbos_go"  # harness.gobuild names a binary after its source directory
SUBMITTER_START_TIMEOUT_S = 60.0
SUBMITTER_STOP_TIMEOUT_S = 10.0


class GoSubmitter:
    """A long-lived ``<binary> submit`` process: one request per stdin line, one answer per request.

    A request is a workflow id to enqueue, or ``send<TAB>key<TAB>workflow id<TAB>topic<TAB>payload``
    (a signal: ``dbos.Send``). Answers (``ok <id|key>`` / ``err <id|key> <message>``) come back in
    completion order; each pending request waits on a future keyed by its id or key. The process
    leaves when its stdin closes, so it never outlives the driver; it is also registered with the
    harness's reaper.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self._argv = argv
        self._env = env
        self._log = log
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._write_lock = asyncio.Lock()
        self._sends = 0

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
                fut.set_exception(RuntimeError(f"dbos-go request {wf} failed: {message}"))
        error = RuntimeError(f"dbos-go submitter exited (code {self._proc.returncode if self._proc else None});"
                             f" see {self._log}")
        for waiters in self._pending.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
        self._pending.clear()

    async def submit(self, workflow_id: str) -> None:
        """Enqueue ``workflow_id``; return once the Go client committed it."""
        await self._request(workflow_id, workflow_id)

    async def send(self, workflow_id: str, topic: str, payload: str) -> None:
        """``dbos.Send(client, workflow_id, payload, topic)``; return once committed."""
        fields = (workflow_id, topic, payload)
        if any(ch in f for f in fields for ch in "\t\n\r"):
            raise ValueError(f"dbos-go: a send's fields cannot hold tabs or newlines: {fields!r}")
        self._sends += 1
        key = f"send-{self._sends}"
        await self._request("\t".join(("send", key, *fields)), key)

    async def _request(self, line: str, key: str) -> None:
        """Write one request line; await the answer line keyed ``key``."""
        proc = self._proc
        if proc is None or proc.stdin is None or self._reader is None or self._reader.done():
            raise RuntimeError(f"dbos-go submitter is not running; see {self._log}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(fut)
        try:
            async with self._write_lock:
                proc.stdin.write(line.encode() + b"\n")
                await proc.stdin.drain()
            await fut
        finally:
            waiters = self._pending.get(key)
            if waiters and fut in waiters:  # cancelled before its answer arrived
                waiters.remove(fut)
                if not waiters:
                    del self._pending[key]

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
    """Submits and signals through the Go submitter process; looks outcomes up with SQL (``engines.dbos_common``)."""

    def __init__(self, url: str, submitter: GoSubmitter) -> None:
        self._url = url
        self._submitter = submitter

    async def submit(self, workflow_id: str) -> None:
        await self._submitter.submit(workflow_id)

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """A ``wait_signal`` stage's signal: ``dbos.Send`` to the workflow on the topic ``name``."""
        await self._submitter.send(workflow_id, name, payload)

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        return await lookup_workflow_status(self._url, workflow_ids)

    async def close(self) -> None:
        await self._submitter.close()


class PortableDbosClient(DbosClient):
    """``submitter: python``: ``DBOSClient`` enqueues and sends in the ``portable_json`` format."""

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """``DBOSClient.send`` in the portable format: the Go worker's ``dbos.Recv[string]`` cannot read
        the Python client's default (pickle)."""
        from dbos import WorkflowSerializationFormat

        def send() -> None:
            self._client.send(workflow_id, payload, topic=name, idempotency_key=payload,
                              serialization_type=WorkflowSerializationFormat.PORTABLE)

        await asyncio.get_running_loop().run_in_executor(self._pool, send)


class DbosGoEngine:
    name: ClassVar[str] = "dbos-go"
    description: ClassVar[str] = (
        "DBOS Transact Go: workflows on a Postgres-backed queue, Go workers, Go client enqueues"
    )
    services: ClassVar[tuple[str, ...]] = ("postgres",)
    # integration cost (harness/integration.py): the workflow is a closure inside serve (with DBOS's setup)
    workflow_code: ClassVar[tuple[str, ...]] = ("main.go:serve",)
    changed_defaults: ClassVar[dict[str, Any]] = {
        "polling_interval_s": 1.0,
        "worker_concurrency": None,
        "sys_db_pool_size": 20,
        "application_version": "<hash of the binary's workflows>",
        "executor_id_pattern": "local",
    }
    # Every stage kind, natively (README "Programs"): steps with step retries, child workflows,
    # dbos.Sleep, dbos.Recv / Send, dbos.RunAsTransaction on the application database.
    stages: ClassVar[Mapping[str, str | None]] = dict.fromkeys(STAGE_KINDS)

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("psycopg") is None:
            return "pip install psycopg[binary]"
        return goworkers.unavailable_reason(SRC_DIR, BINARY)

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
            "app_db_pool_size": 5,  # per worker: the application database's pool (effect stages), as `dbos`
            "child_poll_interval_s": 0.05,  # a recovered parallel stage polls its branches (library default 1 s)
        }

    def versions(self) -> dict[str, str]:
        return {
            "dbos-transact-golang": goworkers.module_version(SRC_DIR, "github.com/dbos-inc/dbos-transact-golang"),
            "pgx": goworkers.module_version(SRC_DIR, "github.com/jackc/pgx/v5"),
            "go": goworkers.toolchain_version(),
            **package_versions("psycopg", "dbos"),
        }

    def prepare(self, ctx: EngineContext) -> None:
        """Build the Go binary, recreate the system database, then migrate it and register the queue."""
        binary = gobuild.build(SRC_DIR, BINARY)
        recreate_database(ctx.endpoints["postgres"], str(ctx.settings["database"]))
        run_bootstrap([str(binary), "bootstrap"], helper_config(ctx, "dbos-go-bootstrap"),
                      ctx.work_dir / "logs" / "dbos-go-bootstrap.log", "DBOS-Go")

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [str(gobuild.build(SRC_DIR, BINARY)), "worker"]

    async def open_client(self, ctx: EngineContext) -> DbosGoClient | DbosClient:
        url = run_database_url(ctx)
        kind = str(ctx.settings["submitter"])
        if kind == "go":
            binary = await asyncio.to_thread(gobuild.build, SRC_DIR, BINARY)
            config_path = helper_config(ctx, "dbos-go-submitter")
            submitter = GoSubmitter([str(binary), "submit"], {**os.environ, CONFIG_ENV: str(config_path)},
                                    ctx.work_dir / "logs" / "dbos-go-submitter.log")
            await submitter.start()
            return DbosGoClient(url, submitter)
        if kind == "python":
            # portable_json: the cross-language format the Go worker decodes (dbos/serialization.go).
            return PortableDbosClient(await open_dbos_client(url, ctx.settings), url, ctx.settings, portable=True)
        raise UserError(f"dbos-go: setting submitter must be 'go' or 'python', not {kind!r}")
