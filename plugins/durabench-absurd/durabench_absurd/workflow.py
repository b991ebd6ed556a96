"""The workflow as an absurd user writes it: one task interpreting the program with absurd's own
constructs (README.md next to this package, "Programs"):

- work: ``ctx.step`` (the checkpoint carries the payload to the next stage);
- call: ``ctx.step`` making one attempt; a failed attempt raises, which fails the run, and absurd
  retries the task under its spawn-time ``retry_strategy`` (the client sets it from the stage's
  policy), resuming after the last checkpoint;
- effect: ``ctx.step`` whose body inserts into the application database;
- sleep: ``ctx.sleep_for`` (a checkpointed wake-up time; the task is suspended, not held);
- wait_signal: ``ctx.await_event`` on the event ``<signal>:<workflow id>`` (the driver emits it),
  with the stage's timeout (absurd raises its ``TimeoutError``; ``on_timeout: fail`` cancels the task).

A re-run re-executes this function: every stored checkpoint is returned without running again.
This file is the adapter's "workflow code" (counted as integration cost); worker.py is the
harness plumbing around it (configuration, readiness, signals).
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any

import absurd_sdk
from absurd_sdk import Absurd, TaskContext

from durabench_absurd import TASK_NAME, event_name
from harness.workload import StepRunner


def register(app: Absurd, runner: StepRunner, stages: list[dict[str, Any]]) -> None:
    """Register the workflow task on ``app``, running ``stages`` in order."""

    def effect(workflow_id: str, step: int) -> bool:
        runner.effect(workflow_id, step, None)
        return True

    @app.register_task(TASK_NAME)
    def durabench_workflow(params: Any, ctx: TaskContext) -> dict[str, int]:
        workflow_id = str(params["workflow_id"])
        payload = ""
        for stage in stages:
            kind, step = stage["kind"], stage["step"]
            if kind == "work":
                payload = ctx.step(f"step-{step}", partial(runner.run, workflow_id, step, None))
            elif kind == "call":
                ctx.step(f"call-{step}", partial(runner.call, workflow_id, step, None))
            elif kind == "effect":
                ctx.step(f"effect-{step}", partial(effect, workflow_id, step))
            elif kind == "sleep":
                seconds = float(stage["duration_s"])
                # re-written by every re-run until the timer fired: the checker takes the earliest
                runner.timer_set(workflow_id, step, time.time_ns() + int(seconds * 1e9))
                ctx.sleep_for(f"timer-{step}", seconds)  # suspends the task until due (SuspendTask)
                runner.timer_fired(workflow_id, step)
            elif kind == "wait_signal":
                # a timeout is checkpointed too: a later run must not wait again (on_timeout: continue)
                timed_out = ctx.begin_step(f"signal-timeout-{step}")
                if timed_out.done:
                    continue
                runner.signal_wait(workflow_id, step)
                try:  # absurd takes whole seconds
                    got = ctx.await_event(event_name(stage["signal"], workflow_id), step_name=f"signal-{step}",
                                          timeout=math.ceil(float(stage["timeout_s"])))
                except absurd_sdk.TimeoutError:
                    runner.signal_timeout(workflow_id, step)
                    if stage["on_timeout"] == "fail":
                        # absurd has no non-retryable failure (a failed run is retried under
                        # max_attempts): cancelling is its terminal stop for a task
                        app.cancel_task(ctx.task_id)
                        raise absurd_sdk.CancelledTask() from None
                    ctx.complete_step(timed_out, True)
                else:
                    runner.signal_received(workflow_id, step, got)
            else:
                raise ValueError(f"the absurd adapter does not run {kind!r} stages")
        return {"payload_bytes": len(payload)}
