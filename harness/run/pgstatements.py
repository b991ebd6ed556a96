"""Statement accounting on every PostgreSQL the harness starts: ``pg_stat_statements`` snapshots.

Every PostgreSQL of a run preloads ``pg_stat_statements`` (harness/run/services.py). The runner
takes two windows per engine, each opened by ``pg_stat_statements_reset()`` and closed by a
snapshot of every statement (``dbname``, normalized ``query``, ``calls``, ``rows``, WAL records /
full-page images / bytes, execution time), of ``pg_stat_database`` (transactions per database; a
backend reports these up to ``PGSTAT_IDLE_INTERVAL`` = 10 s late when it goes idle, hence the settle
wait before the idle window) and of the next transaction id (its advance counts write
transactions, cluster-wide and without delay):

``idle``  the workers are up and no workflow runs (the scenario's ``resources.baseline`` seconds before
          the load): what the engine does per second on its own (polling, housekeeping);
``load``  from the load start to the end of the drain plus the statistics flush (the cost interval
          of harness/analysis/cost.py).

Written to ``<engine>/statements.json``; harness/analysis/statements.py turns it into per-second
and per-workflow figures. The probe's own database (``postgres``) and the floors' are left out there.
A PostgreSQL that is down at a snapshot (a restart fault) yields a snapshot with an ``error``; a
restart also empties the statistics (they live in shared memory), which the analysis reports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.results import write_json

STATEMENTS_FILE = "statements.json"
TIMEOUT_S = 5
SETTLE_S = 10.0  # PostgreSQL's PGSTAT_IDLE_INTERVAL: an idle backend's pending counters are flushed by then
COLUMNS = ("calls", "rows", "total_exec_time", "wal_records", "wal_fpi", "wal_bytes")
DB_COUNTERS = ("xact_commit", "xact_rollback")


class StatementProbe:
    """Resets and snapshots ``pg_stat_statements`` of one PostgreSQL (connected directly, never proxied)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.windows: dict[str, dict[str, Any]] = {}

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=TIMEOUT_S,
                               application_name="durabench-statements")

    def _next_xid(self, conn: Any) -> int:
        """The next transaction id (not consumed): its advance counts write transactions, cluster-wide, at once."""
        return int(conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()[0])

    def _databases(self, conn: Any) -> dict[str, dict[str, int]]:
        rows = conn.execute(f"SELECT datname, {', '.join(DB_COUNTERS)} FROM pg_stat_database "
                            "WHERE datname IS NOT NULL").fetchall()
        return {r[0]: dict(zip(DB_COUNTERS, map(int, r[1:]), strict=True)) for r in rows}

    def open(self, window: str) -> None:
        """Start a window: reset the statement statistics, note the transaction counters."""
        import psycopg

        entry: dict[str, Any] = {"start_ns": time.time_ns()}
        try:
            with self._connect() as conn:
                conn.execute("SELECT pg_stat_statements_reset()")
                entry["start_databases"] = self._databases(conn)
                entry["start_xid"] = self._next_xid(conn)
        except (psycopg.Error, OSError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        self.windows[window] = entry

    def close(self, window: str) -> None:
        """End a window: snapshot every statement and the transaction counters."""
        import psycopg

        entry = self.windows.setdefault(window, {})
        entry["end_ns"] = time.time_ns()
        cols = ", ".join(f"s.{c}" for c in COLUMNS)
        try:
            with self._connect() as conn:
                rows = conn.execute(
                    f"SELECT d.datname, s.queryid, s.toplevel, s.query, {cols} FROM pg_stat_statements s "
                    "JOIN pg_database d ON d.oid = s.dbid").fetchall()
                entry["end_databases"] = self._databases(conn)
                entry["end_xid"] = self._next_xid(conn)
                entry["stats_reset"] = str(conn.execute(
                    "SELECT stats_reset FROM pg_stat_statements_info").fetchone()[0])
        except (psycopg.Error, OSError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            return
        entry["statements"] = [
            {"db": r[0], "queryid": r[1], "toplevel": r[2], "query": r[3],
             **{c: (float(v) if c == "total_exec_time" else int(v)) for c, v in zip(COLUMNS, r[4:], strict=True)}}
            for r in rows
        ]

    def save(self, out_dir: Path) -> Path:
        path = out_dir / STATEMENTS_FILE
        write_json(path, {"columns": {"total_exec_time": "ms"}, "windows": self.windows})
        return path


def probe_for(services: Any) -> StatementProbe | None:
    """The statement probe of a run's servers (None without a PostgreSQL the harness started)."""
    svc = services.services.get("postgres")
    if svc is None or getattr(svc, "external", False):  # a user's server: its extensions are not ours to add
        return None
    return StatementProbe(svc.url)
