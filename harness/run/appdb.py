"""The application database of a run: where ``effect`` stages write, apart from every engine's tables.

A database ``durabench_app`` on the run's PostgreSQL, created empty for every engine run with the
one table of docs/engines.md ("The application database"); at the end of the engine run its rows
are copied to ``effects.json`` beside the history, so the checker counts effects from the table
itself and the analysis stays a function of files on disk.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from harness import program
from harness.results import EFFECTS_FILE, write_json

EFFECTS_TABLE = program.EFFECTS_TABLE
__all__ = ["EFFECTS_FILE", "create", "database_url", "dump"]
FIELDS = ("id", "wf", "step", "attempt", "worker", "idempotency_key", "applied_ns")


def database_url(postgres_url: str, database: str = program.APP_DATABASE) -> str:
    parts = urlsplit(postgres_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def create(endpoint_url: str, server_url: str) -> str:
    """Create the database and its table through ``server_url`` (the server itself); return its URL as
    workers reach it (``endpoint_url``: through the fault proxy when the scenario has one)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(program.APP_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(program.APP_DATABASE)))
    with psycopg.connect(database_url(server_url), autocommit=True) as conn:
        conn.execute(program.EFFECTS_DDL)
    return database_url(endpoint_url)


def dump(server_url: str, path: Path) -> None:
    """Copy every row of the effects table into ``path`` (JSON); an unreachable server leaves an error."""
    import psycopg

    try:
        with psycopg.connect(database_url(server_url), connect_timeout=10) as conn:
            rows = conn.execute(program.EFFECTS_DUMP).fetchall()
    except psycopg.Error as exc:
        write_json(path, {"error": f"{type(exc).__name__}: {exc}", "rows": []})
        return
    write_json(path, {"error": None, "rows": [dict(zip(FIELDS, row, strict=True)) for row in rows]})

