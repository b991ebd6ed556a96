"""Resource accounting: CPU seconds and memory of every component, store counters, as time series.

A :class:`Sampler` thread in the harness process (one per engine run) reads, about once a second:

- every component's process tree from ``/proc/<pid>/stat`` (one pass over ``/proc`` per sample):
  each server (``postgres`` with all its backends and auxiliary processes, ``redis``,
  ``temporal``), each worker (``worker:0`` ...: the supervisor's current process and its
  descendants, followed across restarts) and the ``driver`` (the harness process itself: load
  driver, live view, nemesis, fault proxy, this sampler; plus any helper process it spawned that
  is not another component);
- the store counters of every server (harness/run/stores.py).

CPU seconds of a tree are ``utime + stime + cutime + cstime`` summed over its live processes: a
process that exited and was reaped inside the tree (a PostgreSQL backend, a Celery pool child)
is counted through its parent's ``cutime``/``cstime``. A tree whose root dies (a killed worker, a
SIGKILLed store) keeps the total last seen for it (at most one sampling interval is lost), and
its successor starts a new total: CPU seconds of dead processes never vanish. The driver counts
only its own ``utime + stime`` (its reaped children are the workers and servers).

Memory: ``rss_bytes`` is the sum of the resident set of the tree's processes (shared pages, e.g.
PostgreSQL's shared buffers, count once per process that touched them); ``pss_bytes`` the sum
of proportional set sizes (shared pages divided among their users: the tree's real footprint).

Containers (``deploy: containers``): a server or worker whose holder has a ``container`` is
measured through the Docker API's stats instead (``container.stats(stream=False)``, polled by one
:class:`ContainerStats` thread per container, since each call takes about a second): ``cpu_s`` is the
container cgroup's cumulative CPU (``cpu_stats.cpu_usage.total_usage``; a restarted container, a new
cgroup, starts a new segment and the earlier ones are kept, as for a process tree), and
``rss_bytes`` the cgroup's memory usage less its inactive page cache (``memory_stats.usage`` minus
``total_inactive_file``, cgroup v1, or ``inactive_file``, v2: the ``docker stats`` figure). The
cumulative counter is used rather than a sum of ``cpu_stats - precpu_stats`` windows, which would
miss the time between two calls. Where the container's processes are visible in this host's
``/proc`` (a local daemon), the process-tree reading is kept beside it as a cross-check,
``proc_cpu_s`` and ``proc_rss_bytes``, and ``pss_bytes`` still comes from ``/proc``.

Raw files, one JSON object per line (rebuildable; the analysis is in harness/analysis/cost.py):

``<engine>/resources.jsonl``       ``{"ns", "component", "cpu_s" (cumulative), "rss_bytes", "pss_bytes" (every
                                   5th sample, else null), "procs"}``; containers add ``"source": "docker"``,
                                   ``proc_cpu_s``, ``proc_rss_bytes``
``<engine>/store_counters.jsonl``  ``{"ns", "store", "counters": {...}}`` (harness/run/stores.py)
``<engine>/sampler.json``          the sampler's own cost: samples, interval, CPU seconds spent sampling
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.run import stores

RESOURCES_FILE = "resources.jsonl"
COUNTERS_FILE = "store_counters.jsonl"
SAMPLER_FILE = "sampler.json"
DEFAULT_INTERVAL_S = 1.0
PSS_EVERY = 5  # proportional set sizes cost ~0.2 ms per process: read them every 5th sample
STATS_FLUSH_S = 1.2  # PostgreSQL flushes a backend's statistics at most once a second (PGSTAT_MIN_INTERVAL)
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
DRIVER = "driver"
STATS_FIRST_S = 5.0  # how long the sampler's start waits for every container's first Docker stats reading


def _container_holder(holder: Any) -> Any:
    """``holder`` when it runs in a container (it has a ``container`` attribute), else None."""
    return holder if hasattr(holder, "container") else None


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    start: int  # start time in clock ticks since boot: with the pid, identifies a process
    own: int  # utime + stime, ticks
    reaped: int  # cutime + cstime, ticks (children waited for)
    rss_pages: int


def read_stat(pid: int | str) -> ProcStat | None:
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data[data.rfind(b")") + 2 :].split()  # after "pid (comm) ": field 3 (state) is fields[0]
    return ProcStat(ppid=int(fields[1]), start=int(fields[19]), own=int(fields[11]) + int(fields[12]),
                    reaped=int(fields[13]) + int(fields[14]), rss_pages=int(fields[21]))


def scan() -> dict[int, ProcStat]:
    """Every process of the machine, in one pass over /proc."""
    out: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(name)
            if st is not None:
                out[int(name)] = st
    return out


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def descendants(root: int, children: dict[int, list[int]]) -> list[int]:
    out, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def _current_pid(holder: Any) -> list[int]:
    """The pid of ``holder.proc`` (a Service or a supervisor slot; it changes across restarts)."""
    proc = holder.proc
    return [proc.pid] if proc is not None else []


def docker_reading(stats: dict[str, Any]) -> tuple[int, int] | None:
    """``(cpu_ns, memory_bytes)`` of one Docker stats answer, None for a container not running: the
    cgroup's cumulative CPU and its memory usage less the inactive page cache (as ``docker stats``)."""
    total = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = stats.get("memory_stats") or {}
    if not total or "usage" not in memory:
        return None
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return int(total), max(0, int(memory["usage"]) - int(inactive))


