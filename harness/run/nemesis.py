"""The nemesis: injects the scenario's faults at their scheduled times, heals them, records both.

Every fault instance writes ``fault_start`` when injected and ``fault_end`` when healed, with a
``fault_id`` (``f0``, ``f1`` ... in scenario order; ``f0.1``, ``f0.2`` ... for repetitions), its
kind and its target. Kinds (docs/faults.md):

``kill-worker``        SIGKILL of each targeted worker's process group; healed when the supervisor
                       restarted it and it signalled ``ready`` again
``pause-worker``       SIGSTOP of the group for ``duration``, then SIGCONT (a gray failure)
``restart-store``      SIGKILL (or, with ``clean``, SIGTERM) of the engine's store server, restart
                       on the same port and data directory; healed when it accepts connections
``latency``            adds ``latency`` +- ``jitter`` per chunk on the store link for ``duration``
``partition``          stops all traffic on the store link for ``duration``
``reset-connections``  resets every open connection on the store link (instantaneous)

When the load ends, every fault still active is healed before the drain (``final_heal``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import Any

from harness import procs
from harness.errors import UserError
from harness.ledger import Ledger
from harness.run.driver import POLL_S, LiveView
from harness.run.proxy import Proxy
from harness.run.services import Services
from harness.scenario import LINK_FAULTS, STORE_FAULTS, FaultSpec, fault_targets
from harness.supervisor import Supervisor


def resolve_service(target: str, services: tuple[str, ...], engine: str) -> str:
    """``service:store`` / ``link:store`` name the engine's state store: the first of its services.
    ``service:temporal`` / ``link:temporal`` name an engine's ``temporal-server`` too."""
    name = target.split(":", 1)[1]
    if name == "store":
        if not services:
            raise UserError(f"engine {engine!r} has no store to fault (fault target {target!r})")
        return services[0]
    if name == "temporal" and "temporal" not in services and "temporal-server" in services:
        return "temporal-server"  # "the engine's Temporal server", whichever kind it is
    if name not in services:
        raise UserError(f"engine {engine!r} does not use {name} (fault target {target!r}; it uses {services})")
    return name


@dataclass
class Instance:
    fault_id: str
    spec: FaultSpec
    at_s: float


