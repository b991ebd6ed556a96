"""The Docker daemon durabench talks to (through the ``docker`` package), and its leftovers.

Every container and network durabench creates carries labels naming its owner: the pid and
start time of the durabench process (``durabench.owner``, ``durabench.owner_start``) and the run
(``durabench.run``). Nothing may outlive the owner: a normal exit or Ctrl-C removes them on the way
out, the reaper (harness/reaper.py) removes them when the owner's pipe closes (SIGKILL), and the
next start removes those whose owner is dead (``remove_leftovers``), as for child processes.

The daemon is chosen as the docker CLI chooses it: ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY`` /
``DOCKER_CERT_PATH``), else the Docker context named by ``DOCKER_CONTEXT`` or the CLI's current
context (``docker context use NAME``: ``currentContext`` in ``~/.docker/config.json``), else the
local socket. ``deploy: containers`` needs that daemon on this machine (``is_local``): the worker
containers bind-mount the run directory and the servers publish their ports on 127.0.0.1.

A second daemon, the **workers' daemon** (``containers.workers_daemon``: a URL such as
``ssh://user@host`` / ``tcp://host:2376`` / ``unix:///path``, or a Docker context name), may hold the
worker containers of a run (harness/run/containers.py, "Multi-host"); ``endpoint_named`` resolves it
and ``connect(where)`` reaches it. The reaper and ``remove_leftovers`` clean it too. Containers carry
the owner's host name (``durabench.owner_host``): an owner of another host is never judged dead here.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil

from harness.errors import UserError

LABEL = "durabench"  # every object durabench owns carries durabench=1
OWNER = "durabench.owner"
OWNER_START = "durabench.owner_start"
RUN = "durabench.run"
OWNER_HOST = "durabench.owner_host"
API_TIMEOUT_S = 120
PING_TIMEOUT_S = 3
MAX_POOL_SIZE = 96  # one connection blocks in wait() per worker container (up to 64), plus calls


DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon is: its URL, and the Docker context that named it (None: DOCKER_HOST or the default)."""

    host: str
    context: str | None = None
    tls: Any = None


def endpoint() -> Endpoint:
    """``DOCKER_HOST``, else the context of ``DOCKER_CONTEXT`` or the CLI's current one, else the local socket."""
    if os.environ.get("DOCKER_HOST"):
        return Endpoint(os.environ["DOCKER_HOST"])
    from docker.context.config import get_current_context_name

    name = os.environ.get("DOCKER_CONTEXT") or get_current_context_name()
    if name == "default":
        return Endpoint(DEFAULT_HOST)
    return _context_endpoint(name, " or unset DOCKER_CONTEXT",
                             f"Docker context {name!r} does not exist (`docker context ls` lists them); "
                             "unset DOCKER_CONTEXT or set DOCKER_HOST")


def endpoint_named(value: str) -> Endpoint:
    """The daemon that ``value`` names: a URL (``scheme://...``) or a Docker context's name."""
    if "://" in value:
        return Endpoint(value)
    return _context_endpoint(value, "", f"{value!r} is neither a daemon URL (unix://, tcp://, ssh://) nor a Docker "
                             "context (`docker context ls` lists them)")


def _context_endpoint(name: str, also: str, missing: str) -> Endpoint:
    """The daemon of Docker context ``name``; a corrupt context (``also``: what else fixes it) or a missing one
    (``missing``: the message) is the user's to fix."""
    from docker.context import ContextAPI

    try:
        ctx = ContextAPI.get_context(name)
    except Exception as exc:  # a corrupt context directory
        raise UserError(f"Docker context {name!r} cannot be read ({exc}); fix it with `docker context inspect "
                        f"{name}`{also}") from None
    if ctx is None or not ctx.Host:
        raise UserError(missing)
    return Endpoint(str(ctx.Host), name, ctx.TLSConfig)