class ContainerStats(threading.Thread):
    """The Docker API's stats of ``holder.container`` (followed when it changes), polled continuously:
    ``cpu_s`` over every start of the container, the latest memory figure."""

    def __init__(self, name: str, holder: Any, interval_s: float) -> None:
        super().__init__(name=f"docker-stats:{name}", daemon=True)
        self.holder = holder
        self.interval_s = interval_s
        self.segments: dict[tuple[str, str], int] = {}  # (container id, StartedAt) -> cpu ns
        self.memory_bytes = 0
        self.readings = 0
        self.first = threading.Event()
        self.halt = threading.Event()
        self._lock = threading.Lock()

    def poll(self) -> bool:
        """One reading (about a second: the daemon waits for its next sample); False if none."""
        container = getattr(self.holder, "container", None)
        if container is None:
            return False
        container.reload()
        state = container.attrs.get("State") or {}
        if container.status not in ("running", "paused"):
            with self._lock:
                self.memory_bytes = 0
            return False
        reading = docker_reading(container.stats(stream=False))
        if reading is None:
            return False
        key = (str(container.id), str(state.get("StartedAt")))
        with self._lock:
            self.segments[key] = max(self.segments.get(key, 0), reading[0])
            self.memory_bytes = reading[1]
            self.readings += 1
        self.first.set()
        return True

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                ok = self.poll()
            except Exception:  # removed meanwhile, or the daemon is busy: try again
                ok = False
            if not ok and self.halt.wait(self.interval_s):
                break

    def figures(self) -> tuple[float, int]:
        with self._lock:
            return round(sum(self.segments.values()) / 1e9, 3), self.memory_bytes


@dataclass
class Component:
    """A named part of the system whose processes are the trees under ``roots()``."""

    name: str
    roots: Callable[[], list[int]]
    own_only: bool = False  # count the root's own CPU only, not its descendants'
    stats: ContainerStats | None = None  # a container: cpu_s and rss_bytes from the Docker API


