"""``python -m engines.celery.worker``: one Celery worker node (main process + prefork pool).

Reads the WorkerConfig named by ``$DURABENCH_WORKER_CONFIG``, writes the ``ready`` record from the
``worker_ready`` signal (sent in the main process once the task consumer is consuming), and runs
until killed. The node name is derived from the worker identity, so a restarted worker has the
same name.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from engines.celery.app import make_app, set_runner, workflow
from harness import events
from harness.contract import WorkerConfig
from harness.workload import StepRunner

log = logging.getLogger("durabench.celery.worker")


def node_name(config: WorkerConfig) -> str:
    return f"{config.worker_id.replace(':', '-')}@durabench-{config.run_id}"


def consume_events(config: WorkerConfig, stop: threading.Event) -> threading.Thread:
    """load.source: kafka: a consumer thread in the worker's main process (one consumer group) that
    publishes one chain per event, its task ids derived from the event id, then commits the batch's
    offsets (harness/events.py ``consume``). Celery has no deduplication by task id: an event delivered
    again after a crash before the commit is published, and run, again."""
    spec = config.events
    assert spec is not None
    program = config.workload.program
    app = make_app(config.endpoints["redis"], config.settings, results="parallel" in config.workload.kinds())

    def start(ids: list[str]) -> None:
        for wf in ids:
            workflow(app, wf, program).apply_async()

    thread = threading.Thread(target=events.consume, args=(spec, config.worker_id, start, stop),
                              kwargs={"on_error": log.warning}, name="kafka-consumer", daemon=True)
    thread.start()
    return thread


def main() -> None:
    config = WorkerConfig.load()
    settings = config.settings
    runner = StepRunner(config)
    set_runner(runner)
    app = make_app(config.endpoints["redis"], settings)

    consuming = threading.Event()

    def on_ready(sender: Any = None, **kwargs: Any) -> None:
        if config.events is not None:  # after the pool forked: the consumer thread lives in the main process
            consume_events(config, consuming)
        runner.ready()

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(lambda sender=None, **kwargs: consuming.set(), weak=False)
    argv = [
        "worker",
        "--hostname", node_name(config),
        "--pool", settings["worker_pool"],
        "--concurrency", str(settings["worker_concurrency"]),
        "--prefetch-multiplier", str(settings["worker_prefetch_multiplier"]),
        "--loglevel", "INFO",
    ]
    if settings["worker_disable_prefetch"]:
        argv.append("--disable-prefetch")
    for flag in ("mingle", "gossip", "heartbeat"):
        if settings[f"worker_without_{flag}"]:
            argv.append(f"--without-{flag}")
    app.worker_main(argv)


if __name__ == "__main__":
    main()
