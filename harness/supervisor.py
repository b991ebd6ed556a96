"""The supervisor: K worker processes with stable identities, restarted after a crash.

It models systemd or Kubernetes: a worker that dies (for any reason: a SIGKILL fault, a
crash) is started again with the same identity and configuration after ``restart_delay_s``.
Every start and exit is recorded in the history (``worker_start`` / ``worker_exit``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from harness import procs
from harness.contract import CONFIG_ENV, Engine, EngineContext, WorkerConfig
from harness.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent


class _Slot(threading.Thread):
    def __init__(self, sup: Supervisor, index: int) -> None:
        super().__init__(name=f"worker:{index}", daemon=True)
        self.sup = sup
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._started = threading.Event()

    def run(self) -> None:  # the thread that spawns a worker must live as long as it (PDEATHSIG)
        sup = self.sup
        while not sup.stopping.is_set():
            argv, log, env = sup.argv(self.index), sup.log_path(self.index), sup.env(self.index)
            self.proc = procs.spawn(argv, log=log, env=env, cwd=ROOT)
            self.starts += 1
            sup.ledger.write("worker_start", worker=self.name, worker_pid=self.proc.pid, start=self.starts)
            self._started.set()
            code = self.proc.wait()
            if sup.stopping.is_set():
                break
            procs.kill_group(self.proc)  # leftovers of the dead worker's group
            procs.REGISTRY.remove(self.proc.pid)
            sup.ledger.write("worker_exit", worker=self.name, worker_pid=self.proc.pid, code=code)
            if sup.stopping.wait(sup.restart_delay_s):
                break

    def wait_started(self) -> None:
        self._started.wait()


class Supervisor:
    def __init__(self, engine: Engine, ctx: EngineContext, count: int, restart_delay_s: float, ledger: Ledger) -> None:
        self.engine = engine
        self.ctx = ctx
        self.count = count
        self.restart_delay_s = restart_delay_s
        self.ledger = ledger
        self.stopping = threading.Event()
        self.slots = [self._slot(i) for i in range(count)]
        self._config_dir = ctx.work_dir / "workers"
        self._config_dir.mkdir(parents=True, exist_ok=True)

    def _slot(self, index: int) -> Any:
        """The thread that keeps worker ``index`` running (a deployment other than processes overrides it)."""
        return _Slot(self, index)

    def endpoints(self) -> dict[str, str]:
        """The servers' endpoints as the workers reach them."""
        return self.ctx.endpoints

    def config(self, index: int) -> WorkerConfig:
        return WorkerConfig(
            engine=self.ctx.engine,
            run_id=self.ctx.run_id,
            worker_id=f"worker:{index}",
            worker_index=index,
            endpoints=self.endpoints(),
            workload=self.ctx.workload,
            settings=self.ctx.settings,
            ledger_dir=str(self.ctx.ledger_dir),
            events=self.ctx.events,
        )

    def argv(self, index: int) -> list[str]:
        return self.engine.worker_command(self.ctx, index)

    def config_path(self, index: int) -> Path:
        return self._config_dir / f"worker-{index}.json"

    def env(self, index: int) -> dict[str, str]:
        path = self.config_path(index)
        if not path.exists():
            self.config(index).dump(path)
        env = {**os.environ, CONFIG_ENV: str(path), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        return env

    def log_path(self, index: int) -> Path:
        return self.ctx.work_dir / "logs" / f"worker-{index}.log"

    def start(self) -> None:
        for slot in self.slots:
            slot.start()
        for slot in self.slots:
            slot.wait_started()

    def kill(self, index: int) -> int | str | None:
        """SIGKILL worker ``index``'s whole process group; the slot restarts it. Returns its pid (a
        container deployment: the container's name), None when it was not running."""
        proc = self.slots[index].proc
        if proc is None or proc.poll() is not None:
            return None
        procs.kill_group(proc)
        return proc.pid

    def pause(self, index: int) -> int | str | None:
        """SIGSTOP worker ``index``'s process group (a gray failure). Returns its pid."""
        proc = self.slots[index].proc
        if proc is None or proc.poll() is not None:
            return None
        procs.kill_group(proc, signal.SIGSTOP)
        return proc.pid

    def resume(self, index: int) -> None:
        proc = self.slots[index].proc
        if proc is not None:
            procs.kill_group(proc, signal.SIGCONT)

    def stop(self) -> None:
        self.stopping.set()
        for slot in self.slots:
            if slot.proc is not None:
                procs.stop(slot.proc, timeout_s=5.0)
        for slot in self.slots:
            slot.join(timeout=10)
            if slot.proc is not None and slot.proc.poll() is None:  # started while stopping
                procs.stop(slot.proc, timeout_s=5.0)
                slot.join(timeout=10)


def python_worker(module: str) -> list[str]:
    """The argv of a Python worker module, run with the harness's interpreter."""
    return [sys.executable, "-m", module]
