"""Child processes the harness starts, and the guarantee that none outlives it.

Three layers, so that nothing survives the harness, whatever ends it:

1. every child runs in its own process group (so a SIGKILL reaches all its descendants) and
   asks the kernel for SIGKILL when the harness thread that started it dies (PDEATHSIG);
2. a reaper process (``python -m harness.reaper``) holds a pipe from the harness and kills
   every registered process group when that pipe closes: on exit, Ctrl-C, SIGTERM or SIGKILL;
3. the registry of live groups is also kept on disk; the next harness start kills leftovers
   whose owner is dead (for the case where the reaper was killed too).

Scratch directories (``scratch_dir``: the servers' data) are removed by the reaper and, failing it, by
the next start, the same way.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

import psutil

STATE_DIR = Path(os.environ.get("DURABENCH_STATE_DIR", f"/tmp/durabench-{os.getuid()}"))
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Registry:
    """The process groups this harness owns, mirrored to the reaper and to disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, float] = {}  # pgid -> create_time of the leader
        self._scratch: list[str] = []  # scratch directories (scratch_dir)
        self._reaper: subprocess.Popen[bytes] | None = None
        self._file = STATE_DIR / f"{os.getpid()}.json"

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.poll() is not None:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "harness.reaper"],
                stdin=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C in the terminal must not reach it first
            )

    def _sync(self) -> None:
        self._file.write_text(json.dumps({"owner": os.getpid(), "groups": self._groups, "scratch": self._scratch}))

    def add(self, pgid: int) -> None:
        with self._lock:
            self._ensure_reaper()
            try:
                self._groups[pgid] = psutil.Process(pgid).create_time()
            except psutil.Error:
                self._groups[pgid] = 0.0
            assert self._reaper is not None and self._reaper.stdin is not None
            self._reaper.stdin.write(f"+{pgid}\n".encode())
            self._reaper.stdin.flush()
            self._sync()

    def add_docker_owner(self, daemon: str = "") -> None:
        """Tell the reaper to remove this process's containers (harness/dockerhost.py) when it dies: on
        the docker CLI's daemon, or on ``daemon`` (a URL or a Docker context name)."""
        with self._lock:
            self._ensure_reaper()
            assert self._reaper is not None and self._reaper.stdin is not None
            self._reaper.stdin.write(f"D{os.getpid()}{' ' + daemon if daemon else ''}\n".encode())
            self._reaper.stdin.flush()

    def add_scratch(self, path: Path) -> None:
        """Tell the reaper to remove directory ``path`` when this process dies (if it is still there)."""
        with self._lock:
            self._ensure_reaper()
            assert self._reaper is not None and self._reaper.stdin is not None
            self._reaper.stdin.write(f"S{path}\n".encode())
            self._reaper.stdin.flush()
            self._scratch.append(str(path))
            self._sync()

    def remove(self, pgid: int) -> None:
        with self._lock:
            self._groups.pop(pgid, None)
            if self._reaper is not None and self._reaper.stdin is not None:
                self._reaper.stdin.write(f"-{pgid}\n".encode())
                self._reaper.stdin.flush()
            self._sync()


REGISTRY = _Registry()


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory (servers' data) that the reaper removes if the harness dies before it does."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    REGISTRY.add_scratch(path)
    return path


def spawn(
    argv: list[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a harness-owned child in its own process group, output appended to ``log``."""
    out: IO[Any] | int = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user,
            preexec_fn=_child_setup,  # noqa: PLW1509 - setsid + PDEATHSIG need it; no threads touched
        )
    finally:
        if not isinstance(out, int):
            out.close()
    REGISTRY.add(proc.pid)
    return proc


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the whole process group of ``proc`` (no error if it is gone)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop a child and all its group: ``sig``, then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        kill_group(proc, sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc, signal.SIGKILL)  # descendants that ignored the first signal
    proc.wait()
    REGISTRY.remove(proc.pid)


def reap_leftovers() -> list[int]:
    """Kill process groups recorded by harness processes that are no longer alive, and remove the
    containers and networks of those processes (harness/dockerhost.py)."""
    from harness import dockerhost

    dockerhost.remove_leftovers()
    killed: list[int] = []
    if not STATE_DIR.is_dir():
        return killed
    for path in STATE_DIR.glob("*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if state["owner"] == os.getpid() or psutil.pid_exists(state["owner"]):
            continue  # a live harness's, or our own: our registry (this very file) owns those groups
        for pgid, created in state["groups"].items():
            try:
                leader = psutil.Process(int(pgid))
                if created and abs(leader.create_time() - created) > 0.01:
                    continue  # the pid was reused by somebody else
            except psutil.NoSuchProcess:
                pass
            try:
                os.killpg(int(pgid), signal.SIGKILL)
                killed.append(int(pgid))
            except ProcessLookupError:
                pass
        for scratch in state.get("scratch", []):  # the reaper died too: the servers' data is still there
            shutil.rmtree(scratch, ignore_errors=True)
        path.unlink(missing_ok=True)
    return killed
