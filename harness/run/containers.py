"""``deploy: containers``: an engine's stack (servers and workers) as containers, through the Docker API.

The stack of an engine is ``compose/<engine>.yaml`` (compose format, so it can be read and run by
hand with a compose CLI): one service per server the engine needs (``postgres``, ``redis``,
``temporal``, each ``durabench serve <name>`` in the runtime image) and one ``worker`` service.
durabench reads the file, interpolates ``${VAR:-default}`` from the variables below, and applies it
with the ``docker`` package (Debian has no compose v2): one user-defined bridge network per engine
run, the servers on it under their service names with their ports published on 127.0.0.1 (random
host ports: the driver, the floors and the store probes use those), and K worker containers
``worker-0..K-1`` on it, which reach the servers by name. The engine's run directory is
bind-mounted at the same path, so workers read their configuration and append their ledgers there
exactly as worker processes do.

Variables: ``DURABENCH_IMAGE``, ``DURABENCH_DURABILITY``, ``DURABENCH_WORK_DIR`` (the engine's run
directory), ``DURABENCH_WORKER_INDEX``, ``DURABENCH_WORKERS``.

The same objects the process deployment uses are provided with the same attributes:
``ContainerServices`` for ``harness.services.Services`` and ``ContainerSupervisor`` for
``harness.supervisor.Supervisor``; their ``proc`` is the container's init process as seen from the
host (the resource sampler follows its process tree, so CPU and memory are counted as for child
processes). Every container runs with ``init=True`` (a Python PID 1 would ignore SIGTERM).

Multi-host (``containers.workers_daemon``, docs/containers.md): the worker containers run on another
daemon (``WorkersDaemon``), on a network of their own there, with no bind mount: the image is copied
through the API (``transfer_image``), each worker's config goes in with ``put_archive``, the container
runs ``durabench worker`` shipping its ledger spool to the run's collector on the advertised address,
and the spool comes back with ``get_archive`` when the workers stop (``ContainerSupervisor.stop``). The
servers' ports are then also published on the advertised address, the workers' way in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shutil
import socket
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from harness import dockerhost, gobuild, procs
from harness.contract import CONFIG_ENV, Engine, EngineContext, WorkerConfig
from harness.errors import ServiceError, UserError
from harness.ledger import Ledger
from harness.run import appdb, image, kafka, services, shipping, temporal_server
from harness.run.proxy import Proxy
from harness.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
CONTAINER_PYTHON = "python"  # on the image's PATH (/opt/durabench/bin)
HEALTH_TIMEOUT_S = 180.0  # temporal-server creates its schemas first (about 30 s on a busy 2-core host)
HEALTH_POLL_S = 0.2
STOP_TIMEOUT_S = 5
SERVICE_KEYS = {"image", "command", "init", "stop_signal", "shm_size", "ports", "healthcheck", "environment",
                "volumes", "depends_on", "deploy"}
FRONT_STACK = "front"  # compose/front.yaml: front doors and Locust, joined to an engine's stack
FRONT_ROLES = ("front", "locust-master", "locust-worker")
# compose/extras.yaml: servers a scenario adds to a stack without them (kafka for load.source: kafka, postgres for
# the application database of effect stages)
EXTRAS_STACK = "extras"
NOT_ENGINES = (FRONT_STACK, EXTRAS_STACK)
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")
# multi-host: a worker container on the workers' daemon holds its config and ledger spool here (no bind mount)
WORKER_DIR = "/durabench-worker"
WORKER_CONFIG = f"{WORKER_DIR}/config.json"
WORKER_SPOOL = f"{WORKER_DIR}/spool"
TRANSFER_CHUNK_BYTES = 1 << 20
TRANSFER_SAY_BYTES = 128 << 20  # a progress line per 128 MB of image sent to the workers' daemon


# -- compose files -------------------------------------------------------------------------------

def compose_path(engine: str) -> Path:
    return COMPOSE_DIR / f"{engine}.yaml"


def _interpolate(value: Any, env: dict[str, str], where: str) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is None:
                raise UserError(f"{where}: ${{{name}}} is not set and has no default")
            return default
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_interpolate(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env, where) for k, v in value.items()}
    return value


def load_stack(engine: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services of ``compose/<engine>.yaml`` with variables substituted; unknown keys are errors."""
    path = compose_path(engine)
    if not path.is_file() or engine in NOT_ENGINES:
        known = ", ".join(sorted(p.stem for p in COMPOSE_DIR.glob("*.yaml") if p.stem not in NOT_ENGINES))
        raise UserError(f"engine {engine!r} has no container stack compose/{path.name} (stacks: {known}); "
                        "run it with deploy: processes")
    out = _load(path, env)
    if "worker" not in out:
        raise UserError(f"{path}: a worker service is required")
    return out


