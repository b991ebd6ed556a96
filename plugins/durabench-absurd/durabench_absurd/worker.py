"""absurd worker: ``python -m durabench_absurd.worker`` (reads $DURABENCH_WORKER_CONFIG, runs until stopped).

``Absurd.start_worker`` claims up to ``concurrency`` tasks with a lease of ``claim_timeout_s`` and
runs each on a thread of its pool; idle, it polls every ``poll_interval_s``. A task whose worker
died is picked up once its lease expired, by the next claim of any worker (absurd.claim_task sweeps
expired leases first), and resumes after its last checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading

from absurd_sdk import Absurd

from durabench_absurd import run_url
from durabench_absurd.workflow import register
from harness.contract import WorkerConfig
from harness.workload import StepRunner


def serve(config: WorkerConfig) -> None:
    s = config.settings
    runner = StepRunner(config)
    app = Absurd(run_url(config.endpoints, s), queue_name=str(s["queue_name"]))  # connects here
    register(app, runner, config.workload.program)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()
        app.stop_worker()  # start_worker returns once the tasks in flight finished

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    app.list_queues()  # the connection works and the schema is there
    runner.ready()
    app.start_worker(
        worker_id=f"{config.worker_id}/{os.getpid()}",
        claim_timeout=int(s["claim_timeout_s"]),
        concurrency=int(s["concurrency"]),
        poll_interval=float(s["poll_interval_s"]),
    )
    app.close()


def main() -> None:
    serve(WorkerConfig.load())


if __name__ == "__main__":
    main()