class Nemesis:
    def __init__(self, faults: list[FaultSpec], supervisor: Supervisor, ledger: Ledger, view: LiveView,
                 services: Services | None = None, proxies: dict[str, Proxy] | None = None,
                 engine: str = "", load_end_s: float = 0.0) -> None:
        self.supervisor = supervisor
        self.ledger = ledger
        self.view = view
        self.services = services
        self.proxies = proxies or {}
        self.engine = engine
        self.instances: list[Instance] = []
        for i, spec in enumerate(faults):
            times = spec.instances(load_end_s)
            for k, at in enumerate(times):
                self.instances.append(Instance(f"f{i}" if len(times) == 1 else f"f{i}.{k}", spec, at))
        self.instances.sort(key=lambda inst: inst.at_s)
        self._paused: set[int] = set()
        self._active: dict[str, dict[str, Any]] = {}
        self._store_busy = asyncio.Lock()

    def service_of(self, spec: FaultSpec) -> str:
        svc_names = tuple(self.services.services) if self.services else ()
        return resolve_service(spec.resolved_target, svc_names, self.engine)

    async def run(self, t0_mono: float) -> None:
        await asyncio.gather(*(self._one(inst, t0_mono) for inst in self.instances))

    async def _one(self, inst: Instance, t0_mono: float) -> None:
        delay = t0_mono + inst.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        spec = inst.spec
        kind = spec.kind
        if kind == "kill-worker":
            await self._kill_workers(inst)
        elif kind == "pause-worker":
            await self._pause_workers(inst)
        elif kind in STORE_FAULTS:
            await self._restart_store(inst)
        elif kind in LINK_FAULTS:
            await self._link(inst)

    def _start(self, inst: Instance, **fields: Any) -> int:
        record = {"fault_id": inst.fault_id, "kind": inst.spec.kind, "target": inst.spec.resolved_target, **fields}
        ns = self.ledger.write("fault_start", **record)
        self._active[inst.fault_id] = record
        return ns

    def _end(self, inst: Instance, healed_by: str) -> None:
        if self._active.pop(inst.fault_id, None) is not None:
            self.ledger.write("fault_end", fault_id=inst.fault_id, kind=inst.spec.kind,
                              target=inst.spec.resolved_target, healed_by=healed_by)

    async def _kill_workers(self, inst: Instance) -> None:
        targets = fault_targets(inst.spec.resolved_target, self.supervisor.count) or []
        start_ns = time.time_ns()
        pids = {f"worker:{i}": self.supervisor.kill(i) for i in targets}
        self._start(inst, ns=start_ns, workers=sorted(pids), pids=pids)
        while any(self.view.ready.get(w, 0) <= start_ns for w in pids):  # healed when all are back
            self.view.poll()
            await asyncio.sleep(POLL_S)
        self._end(inst, "supervisor restart")

    async def _pause_workers(self, inst: Instance) -> None:
        targets = fault_targets(inst.spec.resolved_target, self.supervisor.count) or []
        start_ns = time.time_ns()
        pids = {}
        for i in targets:
            proc = self.supervisor.slots[i].proc
            if proc is not None and proc.poll() is None:
                procs.kill_group(proc, signal.SIGSTOP)
                self._paused.add(proc.pid)
                pids[f"worker:{i}"] = proc.pid
        self._start(inst, ns=start_ns, workers=sorted(pids), pids=pids, duration_s=inst.spec.duration)
        try:
            await asyncio.sleep(inst.spec.duration or 0)
        finally:
            self._resume(pids.values())
            self._end(inst, "SIGCONT")

    def _resume(self, pids: Any) -> None:
        for pid in list(pids):
            for slot in self.supervisor.slots:
                if slot.proc is not None and slot.proc.pid == pid:
                    procs.kill_group(slot.proc, signal.SIGCONT)
            self._paused.discard(pid)

    async def _restart_store(self, inst: Instance) -> None:
        assert self.services is not None
        name = self.service_of(inst.spec)
        svc = self.services.services[name]
        async with self._store_busy:
            self._start(inst, service=name, clean=inst.spec.clean, workers=[])
            # shielded: a final heal must not leave the store half restarted
            await asyncio.shield(asyncio.to_thread(svc.restart, inst.spec.clean))
            self._end(inst, "restarted" + (" cleanly" if inst.spec.clean else " after SIGKILL"))

    async def _link(self, inst: Instance) -> None:
        name = self.service_of(inst.spec)
        proxy = self.proxies[name]
        spec = inst.spec
        if spec.kind == "reset-connections":
            ns = time.time_ns()
            n = proxy.reset_connections()
            self._start(inst, ns=ns, service=name, workers=[], connections_reset=n)
            self._end(inst, "instantaneous")
            return
        if spec.kind == "latency":
            proxy.set_latency(spec.latency, spec.jitter)
            self._start(inst, service=name, workers=[], latency_s=spec.latency, jitter_s=spec.jitter,
                        duration_s=spec.duration)
        else:
            proxy.partition()
            self._start(inst, service=name, workers=[], duration_s=spec.duration)
        try:
            await asyncio.sleep(spec.duration or 0)
        finally:
            proxy.heal()
            self._end(inst, "proxy healed")

    async def settle(self) -> None:
        """Wait for a store restart in progress (the reconcile needs the store up)."""
        async with self._store_busy:
            return

    def final_heal(self) -> None:
        """Heal everything still active (called when the load ends, before the drain)."""
        self._resume(set(self._paused))
        for proxy in self.proxies.values():
            proxy.heal()
        for fault_id, record in list(self._active.items()):
            if record["kind"] in ("pause-worker", *LINK_FAULTS):
                self.ledger.write("fault_end", fault_id=fault_id, kind=record["kind"], target=record["target"],
                                  healed_by="final heal")
                self._active.pop(fault_id)
