"""Restate adapter: a separate orchestrator on its own replicated log (restate-server 1.7.12 from npm,
restate-sdk 1.2.0 services served by hypercorn).

The harness starts the Restate server (harness/run/services.py). Each worker serves a Restate
Workflow over HTTP/2 and registers it as a deployment; the driver starts workflows through the
ingress (``POST /<service>/<id>/run/send``) and reads outcomes with SQL over ``sys_invocation``
(``POST /query`` on the admin API). Settings, sources and recovery: README.md here.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import shutil
import socket
import sys
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from harness.contract import EngineContext, EngineRecord, Workload
from harness.errors import SubmitRejected
from harness.program import STAGE_KINDS

if TYPE_CHECKING:
    import httpx

_QUERY_CHUNK = 500


def service_name(settings: dict[str, Any], worker_index: int) -> str:
    """Worker ``i`` serves its own workflow service (one deployment per worker: README, "Workers")."""
    return f"{settings['service_prefix']}{worker_index}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ns(value: str) -> int:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _claimed(status: str) -> dict[str, bool]:
    """``claimed`` (harness.contract.EngineRecord) from an invocation's status: running, backing-off, suspended
    and paused come after an attempt ran; pending (in a key's inbox) and scheduled (delayed) before any; ready
    can be either (before the first attempt, or after a suspension woke), so it says nothing."""
    if status in ("running", "backing-off", "suspended", "paused"):
        return {"claimed": True}
    if status in ("pending", "scheduled"):
        return {"claimed": False}
    return {}


class RestateClient:
    """Starts workflows through the ingress; looks them up with SQL on the admin API."""

    def __init__(self, ctx: EngineContext) -> None:
        import httpx

        self._ingress = ctx.endpoints["restate"]
        self._admin = ctx.endpoints["restate-admin"]
        self._services = [service_name(ctx.settings, i) for i in range(ctx.workers)]
        limits = httpx.Limits(max_connections=int(ctx.settings["client_connections"]))
        self._http: httpx.AsyncClient = httpx.AsyncClient(limits=limits, timeout=30.0)

    def _service_of(self, workflow_id: str) -> str:
        return self._services[zlib.crc32(workflow_id.encode()) % len(self._services)]

    async def submit(self, workflow_id: str) -> None:
        # /send returns once the ingress appended the invocation to Restate's log (202 Accepted);
        # a repeated id on a Workflow answers "PreviouslyAccepted"
        url = f"{self._ingress}/{self._service_of(workflow_id)}/{workflow_id}/run/send"
        resp = await self._http.post(url, json={})
        if resp.status_code in (200, 202):
            return
        if 400 <= resp.status_code < 500:
            raise SubmitRejected(f"{workflow_id}: ingress answered {resp.status_code}: {resp.text[:200]}")
        resp.raise_for_status()

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        out = {wf: EngineRecord("not_found") for wf in workflow_ids}
        services = ", ".join(f"'{s}'" for s in self._services)
        for start in range(0, len(workflow_ids), _QUERY_CHUNK):
            chunk = workflow_ids[start : start + _QUERY_CHUNK]
            keys = ", ".join("'" + wf.replace("'", "''") + "'" for wf in chunk)
            query = (
                "SELECT target_service_key, status, completion_result, completed_at, retry_count, id"
                f" FROM sys_invocation WHERE target_service_name IN ({services})"
                f" AND target_handler_name = 'run' AND target_service_key IN ({keys})"
            )
            resp = await self._http.post(f"{self._admin}/query", json={"query": query},
                                         headers={"accept": "application/json"})
            resp.raise_for_status()
            for row in resp.json()["rows"]:
                wf = row["target_service_key"]
                detail = {"restate_status": row["status"], "completion_result": row.get("completion_result"),
                          "retry_count": row.get("retry_count"), "invocation_id": row.get("id")}
                if row["status"] == "completed" and row.get("completion_result") == "success":
                    done = row.get("completed_at")
                    out[wf] = EngineRecord("completed", _ns(done) if done else None, detail)
                elif row["status"] == "completed":  # completion_result "failure"
                    out[wf] = EngineRecord("failed", None, detail)
                else:  # pending, scheduled, ready, running, backing-off, suspended, paused
                    out[wf] = EngineRecord("pending", None, {**detail, **_claimed(row["status"])})
        return out

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """Call the Workflow's shared ``signal`` handler through the ingress (a request-response call:
        it returns once the handler resolved the durable promise ``name``, journaled by the server)."""
        url = f"{self._ingress}/{self._service_of(workflow_id)}/{workflow_id}/signal"
        resp = await self._http.post(url, json={"name": name, "payload": payload})
        resp.raise_for_status()

    async def close(self) -> None:
        await self._http.aclose()


class RestateEngine:
    name: ClassVar[str] = "restate"
    description: ClassVar[str] = (
        "Restate 1.7 server (own replicated log) + Python SDK Workflow: ctx.run steps, timers, promises, branch calls"
    )
    services: ClassVar[tuple[str, ...]] = ("restate",)
    recovery_settings: ClassVar[tuple[str, ...]] = ("retry_initial_interval_s", "retry_factor", "retry_max_interval_s")
    workflow_code: ClassVar[tuple[str, ...]] = ("service.py",)
    changed_defaults: ClassVar[dict[str, Any]] = {}  # the retry policy is set to the server's own defaults
    # every stage kind in Restate's own constructs (service.py; README.md, "Programs")
    stages: ClassVar[Mapping[str, str | None]] = dict.fromkeys(STAGE_KINDS)

    def __init__(self) -> None:
        self._ports: dict[int, int] = {}  # worker index -> its deployment's port, stable across restarts

    def unavailable_reason(self) -> str | None:
        for module, package in (("restate", "restate-sdk==1.2.0"), ("hypercorn", "hypercorn"), ("httpx", "httpx")):
            if importlib.util.find_spec(module) is None:
                return f"pip install {package}"
        if shutil.which("npm") is None:
            return "needs npm (Node.js) to install the Restate server once from the npm registry"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        return {
            "service_prefix": "durabench_w",  # worker i serves workflow service durabench_w<i>
            # the invocation retry policy, set on the Workflow to the server's defaults ([default-retry-policy])
            "retry_initial_interval_s": 0.5,
            "retry_factor": 2.0,
            "retry_max_interval_s": 60.0,
            "client_connections": 32,  # driver-side HTTP connections to the ingress (harness plumbing)
        }

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for package in ("restate-sdk", "hypercorn", "httpx"):
            try:
                out[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                out[package] = "missing"
        return out

    def prepare(self, ctx: EngineContext) -> None:
        """Pick each worker's port (its deployment URI must survive restarts). The server is fresh."""
        self._ports = {i: _free_port() for i in range(ctx.workers)}

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        port = self._ports.setdefault(worker_index, _free_port())
        return [sys.executable, "-m", "engines.restate.worker", "--port", str(port)]

    async def open_client(self, ctx: EngineContext) -> RestateClient:
        return await asyncio.to_thread(RestateClient, ctx)
