"""DBOS worker: ``python -m engines.dbos.worker`` (reads $DURABENCH_WORKER_CONFIG, runs until killed).

``--bootstrap`` instead migrates the system database and registers the queue once, then exits
(called by ``DbosEngine.prepare``), so workers never contend on DBOS's migration advisory lock.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSClient, DBOSConfig, KafkaMessage

from engines.dbos import STEP_NAME, executor_id
from engines.dbos_common import APP_NAME, WORKFLOW_NAME, system_database_url
from harness import events, program
from harness.contract import EventSpec, WorkerConfig
from harness.workload import StepRunner

QUEUE_THREAD_TIMEOUT_S = 30.0
BRANCH_WORKFLOW = "durabench_branch"
EVENT_WORKFLOW = "durabench_event"


class _State:
    """Set by ``serve`` before launch; read by the workflow and step bodies."""

    runner: StepRunner | None = None
    steps = 0
    program: list[dict[str, Any]] = []  # noqa: RUF012 - process-global state of the worker, set once
    calls: dict[int, Callable[..., Awaitable[str]]] = {}  # noqa: RUF012 - one retrying step per call stage
    child_poll_s = 0.05
    datasource: AsyncSQLAlchemyDatasource | None = None
    effect_tx: Callable[..., Awaitable[bool]] | None = None


@DBOS.step(name=STEP_NAME)
async def durabench_step(workflow_id: str, index: int, payload: str) -> str:
    """One checkpointed step; ``payload`` is the previous step's output, carried as the argument.
    DBOS keeps no attempt counter across a crash (StepStatus.current_attempt is None without
    retries), so ``attempt`` is None; the ledger counts executions."""
    assert _State.runner is not None
    return await _State.runner.arun(workflow_id, index, None)


@DBOS.workflow(name=WORKFLOW_NAME)
async def durabench_workflow() -> str:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    return await _run_stages(workflow_id, _State.program)


@DBOS.workflow(name=EVENT_WORKFLOW)
async def durabench_event(msg: KafkaMessage) -> None:
    """One Kafka event (a ``dbos.KafkaMessage``): the program, with the event id in place of the workflow
    id in the ledger and the application table. DBOS names this workflow
    ``kafka-unique-id-{topic}-{partition}-{group_id}-{offset}``."""
    await _run_stages(events.decode_id(msg.key, msg.value), _State.program)


def _consume_events(spec: EventSpec, worker_id: str, queue_name: str) -> None:
    """Register DBOS's Kafka consumer (before launch): DBOS polls the topic in a thread, enqueues one
    workflow per message on ``queue_name`` (our queue and its polling interval) in one transaction per
    batch, then stores the offsets, which auto-commit flushes (dbos/_kafka.py)."""
    config = {"bootstrap.servers": spec.bootstrap, "group.id": spec.group_id, "client.id": worker_id}
    DBOS.kafka_consumer(config, [spec.topic], queue_name=queue_name)(durabench_event)


@DBOS.workflow(name=BRANCH_WORKFLOW)
async def durabench_branch(workflow_id: str, parallel_step: int, branch: int) -> str:
    """One branch of a parallel stage: a child workflow (DBOS's fan-out idiom), so a completed branch
    is never re-run when its parent recovers."""
    runner = _State.runner
    assert runner is not None
    stage = next(s for s in program.walk(_State.program) if s["step"] == parallel_step)
    runner.branch_start(workflow_id, parallel_step, branch)
    out = await _run_stages(workflow_id, stage["branches"][branch])
    runner.branch_end(workflow_id, parallel_step, branch)
    return out


async def _run_stages(workflow_id: str, stages: list[dict[str, Any]]) -> str:
    """The program, interpreted by workflow code: DBOS re-executes this after a crash and every step,
    transaction, sleep and recv already recorded returns its recorded result without running."""
    runner = _State.runner
    assert runner is not None
    payload = ""
    for stage in stages:
        kind, step = stage["kind"], stage["step"]
        if kind == "work":
            payload = await durabench_step(workflow_id, step, payload)
        elif kind == "call":
            await _State.calls[step](workflow_id, step)
        elif kind == "effect":
            await _effect(workflow_id, step)
        elif kind == "sleep":
            seconds = float(stage["duration_s"])
            runner.timer_set(workflow_id, step, time.time_ns() + int(seconds * 1e9))  # before DBOS records its own
            await DBOS.sleep_async(seconds)  # durable: the wake-up time is checkpointed; recovery sleeps the rest
            runner.timer_fired(workflow_id, step)
        elif kind == "wait_signal":
            runner.signal_wait(workflow_id, step)
            message = await DBOS.recv_async(topic=stage["signal"], timeout_seconds=float(stage["timeout_s"]))
            if message is None:  # recv returns None on timeout
                runner.signal_timeout(workflow_id, step)
                if stage["on_timeout"] == "fail":
                    raise TimeoutError(f"{workflow_id}: no signal {stage['signal']!r} in {stage['timeout_s']}s")
            else:
                runner.signal_received(workflow_id, step, message)
        elif kind == "parallel":
            handles = [await DBOS.start_workflow_async(durabench_branch, workflow_id, step, b)
                       for b in range(len(stage["branches"]))]
            for handle in handles:
                await handle.get_result(polling_interval_sec=_State.child_poll_s)
            runner.join(workflow_id, step)
        else:
            raise ValueError(f"unknown stage kind {kind!r}")
    return payload


def _make_call(stage: dict[str, Any]) -> Callable[..., Awaitable[str]]:
    """A call stage as an async ``@DBOS.step`` with DBOS's own retries under the stage's policy
    (interval_seconds = initial backoff, backoff_rate = multiplier, max_attempts). DBOS has no
    maximum interval (it caps at 1 h) and no per-error delay: ``max_backoff`` and Retry-After are not
    honoured (README: "Programs")."""
    retry = stage["retry"]

    @DBOS.step(name=f"durabench_call_{stage['step']}", retries_allowed=True,
               interval_seconds=float(retry["initial_backoff_s"]), backoff_rate=float(retry["multiplier"]),
               max_attempts=int(retry["max_attempts"]))
    async def call(workflow_id: str, step: int) -> str:
        assert _State.runner is not None
        status = DBOS.step_status
        attempt = (status.current_attempt or 0) + 1 if status is not None else None
        return await _State.runner.acall(workflow_id, step, attempt)

    return call


async def _effect_body(workflow_id: str, step: int) -> bool:
    """The effect's transaction body: runs inside DBOS's datasource transaction, whose checkpoint
    (``dbos.datasource_outputs`` in the application database) commits with the insert."""
    from sqlalchemy import text

    runner, ds = _State.runner, _State.datasource
    assert runner is not None and ds is not None
    runner.effect_started(workflow_id, step, None)
    sql, params = runner.effect_statement(workflow_id, step, None)
    names = ("wf", "step", "attempt", "worker", "key")[: len(params)]
    named = sql
    for name in names:
        named = named.replace("%s", f":{name}", 1)
    result = await ds.sql_session().execute(text(named), dict(zip(names, params, strict=True)))
    inserted = bool(getattr(result, "rowcount", 1) == 1)
    if runner.effect_seconds(step) > 0:  # the rest of the step: inside the transaction, before its commit
        await asyncio.sleep(runner.effect_seconds(step))
    # Recorded before the commit that makes the insert and DBOS's checkpoint durable together: a crash
    # after the commit never re-runs the body (the recorded output is returned), so a record written
    # after it could be lost with the process; a crash before it rolls both back and the body re-runs.
    runner.effect_committed(workflow_id, step, None, inserted)
    return inserted


def _create_datasource(url: str, pool_size: int) -> None:
    """The application database as a DBOS datasource (DBOS requires it before launch). Its engine is
    created here and its verification connection dropped: the pool then connects on the event loop
    DBOS runs async workflows on."""
    async def create() -> AsyncSQLAlchemyDatasource:
        ds = await AsyncSQLAlchemyDatasource.create(url, engine_kwargs={"pool_size": pool_size},
                                                    run_migrations=False)
        await ds.engine.dispose()
        return ds

    _State.datasource = asyncio.run(create())
    _State.effect_tx = _State.datasource.transaction(name="durabench_effect")(_effect_body)


async def _effect(workflow_id: str, step: int) -> None:
    runner = _State.runner
    assert runner is not None and _State.effect_tx is not None
    await _State.effect_tx(workflow_id, step)


def _settings_url(config: WorkerConfig) -> str:
    return system_database_url(config.endpoints["postgres"], str(config.settings["database"]))


def bootstrap(config: WorkerConfig) -> None:
    """Migrate the system database and register the queue (what DBOS's own benchmark does first)."""
    url = _settings_url(config)
    s = config.settings
    DBOS.migrate(url)
    if "app_db" in config.endpoints:  # the datasource's checkpoint table in the application database
        asyncio.run(AsyncSQLAlchemyDatasource.migrate(config.endpoints["app_db"]))
    client = DBOSClient(system_database_url=url, application_name=APP_NAME)
    try:
        client.register_queue(
            str(s["queue_name"]),
            worker_concurrency=int(s["worker_concurrency"]),
            polling_interval_sec=float(s["polling_interval_s"]),
            on_conflict="always_update",
        )
    finally:
        client.destroy()


def _wait_queue_thread(queue_name: str) -> None:
    """Return once DBOS's queue manager has started the polling thread of our queue."""
    name = f"queue-worker-{queue_name}"
    deadline = time.monotonic() + QUEUE_THREAD_TIMEOUT_S
    while not any(t.name == name and t.is_alive() for t in threading.enumerate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"DBOS did not start polling queue {queue_name!r} within {QUEUE_THREAD_TIMEOUT_S}s")
        time.sleep(0.01)  # DBOS exposes no event for this; its queue manager rescans every 1 s


def serve(config: WorkerConfig) -> None:
    s = config.settings
    runner = _State.runner = StepRunner(config)
    _State.steps = config.workload.steps
    _State.program = config.workload.program
    _State.calls = {st["step"]: _make_call(st) for st in program.walk(config.workload.program) if st["kind"] == "call"}
    _State.child_poll_s = float(s["child_poll_interval_s"])
    if "app_db" in config.endpoints:
        _create_datasource(config.endpoints["app_db"], int(s["app_db_pool_size"]))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    dbos_config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": _settings_url(config),
        "sys_db_pool_size": int(s["sys_db_pool_size"]),
        "max_executor_threads": int(s["max_executor_threads"]),
        "application_version": str(s["application_version"]),
        "executor_id": executor_id(s, config.run_id, config.worker_index),
        "run_migrations": False,  # the bootstrap migrated; launch only verifies (no advisory lock)
    }
    if config.events is not None:
        _consume_events(config.events, config.worker_id, str(s["queue_name"]))
    DBOS(config=dbos_config)
    DBOS.launch()  # recovers this executor id's PENDING workflows by re-enqueueing them
    DBOS.register_queue(
        str(s["queue_name"]),
        worker_concurrency=int(s["worker_concurrency"]),
        polling_interval_sec=float(s["polling_interval_s"]),
    )
    _wait_queue_thread(str(s["queue_name"]))
    runner.ready()
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", action="store_true", help="migrate and register the queue, then exit")
    args = parser.parse_args(argv)
    config = WorkerConfig.load()
    if args.bootstrap:
        bootstrap(config)
    else:
        serve(config)


if __name__ == "__main__":
    main()
