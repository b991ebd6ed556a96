"""Store counters: the database work the engine's servers report about themselves.

One probe per server, read by the resource sampler (harness/run/resources.py) about once a second.
Each ``read()`` returns a JSON-able mapping of cumulative counters, or None when the server
cannot be reached right now (restarted by a fault, partitioned): the sampler skips that sample.
Counters restart from zero when their server restarts; the analysis accumulates across resets.

``postgres``  ``pg_stat_database`` (per database: ``xact_commit``, ``xact_rollback``, ``tup_inserted``,
              ``tup_updated``, ``tup_deleted``) and ``pg_stat_wal`` (``wal_records``, ``wal_fpi``,
              ``wal_bytes``; cluster-wide). The probe's own connection uses the ``postgres`` database
              and the floors use ``durabench_floors``: the analysis leaves both out.
``redis``     ``INFO``: ``total_commands_processed`` (the probe's one ``INFO`` per sample included: the
              analysis subtracts it), network bytes in/out, ``aof_current_size``.
``temporal``, ``temporal-server``  the server's Prometheus endpoint (``--metrics-port``): ``persistence_requests`` and
              ``service_requests`` summed over every label set; and the size of its SQLite file and
              ``-wal`` file (``sqlite_bytes``).
"""

from __future__ import annotations

import contextlib
import itertools
import urllib.request
from pathlib import Path
from typing import Any, Protocol

PROBE_DB = "postgres"  # the database the probe connects to (excluded from engine figures)
FLOORS_DB = "durabench_floors"  # the database the commit floor writes to (excluded too)
EXCLUDED_DBS = ("template0", "template1", PROBE_DB, FLOORS_DB)
TIMEOUT_S = 2.0
PG_DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
PG_WAL_COUNTERS = ("wal_records", "wal_fpi", "wal_bytes")
TEMPORAL_COUNTERS = ("persistence_requests", "service_requests")
REDIS_COUNTERS = ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")


class Probe(Protocol):
    name: str

    def read(self) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class PostgresProbe:
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def read(self) -> dict[str, Any] | None:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=int(TIMEOUT_S),
                                             application_name="durabench-sampler")
            cols = ", ".join(PG_DB_COUNTERS)
            rows = self._conn.execute(
                f"SELECT datname, {cols} FROM pg_stat_database WHERE datname IS NOT NULL").fetchall()
            wal = self._conn.execute(f"SELECT {', '.join(PG_WAL_COUNTERS)} FROM pg_stat_wal").fetchone()
        except (psycopg.Error, OSError):
            self.close()
            return None
        return {
            "databases": {r[0]: dict(zip(PG_DB_COUNTERS, map(int, r[1:]), strict=True)) for r in rows},
            "wal": dict(zip(PG_WAL_COUNTERS, map(int, wal), strict=True)) if wal else {},
        }

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


class RedisProbe:
    name = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)

    def read(self) -> dict[str, Any] | None:
        import redis

        try:
            info = self._client.info()  # one command: the default sections (stats, persistence ...)
        except (redis.RedisError, OSError):
            return None
        out = {k: int(info.get(k, 0)) for k in REDIS_COUNTERS}
        out["aof_current_size"] = int(info.get("aof_current_size", 0))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def parse_prometheus(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of every sample of each named metric (all label sets) in Prometheus text format.
    (str.find rather than a regex or a split: Temporal's page is ~0.5 MB, read every second.)"""
    out = dict.fromkeys(names, 0.0)
    text = "\n" + text
    for name in names:
        key = "\n" + name
        i = text.find(key)
        while i >= 0:
            end = text.find("\n", i + 1)
            line = text[i + 1 : end if end >= 0 else len(text)]
            if line[len(name) : len(name) + 1] in ("{", " ", "\t"):
                with contextlib.suppress(ValueError):
                    out[name] += float(line.rsplit(None, 1)[-1])
            if end < 0:
                break
            i = text.find(key, end)
    return out


class TemporalProbe:
    name = "temporal"

    def __init__(self, metrics_url: str | None, sqlite_path: Path | None) -> None:
        self.metrics_url = metrics_url
        self.sqlite_path = sqlite_path

    def read(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if self.metrics_url:
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=TIMEOUT_S) as resp:
                    text = resp.read().decode()
            except OSError:
                return None
            out.update({k: int(v) for k, v in parse_prometheus(text, TEMPORAL_COUNTERS).items()})
        if self.sqlite_path is not None:
            size = 0
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):
                    size += Path(str(self.sqlite_path) + suffix).stat().st_size
            out["sqlite_bytes"] = size
        return out

    def close(self) -> None:
        return None


def probe_for(service: Any) -> Probe | None:
    """The probe of a harness ``Service`` (see harness/run/services.py), reaching it directly (never
    through the fault proxy, so a partition does not blind the sampler)."""
    if service.name == "postgres":
        return PostgresProbe(service.url.rsplit("/", 1)[0] + f"/{PROBE_DB}")
    if service.name == "redis":
        return RedisProbe(service.url)
    if service.name in ("temporal", "temporal-server"):  # the production server has no SQLite file
        # a server in a container has its file in the container's filesystem: no sqlite_bytes then
        db = service.extra.get("sqlite_file", service.settings.get("db_filename"))
        return TemporalProbe(service.extra.get("metrics"), Path(db) if db else None)
    return None


# ------------------------------------------------------------------ analysis

def engine_pg_counters(sample: dict[str, Any]) -> dict[str, int]:
    """Flatten one postgres sample: counters summed over the engine's databases, plus WAL."""
    dbs = sample.get("databases", {})
    mine = {n: c for n, c in dbs.items() if n not in EXCLUDED_DBS}
    out = {k: sum(int(c.get(k, 0)) for c in mine.values()) for k in PG_DB_COUNTERS}
    out.update({k: int(v) for k, v in sample.get("wal", {}).items()})
    return out


def flatten(store: str, sample: dict[str, Any]) -> dict[str, int]:
    if store == "postgres":
        return engine_pg_counters(sample)
    return {k: int(v) for k, v in sample.items() if isinstance(v, int | float)}


def counter_delta(values: list[float]) -> float:
    """Increase of a cumulative counter over a series, across resets (a drop means the server
    restarted and its counter began again at zero), like Prometheus' ``increase``."""
    total = 0.0
    for prev, cur in itertools.pairwise(values):
        total += cur - prev if cur >= prev else cur
    return total
