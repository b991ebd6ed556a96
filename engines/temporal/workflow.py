"""The durabench workflow for Temporal: the program's stages in Temporal's idiom.

This module is what Temporal's workflow sandbox re-imports for every workflow run: it imports
only the standard library and ``temporalio.workflow`` (no side effects). Step bodies live in the
worker (``engines.temporal.worker``) and are called by their registered names:

- ``work`` / ``call`` / ``effect``: an activity each (``temporal``) or a local activity
  (``temporal-local``); a call's RetryPolicy comes from its stage (initial interval, backoff
  coefficient, maximum interval, maximum attempts) and the activity raises ``ApplicationError``
  with ``next_retry_delay`` = max(Retry-After, the policy's backoff) on a 429;
- ``parallel``: the branches as concurrent coroutines joined with ``asyncio.gather``;
- ``sleep``: ``workflow.sleep``, a durable server-side timer;
- ``wait_signal``: a signal handler plus ``workflow.wait_condition`` with the stage's timeout.

The ledger records of workflow code (timers, signals, branches) go through the worker's
``StepRunner`` (``harness.workload.workflow_recorder``; ``harness`` is passed through the sandbox)
and are written only when the workflow is not replaying its history.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError

WORKFLOW_NAME = "DurabenchWorkflow"
STEP_ACTIVITY = "durabench_step"
CALL_ACTIVITY = "durabench_call"
EFFECT_ACTIVITY = "durabench_effect"
CALL_TIMEOUT_MARGIN_S = 1.0  # start-to-close of a call attempt = the client's attempt timeout + this


@dataclass(frozen=True)
class Plan:
    """The workflow input: the program and how to call its steps (the run's settings)."""

    steps: int
    local: bool  # local activities (no server round trip per step) instead of activities
    start_to_close_s: float
    retry_initial_interval_s: float
    retry_backoff_coefficient: float
    retry_maximum_interval_s: float
    retry_maximum_attempts: int
    heartbeat_timeout_s: float = 0.0  # > 0: activities heartbeat and the server fails them after this silence
    program: list[dict[str, Any]] = field(default_factory=list)


def _record(method: str, *args: Any) -> None:
    """A ledger record from workflow code: skipped while replaying history (it was written then)."""
    if workflow.unsafe.is_replaying():
        return
    with workflow.unsafe.sandbox_unrestricted(), workflow.unsafe.imports_passed_through():
        from harness import workload

        recorder = workload.workflow_recorder()
        getattr(recorder, method)(*args)


@workflow.defn(name=WORKFLOW_NAME)
class DurabenchWorkflow:
    def __init__(self) -> None:
        self.signals: dict[str, list[str]] = defaultdict(list)

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        self.signals[name].append(workflow.payload_converter().from_payload(args[0].payload, str))

    @workflow.run
    async def run(self, plan: Plan) -> str:
        self.plan = plan
        self.wf = workflow.info().workflow_id
        self.retry = RetryPolicy(
            initial_interval=timedelta(seconds=plan.retry_initial_interval_s),
            backoff_coefficient=plan.retry_backoff_coefficient,
            maximum_interval=timedelta(seconds=plan.retry_maximum_interval_s),
            maximum_attempts=plan.retry_maximum_attempts,
        )
        program = plan.program or [{"kind": "work", "step": i} for i in range(plan.steps)]
        return await self.stages(program)

    async def activity(self, name: str, args: list[Any], timeout_s: float, retry: RetryPolicy) -> Any:
        if self.plan.local:
            return await workflow.execute_local_activity(
                name, args=args, result_type=str, start_to_close_timeout=timedelta(seconds=timeout_s),
                retry_policy=retry)
        heartbeat = self.plan.heartbeat_timeout_s
        return await workflow.execute_activity(
            name, args=args, result_type=str, start_to_close_timeout=timedelta(seconds=timeout_s), retry_policy=retry,
            heartbeat_timeout=timedelta(seconds=heartbeat) if heartbeat and name == STEP_ACTIVITY else None)

    async def stages(self, stages: list[dict[str, Any]]) -> str:
        payload = ""
        for stage in stages:
            kind, step = stage["kind"], stage["step"]
            if kind == "work":
                payload = await self.activity(STEP_ACTIVITY, [step, payload], self.plan.start_to_close_s, self.retry)
            elif kind == "call":
                r = stage["retry"]
                policy = RetryPolicy(
                    initial_interval=timedelta(seconds=r["initial_backoff_s"]),
                    backoff_coefficient=r["multiplier"],
                    maximum_interval=timedelta(seconds=r["max_backoff_s"]),
                    maximum_attempts=r["max_attempts"],
                )
                await self.activity(CALL_ACTIVITY, [step], r["attempt_timeout_s"] + CALL_TIMEOUT_MARGIN_S, policy)
            elif kind == "effect":
                await self.activity(EFFECT_ACTIVITY, [step], self.plan.start_to_close_s, self.retry)
            elif kind == "sleep":
                seconds = float(stage["duration_s"])
                # due = the wall clock now + the duration: the server starts the timer later (when this
                # workflow task completes), so an early fire cannot hide. workflow.now() would be the task's
                # start, earlier still by every local activity run in the task.
                _record("timer_set_after", self.wf, step, seconds)
                await workflow.sleep(seconds)
                _record("timer_fired", self.wf, step)
            elif kind == "wait_signal":
                await self.wait_signal(stage)
            elif kind == "parallel":
                await asyncio.gather(*(self.branch(step, b, sub) for b, sub in enumerate(stage["branches"])))
                _record("join", self.wf, step)
            else:
                raise ApplicationError(f"unknown stage kind {kind!r}", non_retryable=True)
        return payload

    async def branch(self, step: int, b: int, stages: list[dict[str, Any]]) -> None:
        _record("branch_start", self.wf, step, b)
        await self.stages(stages)
        _record("branch_end", self.wf, step, b)

    async def wait_signal(self, stage: dict[str, Any]) -> None:
        step, name = stage["step"], stage["signal"]
        _record("signal_wait", self.wf, step)
        try:
            await workflow.wait_condition(lambda: bool(self.signals[name]),
                                          timeout=timedelta(seconds=float(stage["timeout_s"])))
        except TimeoutError:
            _record("signal_timeout", self.wf, step)
            if stage["on_timeout"] == "fail":
                raise ApplicationError(f"no signal {name!r} within {stage['timeout_s']}s",
                                                non_retryable=True) from None
            return
        _record("signal_received", self.wf, step, self.signals[name].pop(0))
