"""The locustfile of ``load.generator: locust``: an open-loop user that POSTs to the front doors.

Run only by Locust processes (``python -m locust -f harness/run/locustfile.py``, started by the
harness or by ``durabench locust-worker``), never imported by the harness or by anything that holds a
Temporal client: importing locust monkeypatches the process with gevent.

Open loop, no coordinated omission: each Locust worker runs ONE user, which sends its share of the
plan's arrivals (harness/run/openloop.py) at their intended times, every request in its own greenlet, so
a slow answer never delays the next arrival. Each request carries its intended time; the front door
records it, and durabench measures latency from it. A worker that falls behind sends late, and the
lateness shows in the latency (and in ``pacer_lateness``), not as a lower offered rate.

Coordination (Locust custom messages): when the master starts the test it fixes the time origin
``t0 = now + plan.lead_s``, writes the run's ``load_start`` record (``src: locust``) and sends
``durabench_t0`` with the plan to every worker (so a worker on another host needs no file); each
worker reports ``durabench_done`` once all its requests have been answered, and the master quits
(writing its CSV and HTML statistics) when all have.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

import gevent
import gevent.event
import gevent.pool
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from harness.ledger import Ledger
from harness.run.openloop import CONNECTIONS, Plan

# The plan file exists on the master's host only; workers (on any host) receive the plan with t0.
PLAN = Plan.load(os.environ["DURABENCH_LOCUST_PLAN"]) if "DURABENCH_LOCUST_PLAN" in os.environ else None
START = gevent.event.AsyncResult()  # (t0_ns, plan): the load's time origin and the plan, from the master
DONE: set[int] = set()  # master: indices of the workers that finished


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message("durabench_t0",
                                lambda msg, **_kw: START.set((msg.data["t0_ns"], Plan(**msg.data["plan"]))))
    elif isinstance(runner, MasterRunner):
        assert PLAN is not None, "the master runs with DURABENCH_LOCUST_PLAN"

        def done(msg: Any, **_kw: Any) -> None:
            DONE.add(msg.data["worker_index"])
            if len(DONE) >= PLAN.workers:
                gevent.spawn(_quit, environment)  # not from this handler's own greenlet

        runner.register_message("durabench_done", done)


def _quit(environment: Environment) -> None:
    assert environment.runner is not None
    environment.runner.quit()
    if environment.web_ui is not None:  # --locust-ui: the web UI is the master's main greenlet
        environment.web_ui.stop()


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if not isinstance(runner, MasterRunner) or START.ready():
        return
    assert PLAN is not None
    spec = PLAN.spec
    t0_ns = time.time_ns() + int(PLAN.lead_s * 1e9)
    Ledger(PLAN.ledger_dir, "locust").write(
        "load_start", ns=t0_ns, mode=spec.mode, rate=spec.rate, concurrency=spec.concurrency,
        warmup_ns=int(spec.warmup * 1e9), duration_ns=int(spec.duration * 1e9), generator="locust",
        locust_workers=PLAN.workers, front_doors=len(PLAN.fronts),
    )
    START.set((t0_ns, PLAN))
    runner.send_message("durabench_t0", {"t0_ns": t0_ns, "plan": asdict(PLAN)})


class OpenLoopUser(FastHttpUser):
    """One per Locust worker: sends that worker's share of the open-loop schedule."""

    host = "http://127.0.0.1"  # every request names its front door's absolute URL
    concurrency = CONNECTIONS
    network_timeout = 60.0
    connection_timeout = 10.0

    @task
    def drive(self) -> None:
        runner = self.environment.runner
        index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        t0_ns, plan = START.get()
        t0_mono = time.monotonic() + (t0_ns - time.time_ns()) / 1e9
        pool = gevent.pool.Pool()
        for wf, offset, front in plan.arrivals(index):
            delay = t0_mono + offset - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            pool.spawn(self._post, front, wf, t0_ns + int(offset * 1e9))
        pool.join()
        if isinstance(runner, WorkerRunner):
            runner.send_message("durabench_done", {"worker_index": index})
        raise StopUser()

    def _post(self, front: str, wf: str, intended_ns: int) -> None:
        self.client.post(f"{front}/workflows", json={"id": wf, "intended_ns": intended_ns, "sent_ns": time.time_ns()},
                         name="POST /workflows")
