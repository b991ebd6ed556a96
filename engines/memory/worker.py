"""Worker of the in-memory reference engine: runs workflows as asyncio tasks, keeps state in RAM."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from engines.memory import socket_path
from harness.contract import WorkerConfig
from harness.workload import StepRunner


async def main() -> None:
    config = WorkerConfig.load()
    runner = StepRunner(config)
    state: dict[str, dict[str, Any]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def workflow(wf: str) -> None:
        payload = ""
        for step in range(config.workload.steps):
            payload = await runner.arun(wf, step)
        state[wf] = {"status": "completed", "completed_ns": time.time_ns(), "bytes": len(payload)}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command, _, rest = (await reader.readline()).decode().strip().partition(" ")
        if command == "SUBMIT":
            state[rest] = {"status": "pending"}
            task = asyncio.create_task(workflow(rest))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            answer = "OK"
        elif command == "LOOKUP":
            answer = json.dumps({wf: state[wf] for wf in rest.split() if wf in state})
        else:
            answer = "ERR unknown command"
        writer.write(answer.encode() + b"\n")
        await writer.drain()
        writer.close()

    path = socket_path(config.run_id, config.engine, config.worker_index)
    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(serve, str(path))
    runner.ready()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
