"""The workflow as an absurd user writes it: one task, one ``ctx.step`` checkpoint per step.

This file is the adapter's "workflow code" (counted as integration cost); worker.py is the
harness plumbing around it (configuration, readiness, signals).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from absurd_sdk import Absurd, TaskContext

from durabench_absurd import TASK_NAME
from harness.workload import StepRunner


def register(app: Absurd, runner: StepRunner, steps: int) -> None:
    """Register the workflow task on ``app``: ``steps`` checkpointed steps in order, each one's
    payload carried into the next. A step whose checkpoint exists is not run again on a retry."""

    @app.register_task(TASK_NAME)
    def durabench_workflow(params: Any, ctx: TaskContext) -> dict[str, int]:
        workflow_id = str(params["workflow_id"])
        payload = ""
        for index in range(steps):
            payload = ctx.step(f"step-{index}", partial(runner.run, workflow_id, index, None))
        return {"payload_bytes": len(payload)}