def load_front(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services of compose/front.yaml (the shared part of every stack for ``load.generator: locust``):
    ``front``, ``locust-master``, ``locust-worker``."""
    path = compose_path(FRONT_STACK)
    out = _load(path, env)
    missing = [role for role in FRONT_ROLES if role not in out]
    if missing:
        raise UserError(f"{path}: no service for {missing} (needed: {', '.join(FRONT_ROLES)})")
    return out


def load_extras(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services of compose/extras.yaml: the servers a scenario may add to an engine's stack."""
    return _load(compose_path(EXTRAS_STACK), env)


def _load(path: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise UserError(f"{path}: expected a compose file with a services mapping")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in doc["services"].items():
        unknown = set(spec) - SERVICE_KEYS
        if unknown:
            raise UserError(f"{path}: services.{name}: {sorted(unknown)} not understood by durabench "
                            f"(known: {sorted(SERVICE_KEYS)})")
        out[name] = _interpolate(spec, env, f"{path}: services.{name}")
    return out


def container_argv(argv: list[str]) -> list[str]:
    """A worker argv of the host as the image runs it, or a UserError: ``sys.executable -m module``
    becomes ``python -m module``, a Go worker of harness.gobuild's cache (``<cache>/dbos_go-<hash>``)
    the image's copy (``/opt/durabench/go/dbos_go``: the image is built from the same sources)."""
    if argv and argv[0] == sys.executable:
        return [CONTAINER_PYTHON, *argv[1:]]
    if argv and Path(argv[0]).parent == gobuild.cache_dir():
        name = Path(argv[0]).name.rsplit("-", 1)[0]
        if name in {src.name for src in gobuild.go_sources()}:
            return [f"{image.GO_DIR}/{name}", *argv[1:]]
    raise UserError(f"worker command {argv[:1]} is neither a Python module of durabench nor one of its Go "
                    "workers; deploy: containers runs only workers the runtime image holds")


def _name(*parts: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", "-".join(parts))


def _published_port(container: Any, port: int, host_ip: str = "127.0.0.1") -> int:
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") in (host_ip, ""):
            return int(binding["HostPort"])
    raise ServiceError(f"{container.name}: port {port} is not published on {host_ip}")


def _free_port_on(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _ports(spec: list[str], advertise: str | None = None) -> dict[str, list[tuple[str, int]]]:
    """Compose ``"127.0.0.1::5432"`` entries: published on loopback, at a free host port chosen here
    (Docker would pick a new one at every restart of the container, e.g. after restart-store), and
    on ``advertise`` too when the workers run on another daemon (the only wider binding, asked for)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for entry in spec:
        host_ip, _, rest = str(entry).partition(":")
        host_port, _, port = rest.partition(":")
        if host_ip != "127.0.0.1" or not port:
            raise UserError(f"port {entry!r}: durabench publishes on loopback only, as 127.0.0.1::PORT")
        chosen = int(host_port) if host_port else services.free_port()
        taken = {p for bindings in out.values() for ip, p in bindings if ip == "127.0.0.1"}
        while not host_port and chosen in taken:  # two picks can meet (restate publishes two ports)
            chosen = services.free_port()
        out[f"{port}/tcp"] = [("127.0.0.1", chosen)]
        if advertise is not None:
            out[f"{port}/tcp"].append((advertise, _free_port_on(advertise)))
    return out


def _volumes(spec: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for entry in spec:
        src, _, dst = str(entry).partition(":")
        out[src] = {"bind": dst.split(":")[0], "mode": "rw"}
    return out


class ContainerProcess:
    """A container that runs one process to its end (a front door, the Locust master, a Locust worker), with
    the part of ``subprocess.Popen`` that the Locust load uses: ``poll``, ``wait``, ``terminate``, ``kill``."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.container.reload()
            except Exception:  # removed meanwhile
                self.returncode = -1
                return self.returncode
            if self.container.status in ("exited", "dead"):
                self.returncode = int(self.container.attrs["State"].get("ExitCode", -1))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; raises on ``timeout`` (the Docker API's read timeout) like Popen.wait."""
        if self.returncode is None:
            self.returncode = int(self.container.wait(timeout=timeout)["StatusCode"])
        return self.returncode

    def terminate(self) -> None:
        with contextlib.suppress(Exception):  # exited already
            self.container.kill(signal="SIGTERM")

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.container.kill()


@dataclass
class ContainerProc:
    """What the resource sampler reads of a ``proc``: the host pid of the container's init."""

    pid: int


def _host_proc(container: Any) -> ContainerProc | None:
    try:
        container.reload()
    except Exception:  # removed meanwhile
        return None
    pid = int(container.attrs["State"].get("Pid") or 0)
    return ContainerProc(pid) if pid > 0 and container.status in ("running", "paused") else None


# -- the stack --------------------------------------------------------------------------------

@dataclass
class ContainerService:
    """One server container: the ``harness.services.Service`` attributes, faults through the API."""

    name: str
    container: Any
    network: Any
    log: Path
    health: list[str]
    stop_timeout_s: int = STOP_TIMEOUT_S
    url: str = ""  # as the host (driver, floors, probes) reaches it: a published loopback port
    inner_url: str = ""  # as workers reach it on the stack's network
    port: int = 0
    argv: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    data_dir: Path = Path()
    user: str | None = None
    host: str = "127.0.0.1"  # where the host reaches it (the published port)
    external: bool = False  # durabench starts, stops and restarts it

    @property
    def proc(self) -> ContainerProc | None:
        return _host_proc(self.container)

    def start(self) -> None:
        self.container.start()
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            self.container.reload()
            if self.container.status in ("exited", "dead"):
                tail = self.container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                raise ServiceError(f"container {self.container.name} exited while starting: {tail}")
            if self.container.status == "running" and self.container.exec_run(self.health).exit_code == 0:
                break
            if time.monotonic() > deadline:
                raise ServiceError(f"container {self.container.name} not healthy after {HEALTH_TIMEOUT_S:.0f}s")
            time.sleep(HEALTH_POLL_S)
        self._read_description()
        if self.name == "postgres":
            services._wait_postgres(self)  # type: ignore[arg-type]  # reads .url and .log only
        elif self.name == "kafka":  # and answers the host too, on the address its second listener advertises
            kafka.wait_answers(self.url, self._alive, f"see the log of container {self.container.name}")
        elif self.name == temporal_server.NAME:  # the server creates only temporal-system: as for processes
            retention = str(self.settings.get("namespace_retention", temporal_server.DEFAULTS["namespace_retention"]))
            temporal_server.create_namespace(services.temporal_binary(), self.url, self._running, retention,
                                             self.log.with_name(f"{self.name}-setup.log"))

    def _alive(self) -> bool:
        if not self._running():
            raise ServiceError(f"container {self.container.name} exited while starting")
        return True

    def _running(self) -> bool:
        self.container.reload()
        return bool(self.container.status == "running")

    def _read_description(self) -> None:
        for line in self.container.logs().decode(errors="replace").splitlines():
            if line.startswith(services.DESCRIBE_PREFIX):
                desc = json.loads(line.removeprefix(services.DESCRIBE_PREFIX))
                self.argv, self.settings, self.version = desc["argv"], desc["settings"], desc["version"]
                return

    def kill(self) -> None:
        """SIGKILL the container (every process in it); its data stays in the container."""
        self.container.kill()
        self.container.wait()

    def stop(self) -> None:
        self.container.stop(timeout=self.stop_timeout_s)

    def restart(self, clean: bool = False) -> None:
        """Crash (SIGKILL) or cleanly stop the container, then start it again on the same data."""
        if clean:
            self.stop()
        else:
            self.kill()
        self.start()

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "inner_url": self.inner_url, "version": self.version, "argv": self.argv,
                "settings": self.settings, "container": self.container.name,
                "image": self.container.attrs["Image"], "limits": limits(self.container)}


def limits(container: Any) -> dict[str, Any]:
    host = container.attrs.get("HostConfig", {})
    return {"nano_cpus": host.get("NanoCpus") or None, "memory_bytes": host.get("Memory") or None,
            "cpuset_cpus": host.get("CpusetCpus") or None, "shm_size_bytes": host.get("ShmSize")}


@dataclass
class ContainerServices:
    """The servers of one engine run as containers (the ``harness.services.Services`` interface)."""

    services: dict[str, ContainerService]
    scratch: Path
    # the driver's link to a server (link faults): a fault proxy in front of the published port; the
    # workers reach the servers on the stack's network, never through it
    proxies: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoints(self) -> dict[str, str]:
        """As the driver (and the adapter's prepare) reach each server: its proxy when it has one, else
        its published port."""
        out = {}
        for name, svc in self.services.items():
            proxy = self.proxies.get(name)
            out[name] = svc.url if proxy is None else svc.url.replace(f"127.0.0.1:{svc.port}",
                                                                      f"127.0.0.1:{proxy.port}")
        for svc in self.services.values():  # a server's further endpoints (restate-admin), as for processes
            out.update(svc.extra.get("endpoints", {}))
        return out

    def reach(self, name: str) -> tuple[str, int]:
        """Host and port through which the host reaches service ``name``: its proxy's, else its published port."""
        proxy = self.proxies.get(name)
        if proxy is not None:
            return "127.0.0.1", proxy.port
        return self.services[name].host, self.services[name].port

    @property
    def inner_endpoints(self) -> dict[str, str]:
        out = {name: svc.inner_url for name, svc in self.services.items()}
        for svc in self.services.values():
            out.update(svc.extra.get("inner_endpoints", {}))
        return out

    def describe(self) -> dict[str, Any]:
        out = {name: svc.describe() for name, svc in self.services.items()}
        for name, url in self.endpoints.items():
            if name in self.proxies:
                out[name]["proxied_url"] = services.redact(url)
        return out


class Stack:
    """The network, server containers and worker template of one engine run."""

    def __init__(self, client: Any, image_tag: str, engine: str, run_id: str, work_dir: Path, profile: str,
                 server_settings: dict[str, dict[str, Any]], workers: int,
                 workers_daemon: WorkersDaemon | None = None) -> None:
        self.client = client
        self.workers = workers_daemon  # multi-host: the worker containers' daemon (None: this one)
        self.worker_net: Any = None  # the workers' network on that daemon
        self.collector_url = ""  # multi-host: where worker containers ship their ledgers (set by the runner)
        self.image = image_tag
        self.engine = engine
        self.prefix = _name("durabench", run_id, engine)
        self.work_dir = work_dir
        self.labels = dockerhost.owner_labels(run_id)
        env = {"DURABENCH_IMAGE": image_tag, "DURABENCH_DURABILITY": profile, "DURABENCH_WORK_DIR": str(work_dir),
               "DURABENCH_WORKERS": str(workers)}
        self.env = env
        self.specs = load_stack(engine, env)
        self.front_specs: dict[str, dict[str, Any]] = {}  # compose/front.yaml, read when a role first runs
        self.server_settings = server_settings
        self.network: Any = None
        self.containers: list[Any] = []
        self.scratch = procs.scratch_dir("durabench-data-")
        self.services = ContainerServices({}, self.scratch)

    def proxy(self) -> None:
        """A fault proxy in front of every server's published port: the driver's link (link faults)."""
        for name, svc in self.services.services.items():
            self.services.proxies[name] = Proxy(name, "127.0.0.1", svc.port)
            self.services.proxies[name].start()

    def up(self, service_names: tuple[str, ...]) -> None:
        added = [s for s in service_names if s not in self.specs]
        if added:  # kafka (load.source: kafka), postgres (the application database): from compose/extras.yaml
            # kafka advertises the host's address of its published port: chosen here, before its command is read
            extras = load_extras({**self.env, "DURABENCH_KAFKA_PORT": str(services.free_port())})
            self.specs.update({s: extras[s] for s in added if s in extras})
        missing = [s for s in service_names if s not in self.specs]
        if missing:
            raise UserError(f"{compose_path(self.engine)}: no service for {missing} (the engine needs {service_names}; "
                            f"{compose_path(EXTRAS_STACK).name} adds {', '.join(load_extras(self.env))})")
        self.network = self._create_network(self.client, self.prefix)
        if self.workers is not None:  # named apart: the workers' daemon may be this one under another URL
            self.worker_net = self._create_network(self.workers.client, f"{self.prefix}-workers")
        advertise = self.workers.advertise if self.workers is not None else None
        for name in service_names:
            spec = self.specs[name]
            command = list(spec["command"])
            yes, no = ("on", "off") if name == "postgres" else ("yes", "no")
            for key, value in self.server_settings.get(name, {}).items():
                command += ["--set", f"{key}={services._setting(value, yes, no)}"]
            container = self._create(f"{self.prefix}-{name}", spec, command, name, advertise=advertise)
            svc = ContainerService(name, container, self.network, self.work_dir / "logs" / f"{name}.log",
                                   list(spec["healthcheck"]["test"])[1:], data_dir=self.scratch / name)
            svc.data_dir.mkdir(parents=True, exist_ok=True)
            self.services.services[name] = svc
            container.start()
            container.reload()
            port = services.CONTAINER_PORTS[name]
            # kafka: the host's clients use its second listener (the one that advertises the published address)
            svc.port = _published_port(container, kafka.CONTAINER_HOST_PORT if name == "kafka" else port)
            svc.url = _url(name, "127.0.0.1", svc.port)
            # the workers reach the servers by name on the stack's network, or on another daemon through
            # the port published on the advertised address
            svc.inner_url = (_url(name, name, port) if advertise is None
                             else _url(name, advertise, _published_port(container, port, advertise)))
            if name == "temporal":
                svc.extra = {"metrics": f"http://127.0.0.1:{_published_port(container, port + 2)}/metrics",
                             "sqlite_file": None}  # inside the container: the probe reports no sqlite_bytes
            elif name == "restate":
                if advertise is not None:
                    raise UserError("restate with its workers on another daemon: the Restate server calls each "
                                    "worker's endpoint, which such a worker does not publish; run restate's workers "
                                    "on the stack's daemon")
                admin = services.RESTATE_ADMIN_PORT
                svc.extra = {"endpoints": {"restate-admin": f"http://127.0.0.1:{_published_port(container, admin)}"},
                             "inner_endpoints": {"restate-admin": f"http://{name}:{admin}"}}
            elif name == temporal_server.NAME:
                metrics = _published_port(container, temporal_server.CONTAINER_PORTS["metrics"])
                svc.extra = {"metrics": f"http://127.0.0.1:{metrics}/metrics"}
            svc.wait_healthy()

    def _create_network(self, client: Any, name: str) -> Any:
        """A bridge network whose subnet counts as user-configured (Docker's own pick, made explicit), so a
        container reconnected after a partition gets its address back: its TCP connections then survive the
        partition as they would a real network's (packets lost meanwhile, retransmitted after)."""
        import docker.types

        probe = client.networks.create(name, driver="bridge", labels=self.labels)
        config = probe.attrs["IPAM"]["Config"][0]
        probe.remove()
        pool = docker.types.IPAMPool(subnet=config["Subnet"], gateway=config.get("Gateway"))
        return client.networks.create(name, driver="bridge", labels=self.labels,
                                      ipam=docker.types.IPAMConfig(pool_configs=[pool]))

    def _create(self, name: str, spec: dict[str, Any], command: list[str], alias: str | None,
                environment: dict[str, str] | None = None, advertise: str | None = None,
                remote: bool = False) -> Any:
        """A container of the stack; ``remote``: on the workers' daemon, on its network, without the
        spec's volumes (no bind mount reaches another machine)."""
        env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
        env.update(environment or {})
        client = self.workers.client if remote and self.workers is not None else self.client
        network = self.worker_net if remote else self.network
        container = client.containers.create(
            spec["image"], command, name=name, labels=self.labels, init=bool(spec.get("init", True)),
            environment=env, ports=_ports(spec.get("ports") or [], advertise),
            volumes=None if remote else _volumes(spec.get("volumes") or []),
            stop_signal=spec.get("stop_signal"), shm_size=spec.get("shm_size"), detach=True,
            network=network.name, hostname=alias or name)
        if alias is not None:  # the service name resolves on the stack's network
            self.network.disconnect(container)
            self.network.connect(container, aliases=[alias])
        self.containers.append(container)
        return container

    def worker_container(self, index: int, config_path: Path, argv: list[str]) -> Any:
        spec = self.specs["worker"]
        env = {CONFIG_ENV: str(config_path), "DURABENCH_WORKER_INDEX": str(index)}
        if self.workers is None:
            return self._create(f"{self.prefix}-worker-{index}", spec, argv, None, env)
        # another daemon: ``durabench worker`` runs the engine's worker with its ledger in a spool inside
        # the container and ships it to the run's collector (harness/run/shipping.py); its config goes in
        # through the API (put_archive) before the first start
        command = ["durabench", "worker", "--config", WORKER_CONFIG, "--collector", self.collector_url,
                   "--spool", WORKER_SPOOL]
        env[CONFIG_ENV] = WORKER_CONFIG
        container = self._create(f"{self.prefix}-worker-{index}", spec, command, None, env, remote=True)
        if not container.put_archive("/", _tar({f"{WORKER_DIR.lstrip('/')}/config.json": config_path.read_bytes()})):
            raise ServiceError(f"{container.name}: the workers' daemon refused the worker config")
        return container

    def run_role(self, role: str, name: str, argv: list[str], environment: dict[str, str]) -> ContainerProcess:
        """Start a container of compose/front.yaml's service ``role`` (a front door, the Locust master or a
        Locust worker) on the stack's network, reachable there as ``name``; removed with the stack."""
        if not self.front_specs:
            self.front_specs = load_front(self.env)
        container = self._create(f"{self.prefix}-{name}", self.front_specs[role], argv, name, environment)
        container.start()
        return ContainerProcess(container)

    @property
    def worker_network(self) -> Any:
        """The network the worker containers are on: the stack's, or theirs on the workers' daemon."""
        return self.network if self.worker_net is None else self.worker_net

    def disconnect(self, container: Any, network: Any = None) -> str:
        """A real partition: the container leaves the stack's network (or ``network``: its name stops
        resolving, packets to and from it are lost). Returns its address, for ``connect``."""
        network = self.network if network is None else network
        container.reload()
        address = str(container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"])
        network.disconnect(container, force=True)
        return address

    def connect(self, container: Any, address: str, alias: str | None = None, network: Any = None) -> None:
        """Heal a partition: back on the network at the same address (and under its service name)."""
        network = self.network if network is None else network
        network.connect(container, aliases=[alias] if alias else None, ipv4_address=address or None)

    def down(self) -> None:
        """Collect every container's log into the engine's logs/, then remove containers and network."""
        for proxy in self.services.proxies.values():
            with contextlib.suppress(Exception):
                proxy.stop()
        for container in self.containers:
            with contextlib.suppress(Exception):
                log = self.work_dir / "logs" / f"{container.name.removeprefix(self.prefix + '-')}.log"
                log.write_bytes(container.logs())
        for container in self.containers:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        for network in (self.network, self.worker_net):
            if network is not None:
                with contextlib.suppress(Exception):
                    network.remove()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _url(name: str, host: str, port: int) -> str:
    """How a client reaches server ``name`` at ``host:port``."""
    if name == "postgres":
        return f"postgresql://postgres@{host}:{port}/postgres"
    if name == "redis":
        return f"redis://{host}:{port}/0"
    if name == "restate":  # its ingress
        return f"http://{host}:{port}"
    return f"{host}:{port}"


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fetch_dir(container: Any, path: str, dest: Path) -> Path:
    """Copy directory ``path`` of a container (running, stopped or killed) into ``dest`` through the API
    (get_archive); returns ``dest / basename(path)``."""
    bits, _ = container.get_archive(path)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits)), mode="r|") as tar:
        tar.extractall(dest, filter="data")  # a container's file names cannot escape dest
    return dest / Path(path).name


@contextlib.contextmanager
def running(client: Any, image_tag: str, engine: str, service_names: tuple[str, ...], run_id: str, work_dir: Path,
            profile: str, server_settings: dict[str, dict[str, Any]], workers: int,
            proxied: bool = False, workers_daemon: WorkersDaemon | None = None) -> Iterator[Stack]:
    """The engine's stack with its servers up and healthy; removed on exit (workers included).
    ``proxied``: the driver reaches the servers through fault proxies (link faults); ``workers_daemon``:
    the worker containers run there (multi-host)."""
    stack = Stack(client, image_tag, engine, run_id, work_dir, profile, server_settings, workers, workers_daemon)
    try:
        stack.up(service_names)
        if proxied:
            stack.proxy()
        yield stack
    finally:
        stack.down()


# -- workers ----------------------------------------------------------------------------------

class _Slot(threading.Thread):
    def __init__(self, sup: ContainerSupervisor, index: int) -> None:
        super().__init__(name=f"worker:{index}", daemon=True)
        self.sup = sup
        self.index = index
        self.container: Any = None
        self.starts = 0
        self._started = threading.Event()

    @property
    def proc(self) -> ContainerProc | None:
        """The container's init as this host sees it; none for a container of the workers' daemon (its
        processes are another machine's: its cost comes from the Docker stats alone)."""
        if self.container is None or self.sup.stack.workers is not None:
            return None
        return _host_proc(self.container)

    def run(self) -> None:
        sup = self.sup
        self.container = sup.stack.worker_container(self.index, sup.config_path(self.index), sup.argv(self.index))
        while not sup.stopping.is_set():
            try:
                self.container.start()
                self.container.reload()
            except Exception as exc:  # the daemon refused: record it and give up on this slot
                sup.ledger.write("worker_exit", worker=self.name, worker_pid=0, code=-1, error=str(exc)[:200])
                self._started.set()
                return
            self.starts += 1
            pid = int(self.container.attrs["State"].get("Pid") or 0)
            sup.ledger.write("worker_start", worker=self.name, worker_pid=pid, start=self.starts,
                             container=self.container.name)
            self._started.set()
            try:
                code = int(self.container.wait()["StatusCode"])
            except Exception:
                code = -1  # removed while waiting (stop)
            if sup.stopping.is_set():
                break
            sup.ledger.write("worker_exit", worker=self.name, worker_pid=pid, code=code,
                             container=self.container.name)
            if sup.stopping.wait(sup.restart_delay_s):
                break

    def wait_started(self) -> None:
        self._started.wait()


class ContainerSupervisor(Supervisor):
    """K worker containers with stable identities, restarted (same container) after they exit: the
    ``harness.supervisor.Supervisor`` of deploy: containers."""

    def __init__(self, engine: Engine, ctx: EngineContext, count: int, restart_delay_s: float, ledger: Ledger,
                 stack: Stack) -> None:
        self.stack = stack
        super().__init__(engine, ctx, count, restart_delay_s, ledger)

    def _slot(self, index: int) -> _Slot:
        return _Slot(self, index)

    def endpoints(self) -> dict[str, str]:
        out = dict(self.stack.services.inner_endpoints)  # service names on the run's Docker network
        if "app_db" in self.ctx.endpoints:  # the application database, on the stack's postgres
            out["app_db"] = appdb.database_url(out["postgres"])
        return out

    def config(self, index: int) -> WorkerConfig:
        """The worker's configuration; its consumer bootstraps from kafka's listener on the stack's network."""
        config = super().config(index)
        if config.events is None:
            return config
        return dataclasses.replace(config, events=dataclasses.replace(
            config.events, bootstrap=self.stack.services.inner_endpoints["kafka"]))

    def config_path(self, index: int) -> Path:
        path = super().config_path(index)
        self.config(index).dump(path)
        return path

    def argv(self, index: int) -> list[str]:
        return container_argv(self.engine.worker_command(self.ctx, index))

    def _container(self, index: int) -> Any:
        return self.slots[index].container

    def kill(self, index: int) -> str | None:
        """SIGKILL worker ``index``'s container; the slot starts it again. Returns the container's name."""
        container = self._container(index)
        try:
            container.kill()
        except Exception:  # not running
            return None
        return str(container.name)

    def pause(self, index: int) -> str | None:
        """Freeze the container (cgroup freezer): a gray failure."""
        container = self._container(index)
        try:
            container.pause()
        except Exception:
            return None
        return str(container.name)

    def resume(self, index: int) -> None:
        with contextlib.suppress(Exception):  # not paused (any more)
            self._container(index).unpause()

    def disconnect(self, index: int) -> tuple[str, str]:
        """Partition worker ``index`` from the stack (on the workers' daemon: from its network there, so
        from the servers and the collector); returns its container's name and address."""
        container = self._container(index)
        return str(container.name), self.stack.disconnect(container, self.stack.worker_network)

    def connect(self, index: int, address: str) -> None:
        self.stack.connect(self._container(index), address, network=self.stack.worker_network)

    def stop(self) -> None:
        """Stop every worker container; on the workers' daemon, then copy each one's spool back
        (``<engine>/hosts/worker-N/spool/``: its ledger files and the engine worker's log) and ship what
        the collector does not hold yet, or raise a ServiceError naming what is missing."""
        self.stopping.set()
        for slot in self.slots:
            if slot.container is not None:
                with contextlib.suppress(Exception):
                    slot.container.unpause()
                with contextlib.suppress(Exception):
                    slot.container.stop(timeout=STOP_TIMEOUT_S)
        for slot in self.slots:
            slot.join(timeout=STOP_TIMEOUT_S * 2)
        if self.stack.workers is not None:
            self.collect_spools()

    def collect_spools(self) -> None:
        incomplete = []
        for slot in self.slots:
            if slot.container is None:
                continue
            try:
                spool = fetch_dir(slot.container, WORKER_SPOOL, self.ctx.work_dir / "hosts" / f"worker-{slot.index}")
            except Exception as exc:  # the daemon lost the container or cannot be reached
                incomplete.append(f"{slot.name} (spool not fetched: {type(exc).__name__}: {str(exc)[:120]})")
                continue
            if not shipping.Shipper(spool, self.stack.collector_url).ship_all(shipping.FINAL_SHIP_TIMEOUT_S):
                incomplete.append(slot.name)
        if incomplete:
            raise ServiceError(f"the ledger collector did not take every record of {incomplete}; their spools are "
                               f"in {self.ctx.work_dir / 'hosts'}")


def daemon_facts(client: Any) -> dict[str, Any]:
    return dockerhost.facts(client)


# -- multi-host: the workers' daemon ------------------------------------------------------------

@dataclass
class WorkersDaemon:
    """The daemon of the worker containers when it is another than the servers' (``containers.workers_daemon``)."""

    client: Any
    name: str  # as the scenario gives it: a URL or a Docker context name (the reaper is told it)
    where: dockerhost.Endpoint
    advertise: str  # this machine's address as that daemon's containers reach it
    image_transfer: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {**dockerhost.facts(self.client, self.where), "image_transfer": self.image_transfer}


def workers_daemon(name: str, advertise: str) -> WorkersDaemon:
    """A client of the workers' daemon, or a UserError: it must answer, and ``advertise`` must be an
    address of this machine (the servers' ports and the collector are published on it)."""
    mine = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET}
    if advertise not in mine:
        raise UserError(f"containers.advertise {advertise!r} is not an address of this machine (its addresses: "
                        f"{', '.join(sorted(mine))}); give the one the workers' host reaches this machine at")
    where = dockerhost.endpoint_named(name)
    return WorkersDaemon(dockerhost.connect(where=where), name, where, advertise)


def transfer_image(src: Any, dst: Any, tag: str, say: Callable[[str], None]) -> dict[str, Any]:
    """The runtime image ``tag`` on the workers' daemon ``dst``: copied from ``src`` through the API
    (``images.get().save()`` streamed into ``images.load()``, with progress lines) unless ``dst`` already
    holds the same image id. Returns what the manifest records of it."""
    import docker.errors

    img = src.images.get(tag)
    repo, _, version = tag.partition(":")
    try:
        held = dst.images.get(img.id)
    except docker.errors.ImageNotFound:
        held = None
    if held is not None:
        if tag not in held.tags:
            held.tag(repo, version)
        return {"copied": False, "id": img.id}
    size = int(img.attrs.get("Size") or 0)
    say(f"image: copying {tag} ({size / 1e6:.0f} MB) to the workers' daemon through the Docker API")
    started = time.monotonic()
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        said = 0
        for chunk in img.save(chunk_size=TRANSFER_CHUNK_BYTES):
            sent += len(chunk)
            if sent - said >= TRANSFER_SAY_BYTES:
                said = sent
                say(f"image: {sent / 1e6:.0f} MB sent ({time.monotonic() - started:.0f}s)")
            yield chunk

    dst.images.load(chunks())
    loaded = dst.images.get(img.id)
    loaded.tag(repo, version)
    seconds = round(time.monotonic() - started, 1)
    say(f"image: {tag} on the workers' daemon ({sent / 1e6:.0f} MB in {seconds:g}s)")
    return {"copied": True, "id": img.id, "bytes": sent, "seconds": seconds}
