"""The workflow as a procrastinate user writes it: one job per step, each step deferring the next,
plus the stalled-jobs sweep procrastinate's docs prescribe for workers that die mid-job.

This file is the adapter's "workflow code" (counted as integration cost); worker.py is the harness
plumbing around it (configuration, readiness, signals).
"""

from __future__ import annotations

from typing import Any

import procrastinate
from procrastinate import exceptions

from harness.workload import StepRunner

STEP_TASK = "durabench_step"
SWEEP_TASK = "durabench_retry_stalled_jobs"


def register(app: procrastinate.App, runner: StepRunner, steps: int, settings: dict[str, Any]) -> None:
    """Register the step task and the stalled-jobs sweep on ``app``."""
    queue = str(settings["queue_name"])

    @app.task(name=STEP_TASK, queue=queue, pass_context=True)
    async def durabench_step(context: procrastinate.JobContext, workflow_id: str, index: int, payload: str) -> None:
        # the previous step's payload arrives as this job's argument; attempts counts retries of this job
        attempt = context.job.attempts if context.job is not None else None
        out = await runner.arun(workflow_id, index, attempt)
        if index + 1 < steps:
            # the queueing lock refuses a second "todo" job for the next step when this job is retried
            # after it had already deferred it (a worker killed between the defer and the job's success)
            try:
                await durabench_step.configure(queueing_lock=f"{workflow_id}:{index + 1}").defer_async(
                    workflow_id=workflow_id, index=index + 1, payload=out)
            except exceptions.AlreadyEnqueued:
                pass

    # docs/howto/production/retry_stalled_jobs.md: a periodic task retries the jobs of workers whose
    # heartbeat stopped (its example runs every 10 minutes with the 30 s default; sized here, README)
    @app.periodic(cron=str(settings["stalled_sweep_cron"]))
    @app.task(name=SWEEP_TASK, queue=queue, queueing_lock=SWEEP_TASK, pass_context=True)
    async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        stalled = await app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=float(settings["stalled_worker_timeout_s"]))
        for job in stalled:
            await app.job_manager.retry_job(job)
