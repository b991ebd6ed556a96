"""The in-memory reference engine: the harness's test double, and its null engine.

Each worker keeps its workflows in memory only and serves a tiny line protocol on a Unix
socket (SUBMIT, SIGNAL, LOOKUP); it runs every stage kind of a workflow program. It checkpoints
nothing, so a killed worker loses every workflow it held: the checker must report them as lost.
Use it to test the harness and to measure the harness's own ceiling; it says nothing about any
real engine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from harness.contract import STAGE_KINDS, EngineContext, EngineRecord, Workload
from harness.errors import SubmitRejected
from harness.supervisor import python_worker


def socket_path(run_id: str, engine: str, index: int) -> Path:
    return Path(tempfile.gettempdir()) / f"durabench-{engine}-{run_id}-{index}.sock"


class MemoryClient:
    def __init__(self, ctx: EngineContext) -> None:
        self.paths = [socket_path(ctx.run_id, ctx.engine, i) for i in range(ctx.workers)]
        self._rr = itertools.cycle(range(ctx.workers))
        self._owner: dict[str, int] = {}  # workflow id -> the worker it was submitted to

    async def _call(self, index: int, line: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.paths[index]))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.readline()).decode().strip()
        finally:
            writer.close()

    async def submit(self, workflow_id: str) -> None:
        index = self._owner[workflow_id] = next(self._rr)
        try:
            answer = await self._call(index, f"SUBMIT {workflow_id}")
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise SubmitRejected(f"worker:{index} is down: {exc}") from exc
        if answer != "OK":
            raise RuntimeError(f"worker:{index} answered {answer!r}")

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """Deliver to the worker that runs the workflow (it holds the workflow in memory)."""
        index = self._owner[workflow_id]
        answer = await self._call(index, f"SIGNAL {workflow_id} {name} {payload}")
        if answer != "OK":
            raise RuntimeError(f"worker:{index} answered {answer!r}")

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        found: dict[str, dict[str, Any]] = {}
        for index in range(len(self.paths)):
            try:
                found.update(json.loads(await self._call(index, "LOOKUP " + " ".join(workflow_ids))))
            except (ConnectionRefusedError, FileNotFoundError):
                continue
        # no queue: submit hands the workflow to one worker, which starts it at once (claimed while pending)
        return {wf: EngineRecord(found[wf]["status"], found[wf].get("completed_ns"),
                                 {"claimed": True} if found[wf]["status"] == "pending" else {})
                if wf in found else EngineRecord("not_found") for wf in workflow_ids}

    async def close(self) -> None:
        return None


class MemoryEngine:
    name: ClassVar[str] = "memory"
    description: ClassVar[str] = "in-memory reference engine (no durability; loses work on a crash); tests the harness"
    services: ClassVar[tuple[str, ...]] = ()
    stages: ClassVar[Mapping[str, str | None]] = dict.fromkeys(STAGE_KINDS)  # all, in memory (not durable)

    def unavailable_reason(self) -> str | None:
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        return {"durable": False}

    def versions(self) -> dict[str, str]:
        from harness import __version__

        return {"durabench": __version__}

    def prepare(self, ctx: EngineContext) -> None:
        for i in range(ctx.workers):
            socket_path(ctx.run_id, ctx.engine, i).unlink(missing_ok=True)

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return python_worker("engines.memory.worker")

    async def open_client(self, ctx: EngineContext) -> MemoryClient:
        return MemoryClient(ctx)
