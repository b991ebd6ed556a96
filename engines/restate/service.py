"""The workflow as a Restate user writes it: a Workflow whose ``run`` handler journals each step
with ``ctx.run_typed``. A re-invocation replays the journal: finished steps return their recorded
result without running again.

This file is the adapter's "workflow code" (counted as integration cost); worker.py is the harness
plumbing around it (serving, registration, readiness).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import restate
from restate.retry_policy import InvocationRetryPolicy

from harness.workload import StepRunner


def build(name: str, runner: StepRunner, steps: int, settings: dict[str, Any]) -> restate.Workflow:
    """The workflow service ``name``: ``steps`` journaled steps in order, each payload carried to the next."""
    retry = InvocationRetryPolicy(
        initial_interval=timedelta(seconds=float(settings["retry_initial_interval_s"])),
        exponentiation_factor=float(settings["retry_factor"]),
        max_interval=timedelta(seconds=float(settings["retry_max_interval_s"])),
    )
    wf = restate.Workflow(name, invocation_retry_policy=retry)

    @wf.main()
    async def run(ctx: restate.WorkflowContext, req: dict[str, Any]) -> int:
        workflow_id = ctx.key()
        payload = ""
        for index in range(steps):
            payload = await ctx.run_typed(f"step-{index}", runner.arun, restate.RunOptions(), workflow_id, index, None)
        return len(payload)

    return wf
