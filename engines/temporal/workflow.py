"""The durabench workflow for Temporal: a chain of steps, each an activity or a local activity.

This module is what Temporal's workflow sandbox re-imports for every workflow run: it imports
only the standard library and ``temporalio.workflow`` (no harness, no side effects). The step
body lives in the worker (``engines.temporal.worker``) and is called by its registered name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

WORKFLOW_NAME = "DurabenchWorkflow"
STEP_ACTIVITY = "durabench_step"


@dataclass(frozen=True)
class Plan:
    """The workflow input: how many steps and how to call them (the run's settings)."""

    steps: int
    local: bool  # local activities (no server round trip per step) instead of activities
    start_to_close_s: float
    retry_initial_interval_s: float
    retry_backoff_coefficient: float
    retry_maximum_interval_s: float
    retry_maximum_attempts: int
    heartbeat_timeout_s: float = 0.0  # > 0: activities heartbeat and the server fails them after this silence


@workflow.defn(name=WORKFLOW_NAME)
class DurabenchWorkflow:
    @workflow.run
    async def run(self, plan: Plan) -> str:
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=plan.retry_initial_interval_s),
            backoff_coefficient=plan.retry_backoff_coefficient,
            maximum_interval=timedelta(seconds=plan.retry_maximum_interval_s),
            maximum_attempts=plan.retry_maximum_attempts,
        )
        timeout = timedelta(seconds=plan.start_to_close_s)
        payload = ""
        for step in range(plan.steps):
            if plan.local:
                payload = await workflow.execute_local_activity(
                    STEP_ACTIVITY, args=[step, payload], result_type=str,
                    start_to_close_timeout=timeout, retry_policy=retry,
                )
            else:
                payload = await workflow.execute_activity(
                    STEP_ACTIVITY, args=[step, payload], result_type=str,
                    start_to_close_timeout=timeout, retry_policy=retry,
                    heartbeat_timeout=timedelta(seconds=plan.heartbeat_timeout_s) if plan.heartbeat_timeout_s else None,
                )
        return payload