def connect(timeout_s: float = API_TIMEOUT_S, where: Endpoint | None = None) -> Any:
    """A client of the daemon (``where``, else the one the docker CLI would use), or a UserError saying
    how to get one."""
    try:
        import docker
    except ImportError:
        raise UserError("containers need the docker package: pip install 'docker>=7'") from None
    default = where is None
    where = endpoint() if where is None else where
    try:
        if default and where.context is None and os.environ.get("DOCKER_HOST"):
            client = docker.DockerClient(**_env_kwargs(), timeout=int(timeout_s), max_pool_size=MAX_POOL_SIZE)
        else:
            # ssh://: through the ssh command (``docker system dial-stdio`` on the other end), as the docker
            # CLI does; docker's own ssh transport would need paramiko
            client = docker.DockerClient(base_url=where.host, tls=where.tls or False, timeout=int(timeout_s),
                                         max_pool_size=MAX_POOL_SIZE, use_ssh_client=where.host.startswith("ssh://"))
        client.ping()
    except Exception as exc:  # docker raises DockerException, requests errors or OSError here
        named = f" (Docker context {where.context})" if where.context else ""
        fix = ("start dockerd (Debian: apt-get install docker.io, then dockerd &) or set DOCKER_HOST" if default else
               "start dockerd there, or fix containers.workers_daemon / --workers-docker-host")
        raise UserError(f"no Docker daemon answers at {where.host}{named} ({type(exc).__name__}); {fix}") from None
    return client


def _env_kwargs() -> dict[str, Any]:
    from docker.utils import kwargs_from_env

    return dict(kwargs_from_env())


def is_local(host: str, daemon_name: str, hostname: str | None = None) -> bool:
    """Whether the daemon at ``host`` (its ``info()["Name"]`` is ``daemon_name``) runs on this machine:
    a unix socket, a TCP address on loopback, or a daemon that names itself as this host does."""
    url = urlsplit(host)
    if url.scheme in ("unix", "npipe", "http+unix"):
        return True
    if url.hostname in ("localhost", "::1") or (url.hostname or "").startswith("127."):
        return True
    return daemon_name == (hostname or socket.gethostname())


def facts(client: Any, where: Endpoint | None = None) -> dict[str, Any]:
    """What the manifest records of the daemon: its id, versions, endpoint, context, name and whether it
    is local (``where``: the daemon it was reached at, else the docker CLI's)."""
    version = client.version()
    where = endpoint() if where is None else where
    info = client.info()
    name = str(info.get("Name", ""))
    return {"id": info.get("ID"), "server_version": version.get("Version"), "api_version": version.get("ApiVersion"),
            "docker_host": where.host, "context": where.context, "name": name, "local": is_local(where.host, name)}


def require_local(daemon: dict[str, Any]) -> None:
    """deploy: containers places the whole stack on the daemon, which must be this machine's (see module doc)."""
    if not daemon["local"]:
        via = f"Docker context {daemon['context']!r}" if daemon["context"] else "DOCKER_HOST"
        raise UserError(
            f"{via} names the daemon of another machine ({daemon['docker_host']}, named {daemon['name']!r}); "
            "deploy: containers needs the daemon on this machine (worker containers bind-mount the run directory, "
            "servers publish on 127.0.0.1). Run durabench on that machine, or keep this daemon for the servers and "
            "put only the workers there with containers.workers_daemon (docs/containers.md, \"Multi-host\")")


def available(where: Endpoint | None = None) -> str | None:
    """None when a daemon answers (``where``, else the docker CLI's), else why not (one line): the tests
    skip (or fail in CI) with it."""
    try:
        connect(PING_TIMEOUT_S, where).close()
    except UserError as exc:
        return str(exc)
    return None


def owner_labels(run: str) -> dict[str, str]:
    me = psutil.Process()
    return {LABEL: "1", OWNER: str(me.pid), OWNER_START: f"{me.create_time():.3f}", RUN: run,
            OWNER_HOST: socket.gethostname()}


def _owner_alive(labels: dict[str, str]) -> bool:
    """Whether the durabench process that owns an object is alive; one of another host (a workers'
    daemon shared by several machines) counts as alive: only its own host can tell."""
    if labels.get(OWNER_HOST, socket.gethostname()) != socket.gethostname():
        return True
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
    # ignore_removed: a container another cleaner (durabench's own exit, the reaper, another start's
    # leftover sweep) removes between the listing and its inspection is not an error
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
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


def remove_leftovers(where: Endpoint | None = None) -> list[str]:
    """At start: remove containers and networks of durabench processes that are no longer alive, on
    the daemon ``where`` (else the docker CLI's). Costs nothing when no daemon is configured (no
    socket, no DOCKER_HOST)."""
    if where is None and not ({"DOCKER_HOST", "DOCKER_CONTEXT"} & set(os.environ)) \
            and not os.path.exists("/var/run/docker.sock"):
        return []
    try:
        client = connect(PING_TIMEOUT_S, where)
    except UserError:
        return []
    try:
        return remove_owned(client, dead_only=True)
    finally:
        client.close()
