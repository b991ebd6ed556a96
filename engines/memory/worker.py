"""Worker of the in-memory reference engine: runs workflows as asyncio tasks, keeps state in RAM.

It interprets every stage kind of a workflow program (the reference the real engines are compared
with): work and effect steps; calls retried by its own loop under the stage's policy (exponential
backoff, at least Retry-After on 429); parallel branches with ``asyncio.gather``; sleeps with
``asyncio.sleep`` (not durable: a killed worker loses them); signals through its socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

from engines.memory import socket_path
from harness import program
from harness.contract import WorkerConfig
from harness.workload import StepRunner


class Interpreter:
    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner
        self.mailbox: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.arrived: dict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)

    def deliver(self, wf: str, name: str, payload: str) -> None:
        self.mailbox[(wf, name)].append(payload)
        self.arrived[(wf, name)].set()

    async def run(self, wf: str, stages: list[dict[str, Any]]) -> str:
        payload = ""
        for stage in stages:
            payload = await self.stage(wf, stage) or payload
        return payload

    async def stage(self, wf: str, stage: dict[str, Any]) -> str | None:  # noqa: PLR0911 - one return per kind
        r, step, kind = self.runner, stage["step"], stage["kind"]
        if kind == "work":
            return await r.arun(wf, step)
        if kind == "call":
            retry = stage["retry"]
            for attempt in range(1, int(retry["max_attempts"]) + 1):
                try:
                    return await r.acall(wf, step, attempt)
                except program.CallFailed as exc:
                    if attempt == int(retry["max_attempts"]):
                        raise
                    await asyncio.sleep(max(program.backoff_s(retry, attempt), exc.outcome.retry_after_s or 0.0))
        if kind == "effect":
            await r.aeffect(wf, step, 1)
            return None
        if kind == "sleep":
            due_ns = time.time_ns() + int(float(stage["duration_s"]) * 1e9)
            r.timer_set(wf, step, due_ns)
            await asyncio.sleep(max(0.0, (due_ns - time.time_ns()) / 1e9))
            r.timer_fired(wf, step, due_ns)
            return None
        if kind == "wait_signal":
            key = (wf, stage["signal"])
            r.signal_wait(wf, step)
            try:
                await asyncio.wait_for(self.arrived[key].wait(), float(stage["timeout_s"]))
            except TimeoutError:
                r.signal_timeout(wf, step)
                if stage["on_timeout"] == "fail":
                    raise RuntimeError(f"{wf}: no signal {stage['signal']!r} within {stage['timeout_s']}s") from None
                return None
            r.signal_received(wf, step, self.mailbox[key].pop(0))
            if not self.mailbox[key]:
                self.arrived[key].clear()
            return None
        if kind == "parallel":
            async def branch(b: int, stages: list[dict[str, Any]]) -> None:
                r.branch_start(wf, step, b)
                await self.run(wf, stages)
                r.branch_end(wf, step, b)

            await asyncio.gather(*(branch(b, sub) for b, sub in enumerate(stage["branches"])))
            r.join(wf, step)
            return None
        raise ValueError(f"unknown stage kind {kind!r}")


async def main() -> None:
    config = WorkerConfig.load()
    runner = StepRunner(config)
    interp = Interpreter(runner)
    state: dict[str, dict[str, Any]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def workflow(wf: str) -> None:
        try:
            payload = await interp.run(wf, config.workload.program)
        except Exception as exc:
            state[wf] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            return
        state[wf] = {"status": "completed", "completed_ns": time.time_ns(), "bytes": len(payload)}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command, _, rest = (await reader.readline()).decode().strip().partition(" ")
        if command == "SUBMIT":
            state[rest] = {"status": "pending"}
            task = asyncio.create_task(workflow(rest))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            answer = "OK"
        elif command == "SIGNAL":
            wf, name, payload = rest.split(" ", 2)
            if wf in state:
                interp.deliver(wf, name, payload)
                answer = "OK"
            else:
                answer = "ERR unknown workflow"
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
