"""DBOS worker: ``python -m engines.dbos.worker`` (reads $DURABENCH_WORKER_CONFIG, runs until killed).

``--bootstrap`` instead migrates the system database and registers the queue once, then exits
(called by ``DbosEngine.prepare``), so workers never contend on DBOS's migration advisory lock.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time

from dbos import DBOS, DBOSClient, DBOSConfig

from engines.dbos import STEP_NAME, executor_id
from engines.dbos_common import APP_NAME, WORKFLOW_NAME, system_database_url
from harness.contract import WorkerConfig
from harness.workload import StepRunner

QUEUE_THREAD_TIMEOUT_S = 30.0



class _State:
    """Set by ``serve`` before launch; read by the workflow and step bodies."""

    runner: StepRunner | None = None
    steps = 0


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
    payload = ""
    for index in range(_State.steps):
        payload = await durabench_step(workflow_id, index, payload)
    return payload


def _settings_url(config: WorkerConfig) -> str:
    return system_database_url(config.endpoints["postgres"], str(config.settings["database"]))


def bootstrap(config: WorkerConfig) -> None:
    """Migrate the system database and register the queue (what DBOS's own benchmark does first)."""
    url = _settings_url(config)
    s = config.settings
    DBOS.migrate(url)
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
