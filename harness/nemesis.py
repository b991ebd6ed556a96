"""The nemesis: injects the scenario's faults at their scheduled times and records them.

Each fault writes ``fault_start`` when injected and ``fault_end`` when healed, with a
``fault_id`` (``f0``, ``f1`` ... in scenario order), its kind and its target. ``kill-worker``
SIGKILLs the whole process group of each targeted worker; the supervisor restarts it after
its restart delay, and the fault ends when every restarted worker signalled ``ready``.
"""

from __future__ import annotations

import asyncio
import time

from harness.driver import POLL_S, LiveView
from harness.ledger import Ledger
from harness.scenario import FaultSpec, fault_targets
from harness.supervisor import Supervisor


class Nemesis:
    def __init__(self, faults: list[FaultSpec], supervisor: Supervisor, ledger: Ledger, view: LiveView) -> None:
        self.faults = faults
        self.supervisor = supervisor
        self.ledger = ledger
        self.view = view

    async def run(self, t0_mono: float) -> None:
        order = sorted(enumerate(self.faults), key=lambda item: item[1].at)
        await asyncio.gather(*(self._one(f"f{i}", fault, t0_mono) for i, fault in order))

    async def _one(self, fault_id: str, fault: FaultSpec, t0_mono: float) -> None:
        delay = t0_mono + fault.at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        targets = fault_targets(fault.target, self.supervisor.count) or []
        start_ns = time.time_ns()
        pids = {f"worker:{i}": self.supervisor.kill(i) for i in targets}
        self.ledger.write("fault_start", ns=start_ns, fault_id=fault_id, kind=fault.kind, target=fault.target,
                          workers=sorted(pids), pids=pids)
        # healed when every killed worker is back and ready again
        while any(self.view.ready.get(w, 0) <= start_ns for w in pids):
            self.view.poll()
            await asyncio.sleep(POLL_S)
        self.ledger.write("fault_end", fault_id=fault_id, kind=fault.kind, target=fault.target,
                          healed_by="supervisor restart")