class Sampler:
    """Samples components and store probes every ``interval_s`` into ``out_dir`` (a thread)."""

    def __init__(self, out_dir: Path, interval_s: float = DEFAULT_INTERVAL_S, pss: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.interval_s = interval_s
        self.pss = pss
        self.components: list[Component] = []
        self.probes: list[stores.Probe] = []
        self.samples = 0
        self.cpu_s = 0.0  # CPU the sampler itself spent (thread time of every sample)
        self.wall_s = 0.0
        self._totals: dict[str, dict[tuple[int, int], int]] = {}  # component -> (pid, start) -> ticks
        self._ignore: Callable[[], list[int]] = list
        self.last_members: dict[str, list[int]] = {}  # component -> pids found by the latest sample
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._cfd: int | None = None

    # -- configuration
    def add(self, name: str, roots: Callable[[], list[int]], own_only: bool = False,
            container_of: Any = None) -> None:
        """``container_of``: an object whose ``container`` attribute is the component's container."""
        stats = ContainerStats(name, container_of, self.interval_s) if container_of is not None else None
        self.components.append(Component(name, roots, own_only, stats))

    def add_services(self, services: Any) -> None:
        """Every server of a ``harness.run.services.Services``, followed across restarts (``svc.proc``)."""
        for name, svc in services.services.items():
            self.add(name, functools.partial(_current_pid, svc), container_of=_container_holder(svc))
            probe = stores.probe_for(svc)
            if probe is not None:
                self.probes.append(probe)

    def add_workers(self, supervisor: Any) -> None:
        """Every worker slot of a ``harness.supervisor.Supervisor``, followed across restarts."""
        for slot in supervisor.slots:
            self.add(slot.name, functools.partial(_current_pid, slot), container_of=_container_holder(slot))

    def add_driver(self) -> None:
        self.add(DRIVER, lambda: [os.getpid()], own_only=True)

    # -- sampling
    def _write(self, fd: int | None, record: dict[str, Any]) -> None:
        if fd is not None:
            os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    def sample(self) -> dict[str, dict[str, Any]]:
        """Take one sample now (thread-safe); returns the component figures it wrote."""
        with self._lock:
            t_cpu, t_wall = time.thread_time(), time.perf_counter()
            ns = time.time_ns()
            procs = scan()
            children: dict[int, list[int]] = {}
            for pid, st in procs.items():
                children.setdefault(st.ppid, []).append(pid)
            roots = {c.name: [r for r in c.roots() if r in procs] for c in self.components}
            claimed = {r for c in self.components if not c.own_only for r in roots[c.name]} | set(self._ignore())
            out: dict[str, dict[str, Any]] = {}
            with_pss = self.pss and self.samples % PSS_EVERY == 0
            for comp in self.components:
                totals = self._totals.setdefault(comp.name, {})
                rss = pss = nprocs = 0
                all_members: list[int] = []
                for root in roots[comp.name]:
                    if comp.own_only:  # own CPU, plus helper children that are no other component's
                        members = [root]
                        ticks = procs[root].own
                        for child in children.get(root, ()):
                            if child not in claimed:
                                tree = descendants(child, children)
                                members += tree
                                helper_ticks = sum(procs[p].own + procs[p].reaped for p in tree)
                                key = (child, procs[child].start)
                                totals[key] = max(totals.get(key, 0), helper_ticks)
                    else:
                        members = descendants(root, children)
                        ticks = sum(procs[p].own + procs[p].reaped for p in members)
                    key = (root, procs[root].start)
                    totals[key] = max(totals.get(key, 0), ticks)
                    nprocs += len(members)
                    all_members += members
                    rss += sum(procs[p].rss_pages for p in members) * PAGE
                    if with_pss:
                        pss += sum(pss_bytes(p) for p in members)
                self.last_members[comp.name] = all_members
                rec = {"ns": ns, "component": comp.name, "cpu_s": round(sum(totals.values()) / CLK_TCK, 3),
                       "rss_bytes": rss, "pss_bytes": pss if with_pss else None, "procs": nprocs}
                if comp.stats is not None:  # the Docker API's figures; the /proc reading as a cross-check
                    cpu_s, memory = comp.stats.figures()
                    rec.update(source="docker", cpu_s=cpu_s, rss_bytes=memory,
                               proc_cpu_s=rec["cpu_s"] if all_members else None,
                               proc_rss_bytes=rss if all_members else None)
                out[comp.name] = rec
                self._write(self._fd, rec)
            for probe in self.probes:
                counters = probe.read()
                if counters is not None:
                    self._write(self._cfd, {"ns": time.time_ns(), "store": probe.name, "counters": counters})
            self.samples += 1
            self.cpu_s += time.thread_time() - t_cpu
            self.wall_s += time.perf_counter() - t_wall
            return out

    def ignore(self, pids: Callable[[], list[int]]) -> None:
        """Processes of the harness that are neither a component nor driver work (the reaper)."""
        self._ignore = pids

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a sample must never take the run down
                self.sample()

    def start(self) -> None:
        pollers = [c.stats for c in self.components if c.stats is not None]
        for poller in pollers:
            poller.start()
        deadline = time.monotonic() + STATS_FIRST_S
        for poller in pollers:  # a first Docker reading of every container already there (the servers)
            if getattr(poller.holder, "container", None) is not None:
                poller.first.wait(max(0.0, deadline - time.monotonic()))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fd = os.open(self.out_dir / RESOURCES_FILE, flags, 0o644)
        self._cfd = os.open(self.out_dir / COUNTERS_FILE, flags, 0o644)
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample, stop the thread, write sampler.json."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        with contextlib.suppress(Exception):
            self.sample()
        pollers = [c.stats for c in self.components if c.stats is not None]
        for poller in pollers:
            poller.halt.set()
        for poller in pollers:
            poller.join(timeout=STATS_FIRST_S)
        for probe in self.probes:
            probe.close()
        for fd in (self._fd, self._cfd):
            if fd is not None:
                os.close(fd)
        self._fd = self._cfd = None
        (self.out_dir / SAMPLER_FILE).write_text(json.dumps({
            "samples": self.samples, "interval_s": self.interval_s, "cpu_s": round(self.cpu_s, 4),
            "wall_s": round(self.wall_s, 4), "components": [c.name for c in self.components],
            "stores": [p.name for p in self.probes],
            "docker_stats_readings": {c.name: c.stats.readings for c in self.components if c.stats is not None},
        }, indent=2) + "\n")


def reaper_pids() -> list[int]:
    """The harness's reaper process (harness/procs.py), which belongs to no component."""
    from harness import procs

    reaper = getattr(procs.REGISTRY, "_reaper", None)
    return [reaper.pid] if reaper is not None else []


def for_run(out_dir: Path, services: Any, supervisor: Any, interval_s: float = DEFAULT_INTERVAL_S,
            pss: bool = True) -> Sampler:
    """The sampler of one engine run: every server, every worker slot and the driver."""
    sampler = Sampler(out_dir, interval_s, pss)
    sampler.add_services(services)
    sampler.add_workers(supervisor)
    sampler.add_driver()
    sampler.ignore(reaper_pids)
    return sampler


def read_series(path: Path) -> list[dict[str, Any]]:
    """Complete records of a resources or store-counter file (a torn last line is skipped)."""
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_bytes().split(b"\n")[:-1]):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise UserError(f"{path}:{i + 1}: corrupt record {line[:60]!r}; remove the file to analyze the run "
                                "without resource figures") from None
    return out
