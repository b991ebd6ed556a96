"""The stage bodies every Python engine runs: the same code, whatever the engine.

A ``work`` step writes ``step_start``, does its work (sleeps its duration, drawn per (seed, workflow,
step) by ``harness.program.step_draw_s``), writes ``step_end`` and returns the payload for the next
stage. A ``call`` step makes one attempt at the
flaky API and raises :class:`harness.program.CallFailed` unless it got 200 (the engine's own retry
mechanism decides what follows); an ``effect`` step inserts one row into the application database.
Workflow code (timers, signals, branches) writes its records through the ``timer_*``, ``signal_*``,
``branch_*`` and ``join`` methods. ``attempt`` is the engine's own attempt counter where it has one
(informational; the checker counts executions from the ledger and calls from the flaky API's log).
Every record is described in docs/engines.md ("Ledger records of programs").
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from harness import program
from harness.contract import WorkerConfig
from harness.ledger import Ledger


class StepRunner:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.ledger = Ledger(config.ledger_dir, config.worker_id)
        self._payload = "x" * config.workload.payload_bytes
        self.stages = {s["step"]: s for s in program.walk(config.workload.program)}
        self._conn: Any = None  # application database connection (sync), per process
        self._conn_pid = -1
        self._aconn: Any = None
        self._alock: asyncio.Lock | None = None

    def ready(self) -> None:
        """Signal that this worker takes work."""
        self.ledger.write("ready")

    # -- work

    def _work_s(self, workflow_id: str, step: int) -> tuple[float, str]:
        """The step's duration (drawn from the scenario seed, the workflow and the step: the same on every
        engine and every execution) and its payload."""
        stage = self.stages.get(step)
        if stage is None or stage["kind"] != "work":
            return self.config.workload.step_duration_s, self._payload
        seconds = program.step_draw_s(stage["duration"], self.config.workload.seed, workflow_id, step)
        return seconds, "x" * int(stage["payload_bytes"])

    def run(self, workflow_id: str, step: int, attempt: int | None = None) -> str:
        """One execution of a ``work`` step (blocking)."""
        seconds, payload = self._work_s(workflow_id, step)
        self.ledger.write("step_start", wf=workflow_id, step=step, attempt=attempt, duration_s=seconds)
        if seconds > 0:
            time.sleep(seconds)
        self.ledger.write("step_end", wf=workflow_id, step=step, attempt=attempt)
        return payload

    async def arun(self, workflow_id: str, step: int, attempt: int | None = None) -> str:
        """One execution of a ``work`` step (asyncio)."""
        seconds, payload = self._work_s(workflow_id, step)
        self.ledger.write("step_start", wf=workflow_id, step=step, attempt=attempt, duration_s=seconds)
        if seconds > 0:
            await asyncio.sleep(seconds)
        self.ledger.write("step_end", wf=workflow_id, step=step, attempt=attempt)
        return payload

    # -- call

    def _call_done(self, wf: str, step: int, attempt: int | None, out: program.CallOutcome, t0: int) -> str:
        self.ledger.write("call_attempt", wf=wf, step=step, attempt=attempt, status=out.status,
                          retry_after_s=out.retry_after_s, sent_ns=t0)
        if not out.ok:
            self.ledger.write("step_error", wf=wf, step=step, attempt=attempt, error=f"status {out.status}")
            raise program.CallFailed(out)
        self.ledger.write("step_end", wf=wf, step=step, attempt=attempt)
        return out.body

    def call(self, workflow_id: str, step: int, attempt: int | None = None) -> str:
        """One attempt of a ``call`` step (blocking); raises CallFailed unless the API answered 200."""
        timeout = float(self.stages[step]["retry"]["attempt_timeout_s"])
        t0 = self.ledger.write("step_start", wf=workflow_id, step=step, attempt=attempt)
        out = program.call_sync(self.config.endpoints["flaky_api"], workflow_id, step, attempt,
                                self.config.worker_id, timeout)
        return self._call_done(workflow_id, step, attempt, out, t0)

    async def acall(self, workflow_id: str, step: int, attempt: int | None = None) -> str:
        """One attempt of a ``call`` step (asyncio); raises CallFailed unless the API answered 200."""
        timeout = float(self.stages[step]["retry"]["attempt_timeout_s"])
        t0 = self.ledger.write("step_start", wf=workflow_id, step=step, attempt=attempt)
        out = await program.call_async(self.config.endpoints["flaky_api"], workflow_id, step, attempt,
                                       self.config.worker_id, timeout)
        return self._call_done(workflow_id, step, attempt, out, t0)

    # -- effect

    def effect_statement(self, workflow_id: str, step: int, attempt: int | None) -> tuple[str, tuple[Any, ...]]:
        """The insert of one application of effect ``step`` (psycopg placeholders) and its parameters."""
        row = (workflow_id, step, attempt, self.config.worker_id)
        if self.stages[step]["idempotency"] == "key":
            return program.EFFECT_INSERT_KEY, (*row, program.effect_key(workflow_id, step))
        return program.EFFECT_INSERT_NONE, row

    def effect_started(self, workflow_id: str, step: int, attempt: int | None) -> None:
        self.ledger.write("step_start", wf=workflow_id, step=step, attempt=attempt)

    def effect_seconds(self, step: int) -> float:
        """The effect step's time after its insert (the stage's ``duration_s``)."""
        return float(self.stages[step].get("duration_s", 0.0))

    def effect_applied(self, workflow_id: str, step: int, attempt: int | None, inserted: bool) -> None:
        """After the effect's transaction committed: ``inserted`` False when the key deduplicated it."""
        self.ledger.write("effect_applied", wf=workflow_id, step=step, attempt=attempt, inserted=inserted,
                          idempotency=self.stages[step]["idempotency"])

    def effect_committed(self, workflow_id: str, step: int, attempt: int | None, inserted: bool) -> None:
        self.effect_applied(workflow_id, step, attempt, inserted)
        self.ledger.write("step_end", wf=workflow_id, step=step, attempt=attempt)

    def effect(self, workflow_id: str, step: int, attempt: int | None = None) -> None:
        """Apply effect ``step`` in its own transaction on the application database (blocking)."""
        import psycopg

        if self._conn is None or self._conn_pid != os.getpid():  # a forked pool child opens its own
            self._conn = psycopg.connect(self.config.endpoints["app_db"], autocommit=True)
            self._conn_pid = os.getpid()
        self.effect_started(workflow_id, step, attempt)
        sql, params = self.effect_statement(workflow_id, step, attempt)
        try:
            cur = self._conn.execute(sql, params)  # autocommit: one transaction, committed here
        except psycopg.OperationalError:
            self._conn = None  # reconnect on the next attempt (the engine retries the step)
            raise
        self.effect_applied(workflow_id, step, attempt, cur.rowcount == 1)
        if self.effect_seconds(step) > 0:  # the rest of the step, after its write committed
            time.sleep(self.effect_seconds(step))
        self.ledger.write("step_end", wf=workflow_id, step=step, attempt=attempt)

    async def aeffect(self, workflow_id: str, step: int, attempt: int | None = None) -> None:
        """Apply effect ``step`` in its own transaction on the application database (asyncio)."""
        import psycopg

        if self._alock is None:
            self._alock = asyncio.Lock()
        self.effect_started(workflow_id, step, attempt)
        sql, params = self.effect_statement(workflow_id, step, attempt)
        async with self._alock:
            if self._aconn is None:
                self._aconn = await psycopg.AsyncConnection.connect(self.config.endpoints["app_db"], autocommit=True)
            try:
                cur = await self._aconn.execute(sql, params)  # autocommit: committed here
            except psycopg.OperationalError:
                self._aconn = None
                raise
        self.effect_applied(workflow_id, step, attempt, cur.rowcount == 1)
        if self.effect_seconds(step) > 0:  # the rest of the step, after its write committed
            await asyncio.sleep(self.effect_seconds(step))
        self.ledger.write("step_end", wf=workflow_id, step=step, attempt=attempt)

    # -- records written by workflow code (timers, signals, branches)

    def timer_set(self, workflow_id: str, step: int, due_ns: int) -> None:
        self.ledger.write("timer_set", wf=workflow_id, step=step, due_ns=due_ns)

    def timer_set_after(self, workflow_id: str, step: int, seconds: float) -> None:
        """``timer_set`` due ``seconds`` from now (the wall clock)."""
        self.timer_set(workflow_id, step, time.time_ns() + int(seconds * 1e9))

    def timer_fired(self, workflow_id: str, step: int, due_ns: int | None = None) -> None:
        self.ledger.write("timer_fired", wf=workflow_id, step=step, due_ns=due_ns)

    def signal_wait(self, workflow_id: str, step: int) -> None:
        self.ledger.write("signal_wait", wf=workflow_id, step=step, signal=self.stages[step]["signal"])

    def signal_received(self, workflow_id: str, step: int, payload: Any) -> None:
        self.ledger.write("signal_received", wf=workflow_id, step=step, signal=self.stages[step]["signal"],
                          payload=payload)

    def signal_timeout(self, workflow_id: str, step: int) -> None:
        self.ledger.write("signal_timeout", wf=workflow_id, step=step, signal=self.stages[step]["signal"],
                          on_timeout=self.stages[step]["on_timeout"])

    def branch_start(self, workflow_id: str, step: int, branch: int) -> None:
        self.ledger.write("branch_start", wf=workflow_id, step=step, branch=branch)

    def branch_end(self, workflow_id: str, step: int, branch: int) -> None:
        self.ledger.write("branch_end", wf=workflow_id, step=step, branch=branch)

    def join(self, workflow_id: str, step: int) -> None:
        self.ledger.write("join", wf=workflow_id, step=step)


_recorder: StepRunner | None = None


def set_workflow_recorder(runner: StepRunner) -> None:
    """Make ``runner`` the recorder of workflow code that cannot hold a reference (Temporal's sandbox
    re-imports workflow modules; ``harness`` is passed through, so this module is shared)."""
    global _recorder  # noqa: PLW0603 - one per worker process
    _recorder = runner


def workflow_recorder() -> StepRunner:
    if _recorder is None:
        raise RuntimeError("no workflow recorder: the worker must call set_workflow_recorder first")
    return _recorder
