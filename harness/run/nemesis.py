"""The nemesis: injects the scenario's faults at their scheduled times, heals them, records both.

Every fault instance writes ``fault_start`` when injected and ``fault_end`` when healed, with a
``fault_id`` (``f0``, ``f1`` ... in scenario order; ``f0.1``, ``f0.2`` ... for repetitions), its
kind and its target. Kinds (docs/faults.md):

``kill-worker``        SIGKILL of each targeted worker's process group (deploy: containers: of its
                       container, through the Docker API); healed when the supervisor restarted it and
                       it signalled ``ready`` again
``pause-worker``       SIGSTOP of the group for ``duration``, then SIGCONT (a gray failure); containers:
                       the cgroup freezer (``pause`` / ``unpause``)
``restart-store``      SIGKILL (or, with ``clean``, SIGTERM) of the engine's store server, restart
                       on the same port and data directory; healed when it accepts connections;
                       containers: ``kill`` (or ``stop``) and ``start`` of the store's container
``latency``            adds ``latency`` +- ``jitter`` per chunk on the store link for ``duration``
``partition``          stops all traffic on the store link for ``duration``; containers (target
                       ``worker:N`` / ``worker:all`` / ``service:store``): disconnects the containers
                       from the stack's network (a real partition), reconnects them on heal
``reset-connections``  resets every open connection on the store link (instantaneous)

Faults through the Docker API record ``api_ms``, the time the daemon took to carry out the call.

When the load ends, every fault still active is healed before the drain (``final_heal``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from harness.ledger import Ledger
from harness.run.containers import ContainerSupervisor, Stack
from harness.run.driver import POLL_S, LiveView
from harness.run.proxy import Proxy
from harness.run.services import Services
from harness.scenario import LINK_FAULTS, STORE_FAULTS, FaultSpec, fault_targets
from harness.supervisor import Supervisor

# Store restarts run on this thread, which lives as long as the harness: a child's PDEATHSIG fires
# when the *thread* that started it ends (harness/procs.py), and asyncio's default executor ends its
# threads with the event loop, which killed a restarted store before the run read it again (the
# application database's effects, after the load's loop).
_RESTART_THREAD = ThreadPoolExecutor(1, thread_name_prefix="store-restart")


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
    def __init__(self, faults: list[FaultSpec], supervisor: Supervisor, ledger: Ledger,
                 view: LiveView,
                 services: Services | None = None, proxies: dict[str, Proxy] | None = None,
                 engine: str = "", load_end_s: float = 0.0, containers: Stack | None = None) -> None:
        self.supervisor = supervisor
        self.containers = containers  # the stack of deploy: containers
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
        self._paused: set[int] = set()  # worker indices
        # fault id -> (worker indices, service, address of each partitioned container)
        self._partitioned: dict[str, tuple[list[int], str | None, dict[str, str]]] = {}
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
        elif spec.container_target:
            await self._partition_containers(inst)
        elif kind in LINK_FAULTS:
            await self._link(inst)

    def _start(self, inst: Instance, **fields: Any) -> int:
        record = {"fault_id": inst.fault_id, "kind": inst.spec.kind, "target": inst.spec.resolved_target, **fields}
        ns = self.ledger.write("fault_start", **record)
        self._active[inst.fault_id] = record
        return ns

    def _end(self, inst: Instance, healed_by: str, **fields: Any) -> None:
        if self._active.pop(inst.fault_id, None) is not None:
            self.ledger.write("fault_end", fault_id=inst.fault_id, kind=inst.spec.kind,
                              target=inst.spec.resolved_target, healed_by=healed_by, **fields)

    async def _kill_workers(self, inst: Instance) -> None:
        targets = fault_targets(inst.spec.resolved_target, self.supervisor.count) or []
        start_ns = time.time_ns()
        t0 = time.monotonic()
        pids = {f"worker:{i}": self.supervisor.kill(i) for i in targets}
        self._start(inst, ns=start_ns, workers=sorted(pids), pids=pids, **self._api_ms(t0))
        while any(self.view.ready.get(w, 0) <= start_ns for w in pids):  # healed when all are back
            self.view.poll()
            await asyncio.sleep(POLL_S)
        self._end(inst, "supervisor restart")

    async def _pause_workers(self, inst: Instance) -> None:
        targets = fault_targets(inst.spec.resolved_target, self.supervisor.count) or []
        start_ns = time.time_ns()
        t0 = time.monotonic()
        pids = {}
        for i in targets:
            paused = self.supervisor.pause(i)
            if paused is not None:
                self._paused.add(i)
                pids[f"worker:{i}"] = paused
        self._start(inst, ns=start_ns, workers=sorted(pids), pids=pids, duration_s=inst.spec.duration,
                    **self._api_ms(t0))
        try:
            await asyncio.sleep(inst.spec.duration or 0)
        finally:
            t1 = time.monotonic()  # the thaw takes effect during the call: api_ms on fault_end says how long
            self._resume([i for i in targets if i in self._paused])
            self._end(inst, "SIGCONT" if self.containers is None else "unpause", **self._api_ms(t1))

    def _resume(self, indices: Any) -> None:
        for index in list(indices):
            self.supervisor.resume(index)
            self._paused.discard(index)

    def _api_ms(self, t0: float) -> dict[str, float]:
        """How long the Docker API took to carry out a fault (containers only)."""
        return {} if self.containers is None else {"api_ms": round((time.monotonic() - t0) * 1e3, 1)}

    async def _partition_containers(self, inst: Instance) -> None:
        """Disconnect worker or service containers from the stack's network; reconnect on heal."""
        assert self.containers is not None
        spec = inst.spec
        target = spec.resolved_target
        start_ns = time.time_ns()
        t0 = time.monotonic()
        workers = fault_targets(target, self.supervisor.count) or []
        sup = self.supervisor
        assert isinstance(sup, ContainerSupervisor)
        names: dict[str, str] = {}
        addresses: dict[str, str] = {}
        service = None if workers else self.service_of(spec)
        for i in workers:
            names[f"worker:{i}"], addresses[f"worker:{i}"] = await asyncio.to_thread(sup.disconnect, i)
        if service is not None:
            container = self.containers.services.services[service].container
            addresses[service] = await asyncio.to_thread(self.containers.disconnect, container)
            names[service] = container.name
        self._partitioned[inst.fault_id] = (workers, service, addresses)
        self._start(inst, ns=start_ns, workers=sorted(f"worker:{i}" for i in workers), containers=names,
                    duration_s=spec.duration, **self._api_ms(t0))
        try:
            await asyncio.sleep(spec.duration or 0)
        finally:
            t1 = time.monotonic()
            await asyncio.shield(asyncio.to_thread(self._reconnect, inst.fault_id))
            self._end(inst, "network connect", api_ms=round((time.monotonic() - t1) * 1e3, 1))

    def _reconnect(self, fault_id: str) -> None:
        entry = self._partitioned.pop(fault_id, None)
        if entry is None or self.containers is None:
            return
        workers, service, addresses = entry
        for i in workers:
            assert isinstance(self.supervisor, ContainerSupervisor)
            self.supervisor.connect(i, addresses[f"worker:{i}"])
        if service is not None:
            self.containers.connect(self.containers.services.services[service].container, addresses[service],
                                    alias=service)

    async def _restart_store(self, inst: Instance) -> None:
        assert self.services is not None
        name = self.service_of(inst.spec)
        svc = self.services.services[name]
        async with self._store_busy:
            in_stack = self.containers.services.services[name] if self.containers is not None else None
            extra = {} if in_stack is None else {"container": in_stack.container.name}
            self._start(inst, service=name, clean=inst.spec.clean, workers=[], **extra)
            # shielded: a final heal must not leave the store half restarted
            t0 = time.monotonic()
            restart = asyncio.get_running_loop().run_in_executor(_RESTART_THREAD, svc.restart, inst.spec.clean)
            await asyncio.shield(restart)
            self._end(inst, "restarted" + (" cleanly" if inst.spec.clean else " after SIGKILL"),
                      **({} if self.containers is None else {"restart_ms": round((time.monotonic() - t0) * 1e3, 1)}))

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
        for fault_id in list(self._partitioned):
            self._reconnect(fault_id)
        for fault_id, record in list(self._active.items()):
            if record["kind"] in ("pause-worker", *LINK_FAULTS):
                self.ledger.write("fault_end", fault_id=fault_id, kind=record["kind"], target=record["target"],
                                  healed_by="final heal")
                self._active.pop(fault_id)
