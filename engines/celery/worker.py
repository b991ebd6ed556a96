"""``python -m engines.celery.worker``: one Celery worker node (main process + prefork pool).

Reads the WorkerConfig named by ``$DURABENCH_WORKER_CONFIG``, writes the ``ready`` record from the
``worker_ready`` signal (sent in the main process once the task consumer is consuming), and runs
until killed. The node name is derived from the worker identity, so a restarted worker has the
same name.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from engines.celery.app import make_app, set_runner
from harness.contract import WorkerConfig
from harness.workload import StepRunner


def node_name(config: WorkerConfig) -> str:
    return f"{config.worker_id.replace(':', '-')}@durabench-{config.run_id}"


def main() -> None:
    config = WorkerConfig.load()
    settings = config.settings
    runner = StepRunner(config)
    set_runner(runner)
    app = make_app(config.endpoints["redis"], settings)

    def on_ready(sender: Any = None, **kwargs: Any) -> None:
        runner.ready()

    worker_ready.connect(on_ready, weak=False)
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
