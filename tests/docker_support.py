"""The Docker daemon of the container tests (required in CI, a clear skip elsewhere), and the no-orphan
check they share: a ``durabench run`` started in the background, signalled once its containers run, and
nothing of it left afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness import dockerhost
from tests.conftest import ROOT

UP_TIMEOUT_S = 240.0  # the stack (and, for Locust, the front doors and Locust) up on a busy 2-core host
EXIT_TIMEOUT_S = 120.0  # durabench's own cleanup after Ctrl-C
GONE_TIMEOUT_S = 60.0  # the reaper's removal after a SIGKILL
POLL_S = 0.2


def docker_client() -> Any:
    """A client of the daemon; without one, fail in CI (CI=true: .ci/run starts dockerd) and skip
    with the reason on a developer machine."""
    reason = dockerhost.available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the container tests, but: {reason}")
        pytest.skip(f"no Docker daemon here: {reason}")
    return dockerhost.connect()


def labelled(client: Any, label: str, all: bool = False) -> list[Any]:
    """The containers on ``client``'s daemon labelled ``label`` (``key=value``): running ones, or with ``all``
    in any state. One removed while they are listed (durabench removes its own) is left out, not an error."""
    return list(client.containers.list(all=all, filters={"label": label}, ignore_removed=True))


def owned(client: Any, label: str) -> list[str]:
    """The names of the containers (in any state) and networks on ``client``'s daemon labelled ``label``."""
    return [c.name for c in labelled(client, label, all=True)] + \
        [n.name for n in client.networks.list(filters={"label": label})]


def named(client: Any, prefix: str) -> list[str]:
    """The names of the containers (in any state) and networks on ``client``'s daemon whose name starts with
    ``prefix``, labelled or not (a run's objects are named ``durabench-<short id>-<engine>...``)."""
    containers = client.containers.list(all=True, filters={"name": f"^/?{prefix}"}, ignore_removed=True)
    return [c.name for c in containers if c.name.startswith(prefix)] + \
        [n.name for n in client.networks.list(names=[prefix]) if n.name.startswith(prefix)]


def remove_labelled(client: Any, label: str) -> list[str]:
    """Remove, through the Docker API, every container (with its anonymous volumes) and then every network
    labelled ``label``; returns the names of those that were there. One gone meanwhile is no error."""
    import docker.errors

    found = owned(client, label)
    for container in labelled(client, label, all=True):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
    return found


def start_run(scenario: Path, tmp_path: Path, *flags: str) -> subprocess.Popen[bytes]:
    """``durabench run scenario --quiet`` in the background, its results, its process registry
    (harness/procs.py) and its temporary files (``TMPDIR``: ``temp_dir(tmp_path)``) under ``tmp_path``."""
    temp_dir(tmp_path).mkdir()
    env = {**os.environ, "DURABENCH_STATE_DIR": str(tmp_path / "state"), "TMPDIR": str(temp_dir(tmp_path))}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(tmp_path),
                             "--quiet", *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def running_run(scenario: Path, tmp_path: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """``start_run`` whose durabench is SIGKILLed on the way out if the test left it running (an assertion
    failed before the test signalled it): its reaper then removes what it started, and no run goes on
    after its test."""
    proc = start_run(scenario, tmp_path, *flags)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def temp_dir(tmp_path: Path) -> Path:
    return tmp_path / "tmp"


def wait_until(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str,
               timeout_s: float = UP_TIMEOUT_S) -> None:
    """Poll ``ready`` (the daemon's view) until it holds; fail if durabench exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"durabench exited ({proc.returncode}) before {what}: " + (
            proc.stderr.read().decode()[-2000:] if proc.stderr else "")
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:g}s"
        time.sleep(POLL_S)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def signal_and_expect_nothing_left(proc: subprocess.Popen[bytes], sig: int, clients: list[Any],
                                   labels: list[str], tmp_path: Path, prefixes: tuple[str, ...] = ()) -> None:
    """Send ``sig`` to durabench (SIGKILL: the reaper cleans up; SIGINT: durabench's own cleanup does), then
    within a deadline no container and no network labelled with any of ``labels`` (or named with any of
    ``prefixes``: one that lost its labels) is left on any of ``clients``' daemons, no process durabench had
    started (the reaper included) still runs, and nothing is left in its temporary directory
    (``start_run(..., tmp_path)``: the servers' scratch data)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "durabench has no child process: not even its reaper"
    proc.send_signal(sig)
    proc.wait(EXIT_TIMEOUT_S)
    if sig == signal.SIGINT:  # Ctrl-C: an orderly stop (exit 130), its message and no traceback
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err[-3000:])
    deadline = time.monotonic() + GONE_TIMEOUT_S

    def left() -> list[str]:
        objects = [name for c in clients for label in labels for name in owned(c, label)] + \
            [name for c in clients for prefix in prefixes for name in named(c, prefix)]
        files = [str(p) for p in temp_dir(tmp_path).iterdir()]
        return objects + files + [f"pid {p.pid} ({p.name()})" for p in children if _alive(p)]

    while remaining := left():
        assert time.monotonic() < deadline, f"left behind {GONE_TIMEOUT_S:g}s after {signal.Signals(sig).name}: " \
            f"{sorted(set(remaining))}"
        time.sleep(POLL_S)
