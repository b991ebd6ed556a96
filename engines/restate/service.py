"""The workflow as a Restate user writes it: a Workflow whose ``run`` handler interprets the program
with Restate's own constructs (README.md, "Programs"). A re-invocation replays the journal: every
``ctx.run``, timer, promise and call already journaled returns its recorded result without running.

- work: ``ctx.run_typed`` (the action's result is journaled);
- call: ``ctx.run_typed`` with the stage's retry policy as ``RunOptions`` (Restate retries the run
  block; a 429 raises ``RetryableError(retry_after=...)``, Restate's per-error retry delay);
- effect: ``ctx.run_typed`` whose action inserts into the application database;
- sleep: ``ctx.sleep`` (a durable timer kept by the server);
- wait_signal: the Workflow's durable promise ``ctx.promise(signal)``, resolved by the shared
  ``signal`` handler, raced against ``ctx.sleep(timeout)`` with ``restate.select``;
- parallel: one call per branch to the ``<name>_branch`` Service (durable RPCs), awaited together
  with ``restate.gather``.

This file is the adapter's "workflow code" (counted as integration cost); worker.py is the harness
plumbing around it (serving, registration, readiness).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, cast

import restate
from restate.exceptions import RetryableError
from restate.retry_policy import InvocationRetryPolicy

from harness import program
from harness.workload import StepRunner


def _call_options(stage: dict[str, Any]) -> restate.RunOptions[str]:
    """The stage's retry policy as Restate's retry options of a run block (restate-sdk 1.2,
    ``restate.context.RunOptions``): max_attempts counts the first attempt, as ours does."""
    retry = stage["retry"]
    return restate.RunOptions(
        max_attempts=int(retry["max_attempts"]),
        initial_retry_interval=timedelta(seconds=float(retry["initial_backoff_s"])),
        retry_interval_factor=float(retry["multiplier"]),
        max_retry_interval=timedelta(seconds=float(retry["max_backoff_s"])),
    )


def build(name: str, runner: StepRunner, stages: list[dict[str, Any]], settings: dict[str, Any]) \
        -> list[restate.Workflow | restate.Service]:
    """The workflow service ``name`` running ``stages``, and ``<name>_branch``, the Service each
    branch of a parallel stage runs in."""
    retry = InvocationRetryPolicy(
        initial_interval=timedelta(seconds=float(settings["retry_initial_interval_s"])),
        exponentiation_factor=float(settings["retry_factor"]),
        max_interval=timedelta(seconds=float(settings["retry_max_interval_s"])),
    )
    wf = restate.Workflow(name, invocation_retry_policy=retry)
    branches = restate.Service(f"{name}_branch", invocation_retry_policy=retry)
    by_step = {s["step"]: s for s in program.walk(stages)}

    async def call_once(workflow_id: str, step: int) -> str:
        try:
            return await runner.acall(workflow_id, step, None)
        except program.CallFailed as exc:
            after = exc.outcome.retry_after_s
            if after is not None:  # 429: Restate's per-error retry delay (RetryableError.retry_after)
                raise RetryableError(str(exc), retry_after=timedelta(seconds=after)) from exc
            raise

    async def effect(workflow_id: str, step: int) -> str:
        await runner.aeffect(workflow_id, step, None)
        return ""

    async def run_stages(ctx: restate.Context, workflow_id: str, seq: list[dict[str, Any]]) -> str:
        payload = ""
        for stage in seq:
            kind, step = stage["kind"], stage["step"]
            if kind == "work":
                payload = await ctx.run_typed(f"step-{step}", runner.arun, restate.RunOptions(), workflow_id, step,
                                              None)
            elif kind == "call":
                await ctx.run_typed(f"call-{step}", call_once, _call_options(stage), workflow_id, step)
            elif kind == "effect":
                await ctx.run_typed(f"effect-{step}", effect, restate.RunOptions(), workflow_id, step)
            elif kind == "sleep":
                seconds = float(stage["duration_s"])
                # written again on every replay until the timer fired: the checker takes the earliest
                runner.timer_set(workflow_id, step, time.time_ns() + int(seconds * 1e9))
                await ctx.sleep(timedelta(seconds=seconds), name=f"timer-{step}")
                runner.timer_fired(workflow_id, step)
            elif kind == "wait_signal":
                # only in the workflow: the scenario schema keeps waits out of branches (BranchStage)
                runner.signal_wait(workflow_id, step)
                which, value = await restate.select(
                    signal=cast(restate.WorkflowContext, ctx).promise(stage["signal"], type_hint=str).value(),
                    timeout=ctx.sleep(timedelta(seconds=float(stage["timeout_s"])), name=f"signal-timeout-{step}"))
                if which == "signal":
                    runner.signal_received(workflow_id, step, value)
                else:
                    runner.signal_timeout(workflow_id, step)
                    if stage["on_timeout"] == "fail":
                        raise restate.TerminalError(f"no signal {stage['signal']!r} in {stage['timeout_s']}s")
            elif kind == "parallel":
                calls = [ctx.service_call(run_branch, {"wf": workflow_id, "parallel": step, "branch": b})
                         for b in range(len(stage["branches"]))]
                await restate.gather(*calls)
                for call in calls:
                    await call  # raises a branch's terminal failure
                runner.join(workflow_id, step)
            else:
                raise restate.TerminalError(f"unknown stage kind {kind!r}")
        return payload

    @branches.handler("run")
    async def run_branch(ctx: restate.Context, req: dict[str, Any]) -> str:
        workflow_id, step, b = str(req["wf"]), int(req["parallel"]), int(req["branch"])
        runner.branch_start(workflow_id, step, b)
        out = await run_stages(ctx, workflow_id, by_step[step]["branches"][b])
        runner.branch_end(workflow_id, step, b)
        return out

    @wf.main()
    async def run(ctx: restate.WorkflowContext, req: dict[str, Any]) -> int:
        return len(await run_stages(ctx, ctx.key(), stages))

    @wf.handler("signal")
    async def signal(ctx: restate.WorkflowSharedContext, req: dict[str, Any]) -> bool:
        """Resolve the durable promise ``req["name"]``; False when it was resolved already (the first
        payload wins: Restate completes a promise once)."""
        promise = ctx.promise(str(req["name"]), type_hint=str)
        if await promise.peek() is not None:
            return False
        try:
            await promise.resolve(str(req["payload"]))
        except restate.TerminalError:  # resolved by a concurrent send in between
            return False
        return True

    return [wf, branches]
