"""One Temporal worker process: ``python -m engines.temporal.worker`` (config in $DURABENCH_WORKER_CONFIG).

Polls the run's task queue with identity ``config.worker_id``, runs the durabench workflow and
its step activity (regular or local, per ``settings["local_activities"]``), writes ``ready``
once the server has seen this process's polls, and runs until SIGTERM (graceful) or SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from engines.temporal.workflow import CALL_ACTIVITY, EFFECT_ACTIVITY, STEP_ACTIVITY, DurabenchWorkflow
from engines.temporal_common import TemporalClient, connect, frontend, retry_until, task_queue
from harness import events
from harness.contract import EngineContext, WorkerConfig
from harness.program import CallFailed, next_retry_delay_s
from harness.workload import StepRunner, set_workflow_recorder

log = logging.getLogger("durabench.temporal.worker")
START_TIMEOUT_S = 20.0  # a batch of event starts not acknowledged by then is started again (consume_events)


def call_error(exc: CallFailed, retry: dict[str, Any], attempt: int) -> ApplicationError:
    """The retryable error of failed call attempt ``attempt``: after a 429, ``next_retry_delay`` =
    max(Retry-After, the policy's backoff for this attempt). ``next_retry_delay`` replaces the
    policy's delay, so Retry-After alone could retry sooner than the policy would."""
    delay = next_retry_delay_s(retry, attempt, exc.outcome.retry_after_s)
    return ApplicationError(str(exc), type="FlakyApi" + str(exc.outcome.status),
                            next_retry_delay=timedelta(seconds=delay) if delay else None)


def build_worker(client: Client, config: WorkerConfig, runner: StepRunner) -> Worker:
    s = config.settings

    @activity.defn(name=STEP_ACTIVITY)
    async def step(index: int, payload: str) -> str:
        # ``payload`` is the previous step's output, carried through the workflow's history.
        info = activity.info()
        if info.workflow_id is None:
            raise RuntimeError("durabench_step runs only inside the durabench workflow")
        if not info.heartbeat_timeout:
            return await runner.arun(info.workflow_id, index, info.attempt)
        work = asyncio.ensure_future(runner.arun(info.workflow_id, index, info.attempt))
        every_s = info.heartbeat_timeout.total_seconds() / 3
        while not work.done():  # heartbeat while the step runs: the server notices a dead worker after the timeout
            activity.heartbeat()
            await asyncio.wait([work], timeout=every_s)
        return work.result()

    @activity.defn(name=CALL_ACTIVITY)
    async def call(index: int) -> str:
        """One attempt at the flaky API; a failed attempt raises for the stage's RetryPolicy, a 429
        with ``next_retry_delay`` = max(Retry-After, the policy's backoff for this attempt), honoured
        by the server's retry timer. ``next_retry_delay`` replaces the policy's delay, so Retry-After
        alone could retry sooner than the policy (as temporal-go does, engines/temporal_go/program.go)."""
        info = activity.info()
        assert info.workflow_id is not None
        try:
            return await runner.acall(info.workflow_id, index, info.attempt)
        except CallFailed as exc:
            raise call_error(exc, runner.stages[index]["retry"], info.attempt) from None

    @activity.defn(name=EFFECT_ACTIVITY)
    async def effect(index: int) -> str:
        """An activity that inserts (idempotency none), or inserts if absent by key (idempotency key)."""
        info = activity.info()
        assert info.workflow_id is not None
        await runner.aeffect(info.workflow_id, index, info.attempt)
        return ""

    kwargs: dict[str, Any] = {}
    if s["workflow_sandbox"]:
        # The harness is passed through: the sandbox re-imports engines.temporal (the workflow
        # module's parent package), which imports harness.contract; nothing in it runs in workflows.
        restrictions = SandboxRestrictions.default.with_passthrough_modules("harness")
        kwargs["workflow_runner"] = SandboxedWorkflowRunner(restrictions=restrictions)
    else:
        from temporalio.worker import UnsandboxedWorkflowRunner

        kwargs["workflow_runner"] = UnsandboxedWorkflowRunner()
    return Worker(
        client,
        task_queue=task_queue(s, config.run_id),
        workflows=[DurabenchWorkflow],
        activities=[step, call, effect],
        identity=config.worker_id,
        max_cached_workflows=int(s["max_cached_workflows"]),
        max_concurrent_workflow_tasks=int(s["max_concurrent_workflow_tasks"]),
        max_concurrent_activities=int(s["max_concurrent_activities"]),
        max_concurrent_local_activities=int(s["max_concurrent_local_activities"]),
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(maximum=int(s["workflow_task_pollers"])),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(maximum=int(s["activity_task_pollers"])),
        nonsticky_to_sticky_poll_ratio=float(s["nonsticky_to_sticky_poll_ratio"]),
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=float(s["sticky_queue_schedule_to_start_timeout_s"])),
        disable_eager_activity_execution=not s["eager_activity_execution"],
        no_remote_activities=bool(s["no_remote_activities"]),
        **kwargs,
    )


