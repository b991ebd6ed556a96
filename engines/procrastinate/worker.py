"""procrastinate worker: ``python -m engines.procrastinate.worker`` (reads $DURABENCH_WORKER_CONFIG).

Runs one ``procrastinate.worker.Worker`` (async, ``concurrency`` jobs at once, LISTEN/NOTIFY for new
jobs) until SIGTERM, which asks it to finish the jobs in flight and stop.
"""

from __future__ import annotations

import asyncio
import signal

import procrastinate
from procrastinate.worker import Worker

from engines.procrastinate import connector_kwargs, run_url
from engines.procrastinate.tasks import register
from harness.contract import WorkerConfig
from harness.workload import StepRunner

READY_TIMEOUT_S = 30.0


async def serve(config: WorkerConfig) -> None:
    s = config.settings
    runner = StepRunner(config)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        **connector_kwargs(run_url(config.endpoints, s), int(s["worker_pool_size"]))))
    register(app, runner, config.workload.steps, s)
    async with app.open_async():
        worker = Worker(
            app,
            queues=[str(s["queue_name"])],
            name=config.worker_id,
            concurrency=int(s["concurrency"]),
            fetch_job_polling_interval=float(s["fetch_job_polling_interval_s"]),
            listen_notify=bool(s["listen_notify"]),
            update_heartbeat_interval=float(s["update_heartbeat_interval_s"]),
            stalled_worker_timeout=float(s["stalled_worker_timeout_s"]),
            install_signal_handlers=False,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        task = asyncio.create_task(worker.run())
        deadline = loop.time() + READY_TIMEOUT_S
        while worker.worker_id is None:  # registered (first heartbeat written): it fetches jobs next
            if task.done():
                await task  # raises what stopped it
            if loop.time() > deadline:
                raise RuntimeError(f"procrastinate worker not registered within {READY_TIMEOUT_S:g}s")
            await asyncio.sleep(0.01)  # procrastinate exposes no event for this
        runner.ready()
        await task


def main() -> None:
    asyncio.run(serve(WorkerConfig.load()))


if __name__ == "__main__":
    main()
