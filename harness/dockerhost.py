"""The Docker daemon durabench talks to (through the ``docker`` package), and its leftovers.

Every container and network durabench creates carries labels naming its owner: the pid and
start time of the durabench process (``durabench.owner``, ``durabench.owner_start``) and the run
(``durabench.run``). Nothing may outlive the owner: a normal exit or Ctrl-C removes them on the way
out, the reaper (harness/reaper.py) removes them when the owner's pipe closes (SIGKILL), and the
next start removes those whose owner is dead (``remove_leftovers``), as for child processes.

The daemon is the one ``docker.from_env()`` finds: ``DOCKER_HOST`` (and ``DOCKER_TLS_VERIFY`` /
``DOCKER_CERT_PATH``) or the local socket.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import psutil

from harness.errors import UserError

LABEL = "durabench"  # every object durabench owns carries durabench=1
OWNER = "durabench.owner"
OWNER_START = "durabench.owner_start"
RUN = "durabench.run"
API_TIMEOUT_S = 120
PING_TIMEOUT_S = 3
MAX_POOL_SIZE = 96  # one connection blocks in wait() per worker container (up to 64), plus calls


def connect(timeout_s: float = API_TIMEOUT_S) -> Any:
    """A client of the daemon, or a UserError saying how to get one."""
    try:
        import docker
    except ImportError:
        raise UserError("containers need the docker package: pip install 'docker>=7'") from None
    try:
        client = docker.from_env(timeout=int(timeout_s), max_pool_size=MAX_POOL_SIZE)
        client.ping()
    except Exception as exc:  # docker raises DockerException, requests errors or OSError here
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise UserError(f"no Docker daemon answers at {where} ({type(exc).__name__}); start dockerd "
                        "(Debian: apt-get install docker.io, then dockerd &) or set DOCKER_HOST") from None
    return client


def available() -> str | None:
    """None when a daemon answers, else why not (one line): the tests skip (or fail in CI) with it."""
    try:
        connect(PING_TIMEOUT_S).close()
    except UserError as exc:
        return str(exc)
    return None


def owner_labels(run: str) -> dict[str, str]:
    me = psutil.Process()
    return {LABEL: "1", OWNER: str(me.pid), OWNER_START: f"{me.create_time():.3f}", RUN: run}


def _owner_alive(labels: dict[str, str]) -> bool:
    try:
        proc = psutil.Process(int(labels.get(OWNER, "0")))
        return abs(proc.create_time() - float(labels.get(OWNER_START, "0"))) < 0.01
    except (psutil.Error, ValueError):
        return False


def remove_owned(client: Any, owner: int | None = None, dead_only: bool = False) -> list[str]:
    """Remove durabench's containers (then networks): those of ``owner``, or with ``dead_only``
    those whose owner process is gone. Returns the names removed."""
    removed: list[str] = []
    filters = {"label": [f"{LABEL}=1"] + ([f"{OWNER}={owner}"] if owner is not None else [])}
    for container in client.containers.list(all=True, filters=filters):
        if dead_only and _owner_alive(container.labels):
            continue
        with contextlib.suppress(Exception):  # already gone, or being removed by another cleaner
            container.remove(force=True)
            removed.append(container.name)
    for network in client.networks.list(filters=filters):
        if dead_only and _owner_alive(network.attrs.get("Labels") or {}):
            continue
        with contextlib.suppress(Exception):
            network.remove()
            removed.append(network.name)
    return removed


def remove_leftovers() -> list[str]:
    """At start: remove containers and networks of durabench processes that are no longer alive.
    Costs nothing when no daemon is configured (no socket, no DOCKER_HOST)."""
    if "DOCKER_HOST" not in os.environ and not os.path.exists("/var/run/docker.sock"):
        return []
    try:
        client = connect(PING_TIMEOUT_S)
    except UserError:
        return []
    try:
        return remove_owned(client, dead_only=True)
    finally:
        client.close()