async def wait_polling(client: Client, config: WorkerConfig, since_s: float) -> None:
    """Return once the server has recorded a poll from this process (identity, after ``since_s``).

    The SDK has no "polling started" event; the task queue's poller list is the server's own
    record. A poll of an earlier incarnation (same identity, killed) is older than ``since_s``.
    On a multi-partition cluster the root partition may not list every poller: after
    ``ready_timeout_s`` without seeing one, warn and go on (the SDK is polling by then).
    """
    s = config.settings
    types = [TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW]
    if not s["no_remote_activities"]:
        types.append(TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    name = task_queue(s, config.run_id)

    async def probe() -> None:
        for tq_type in types:
            resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=s["namespace"], task_queue=TaskQueue(name=name), task_queue_type=tq_type))
            if not any(p.identity == config.worker_id and p.last_access_time.ToNanoseconds() >= since_s * 1e9
                       for p in resp.pollers):
                raise LookupError(f"no poll from {config.worker_id} on {name} ({TaskQueueType.Name(tq_type)}) yet")

    try:
        await retry_until("worker polling", float(s["ready_timeout_s"]), probe)
    except TimeoutError as exc:
        log.warning("%s; declaring ready anyway", exc)


def consume_events(client: Client, config: WorkerConfig, loop: asyncio.AbstractEventLoop,
                   stop: threading.Event) -> threading.Thread:
    """load.source: kafka: a consumer thread of the run's group that starts one workflow per event, the
    event id as the workflow id, through the same start call as the driver's client (an id already
    started is done: WorkflowAlreadyStartedError, or the USE_EXISTING conflict policy), then commits the
    batch's offsets (harness/events.py ``consume``)."""
    from engines.temporal import make_plan
    from engines.temporal.workflow import WORKFLOW_NAME

    spec = config.events
    assert spec is not None
    ctx = EngineContext(config.engine, config.run_id, config.endpoints, config.workload, 1, config.settings,
                        Path(config.ledger_dir), Path(config.ledger_dir), spec)
    starter = TemporalClient(client, ctx, WORKFLOW_NAME, make_plan(config.workload, config.settings))

    async def start_all(ids: list[str]) -> None:
        await asyncio.gather(*(starter.submit(wf) for wf in ids))

    def start(ids: list[str]) -> None:
        # The SDK retries a start against an unreachable server without a deadline of its own (no rpc_timeout):
        # give up on the batch after START_TIMEOUT_S and let the consumer start it again.
        future = asyncio.run_coroutine_threadsafe(start_all(ids), loop)
        try:
            future.result(START_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise

    thread = threading.Thread(target=events.consume, args=(spec, config.worker_id, start, stop),
                              kwargs={"on_error": log.warning}, name="kafka-consumer", daemon=True)
    thread.start()
    return thread


async def main() -> None:
    started_s = time.time()
    config = WorkerConfig.load()
    runner = StepRunner(config)
    set_workflow_recorder(runner)  # timers, signals and branches are recorded by workflow code
    client = await retry_until(
        "connection", float(config.settings["ready_timeout_s"]),
        lambda: connect(frontend(config.endpoints), config.settings, config.worker_id))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with build_worker(client, config, runner):
        await wait_polling(client, config, started_s)
        consuming = threading.Event()
        consumer = consume_events(client, config, loop, consuming) if config.events is not None else None
        runner.ready()
        log.info("%s polling %s", config.worker_id, task_queue(config.settings, config.run_id))
        await stop.wait()
        consuming.set()
        if consumer is not None:
            await asyncio.to_thread(consumer.join, 10)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main())
    # The worker has shut down gracefully and every ledger record is already written (os.write).
    # Skip interpreter finalization: the SDK core's Tokio threads can abort it with "Fatal Python
    # error: PyGILState_Release" (temporalio/sdk-python#300), which would turn a clean SIGTERM
    # stop into SIGABRT.
    logging.shutdown()
    os._exit(0)
