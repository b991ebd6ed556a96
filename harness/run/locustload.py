"""``load.generator: locust``: the load comes from Locust processes through HTTP front doors.

The harness starts ``load.front_doors`` front doors (``durabench front``, harness/run/front.py), each
holding the engine's client, then a headless Locust master and ``load.locust_workers`` Locust
workers running harness/run/locustfile.py, which POST the scenario's open-loop schedule to the front
doors. Every one of these is a harness-owned process (harness/procs.py): nothing outlives
durabench. The harness process itself never imports locust (gevent is incompatible with the
Temporal SDK); it learns what happens from the history: the front doors' ``ready``, ``invoke``
and ``ack`` records and the master's ``load_start``.

Locust's own statistics (CSV and HTML) go to ``engines/<engine>/locust/``.

Under ``deploy: containers`` the front doors, the master and the Locust workers are containers of the
runtime image instead (compose/front.yaml, joined to the engine's stack: its network, the run directory
bind-mounted at the same path): the front doors hold a client of the servers as the stack's network
names them, listen on the container's network and name themselves by hostname in their ``ready``
record; the Locust workers reach them and the master (``locust-master``) there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from harness import procs
from harness.contract import EngineClient, EngineContext
from harness.errors import ServiceError, UserError
from harness.ledger import Ledger
from harness.run import containers, image
from harness.run.driver import Driver, LiveView
from harness.run.front import FrontConfig
from harness.run.openloop import CONNECTIONS, Plan
from harness.scenario import LoadSpec

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
CONTAINER_LOCUSTFILE = f"{image.IMAGE_SITE_PACKAGES}/harness/run/locustfile.py"  # the image's copy
MASTER_PORT = 5557  # Locust's default master port: in a container, the port on the stack's network
LEAD_S = 1.0  # t0 this long after the master starts, so every worker has it before the first arrival
START_TIMEOUT_S = 90.0
POLL_S = 0.02
WEB_UI = False  # `durabench run --locust-ui`: the master serves Locust's web UI (loopback) during the run
STATS_PREFIX = "stats"  # Locust's --csv prefix: stats_stats.csv, stats_stats_history.csv, stats_failures.csv


def versions() -> dict[str, str]:
    """Versions of the load path, for the manifest (read from package metadata: no import)."""
    return {"locust": version("locust"), "uvicorn": version("uvicorn")}


class LocustLoad(Driver):
    """Drives the load through Locust and the front doors; the same interface as the pacer's
    :class:`Driver` (``run``, ``started``, ``t0_mono``, ``drain``, ``submitted_ids``), with the
    counters read from the front doors' history records instead of counted in process."""

    def __init__(self, ctx: EngineContext, client: EngineClient, load: LoadSpec, seed: int, ledger: Ledger,
                 view: LiveView, stack: containers.Stack | None = None) -> None:
        super().__init__(ctx.engine, client, load, seed, ledger, view, ctx.run_id)
        self.ctx = ctx
        self.stack = stack  # deploy: containers: front doors and Locust run as containers of this stack
        self.dir = ctx.work_dir / "locust"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ids: list[str] = []
        self._procs: list[subprocess.Popen[bytes] | containers.ContainerProcess] = []
        view.on_load = self._count

    def submitted_ids(self) -> list[str]:
        return list(self._ids)

    def _count(self, rec: dict[str, Any]) -> None:
        c = self.counters
        if rec["ev"] == "invoke":
            c.invoked += 1
            c.in_flight_submits += 1
            self._ids.append(rec["wf"])
            return
        c.in_flight_submits -= 1
        if rec["outcome"] == "ok":
            c.ok += 1
            c.acked_ids.append(rec["wf"])
        elif rec["outcome"] == "fail":
            c.failed += 1
        else:
            c.unknown += 1

    def _start_proc(self, argv: list[str], log: str) -> subprocess.Popen[bytes] | containers.ContainerProcess:
        if self.stack is not None:  # the same command in the runtime image; its log collected as logs/<name>.log
            role = next(r for r in containers.FRONT_ROLES if log.startswith(r))  # front-0.log, locust-worker-1.log
            argv = [containers.CONTAINER_PYTHON if a == sys.executable else CONTAINER_LOCUSTFILE
                    if a == str(LOCUSTFILE) else a for a in argv]
            proc: subprocess.Popen[bytes] | containers.ContainerProcess = self.stack.run_role(
                role, log.removesuffix(".log"), argv, {"DURABENCH_LOCUST_PLAN": str(self.dir / "plan.json")})
            self._procs.append(proc)
            return proc
        env = {**os.environ, "DURABENCH_LOCUST_PLAN": str(self.dir / "plan.json"), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        proc = procs.spawn(argv, log=self.ctx.work_dir / "logs" / log, env=env, cwd=self.dir)
        self._procs.append(proc)
        return proc

    async def run(self) -> None:
        try:
            fronts = await self._start_fronts()
            master = self._start_locust(fronts)
            await self._wait(lambda: self.view.load_start is not None, "the Locust master to start the load",
                             "locust-master.log", START_TIMEOUT_S + 30)  # the master waits START_TIMEOUT_S for workers
            start = self.view.load_start
            assert start is not None
            self.t0_ns = start["ns"]
            self.t0_mono = time.monotonic() + (self.t0_ns - time.time_ns()) / 1e9
            self.started.set()
            code = await asyncio.to_thread(master.wait)
            if code != 0:
                raise ServiceError(f"the Locust master exited with code {code}; see "
                                   f"{self.ctx.work_dir / 'logs' / 'locust-master.log'}")
        finally:
            await asyncio.to_thread(self._stop_all)
        self.view.poll()
        self.ledger.write("load_end")

    async def _start_fronts(self) -> list[str]:
        cfg_dir = self.ctx.work_dir / "front"
        cfg_dir.mkdir(exist_ok=True)
        # in containers: the servers as the stack's network names them, and every interface of the container
        endpoints = self.ctx.endpoints if self.stack is None else self.stack.services.inner_endpoints
        host = self.load.listen_host if self.stack is None else "0.0.0.0"
        for i in range(self.load.front_doors):
            config = FrontConfig(self.ctx.engine, self.ctx.run_id, i, endpoints, self.ctx.workload,
                                 self.ctx.workers, self.ctx.settings, str(self.ctx.work_dir), str(self.ctx.ledger_dir),
                                 self.load.submit_timeout)
            path = cfg_dir / f"front-{i}.json"
            config.dump(path)
            self._start_proc([sys.executable, "-m", "harness.cli", "front", "--config", str(path), "--host", host],
                             f"front-{i}.log")
        srcs = [f"front:{i}" for i in range(self.load.front_doors)]
        await self._wait(lambda: all(s in self.view.urls for s in srcs), "the front doors to serve", "front-0.log")
        return [self.view.urls[s] for s in srcs]

    def _start_locust(self, fronts: list[str]) -> subprocess.Popen[bytes] | containers.ContainerProcess:
        from harness.run.services import free_port

        local, remote = self.load.locust_workers, self.load.locust_remote_workers
        n = local + remote
        Plan(self.load.model_dump(), self.seed, self.prefix, fronts, n, str(self.ctx.ledger_dir), LEAD_S,
             CONNECTIONS).dump(self.dir / "plan.json")
        port = free_port() if self.stack is None else MASTER_PORT
        bind, master_host = (self.load.listen_host, "127.0.0.1") if self.stack is None else ("0.0.0.0", "locust-master")
        if remote:
            host = self.load.listen_host
            name = socket.getfqdn() if host in ("0.0.0.0", "::") else host
            print(f"[{self.ctx.work_dir.name}] waiting for {remote} Locust worker(s) from other hosts: "
                  f"durabench locust-worker --master {name}:{port}", file=sys.stderr, flush=True)
        base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
        run_time_s = int(LEAD_S + self.load.warmup + self.load.duration + self.load.submit_timeout + 60)
        if WEB_UI and self.stack is None:
            web_port = free_port()
            ui = ["--autostart", "--autoquit", "5", "--web-host", "127.0.0.1", "--web-port", str(web_port)]
            print(f"[{self.ctx.work_dir.name}] Locust web UI: http://127.0.0.1:{web_port}", file=sys.stderr, flush=True)
        else:
            ui = ["--headless"]
        master = self._start_proc([
            *base, *ui, "--master", "--master-bind-host", bind, "--master-bind-port", str(port),
            "--expect-workers", str(n), "--expect-workers-max-wait", str(int(START_TIMEOUT_S)),
            "--users", str(n), "--spawn-rate", str(n), "--run-time", f"{run_time_s}s",
            "--csv", str(self.dir / STATS_PREFIX), "--html", str(self.dir / "report.html"),
            "--exit-code-on-error", "0", "--only-summary",
        ], "locust-master.log")
        for k in range(local):
            self._start_proc([*base, "--worker", "--master-host", master_host, "--master-port", str(port)],
                        f"locust-worker-{k}.log")
        return master

    async def _wait(self, cond: Any, what: str, log: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                raise ServiceError(f"a process died while waiting for {what} (exit code {dead[0].returncode}); "
                                   f"see {self.ctx.work_dir / 'logs'}")
            if time.monotonic() > deadline:
                raise ServiceError(f"timed out after {timeout_s:g}s waiting for {what}; "
                                   f"see {self.ctx.work_dir / 'logs' / log}")
            self.view.poll()
            await asyncio.sleep(POLL_S)

    def _stop_all(self) -> None:
        """SIGTERM to all at once (Locust's workers end with its master; front doors answer the requests
        in flight and write their ``ack`` records before they exit), then wait for each."""
        for proc in self._procs:
            if proc.poll() is None:
                if isinstance(proc, containers.ContainerProcess):
                    proc.terminate()
                else:
                    procs.kill_group(proc, signal.SIGTERM)
        for proc in reversed(self._procs):
            if isinstance(proc, containers.ContainerProcess):
                try:
                    proc.wait(timeout=self.load.submit_timeout + 5)
                except Exception:  # still running: SIGKILL (the stack removes it anyway)
                    proc.kill()
            else:
                procs.stop(proc, timeout_s=self.load.submit_timeout + 5)
        self._procs.clear()


def register(sub: Any) -> None:
    p = sub.add_parser("locust-worker", help="join a run's Locust load from this host (load.locust_remote_workers)")
    p.add_argument("--master", required=True, help="HOST:PORT that the run printed")
    p.set_defaults(func=_cmd_locust_worker)


def _cmd_locust_worker(args: argparse.Namespace) -> int:
    host, _, port = args.master.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--master {args.master!r}: expected HOST:PORT, as the run printed it")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("DURABENCH_LOCUST_PLAN", None)  # the plan comes from the master
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", host,
            "--master-port", port]
    os.execve(sys.executable, argv, env)  # this process becomes the Locust worker: no gevent in durabench itself
