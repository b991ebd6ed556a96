"""What each engine does in the database, statement by statement (``pg_stat_statements``).

A pure function of ``<engine>/statements.json`` (harness/run/pgstatements.py): two windows, ``idle``
(workers up, nothing submitted) and ``load`` (load start to the end of the drain).

**Split of every figure**: the idle window gives a rate per second (polling, housekeeping); the
per-workflow part is ``(load total - idle rate x load seconds) / completed workflows`` and the
per-step part that divided by the steps. Engines are compared on the per-workflow part, the
per-second part shown beside it. Without an idle window the per-workflow part is the plain
``load total / completed`` (``fixed_subtracted`` false).

**Databases**: ``main`` is every database of the engine except Temporal's visibility database
(``temporal_visibility``), which is ``visibility``. The probe's (``postgres``) and the floors'
(``durabench_floors``) databases are left out.

**Write transactions** (``transactions.writes``): the advance of the next transaction id over the
window: every transaction that wrote, in any database (the probe and the floors write nothing in
the windows), counted without the statistics' reporting delay.

**Transactions** come from ``pg_stat_database`` (``xact_commit`` + ``xact_rollback``) per database:
PostgreSQL does not attribute transactions to statements, so transactions are split by database
(main / visibility), statements and WAL by category. Each database's transactions are further split
into ``opened_by_begin`` (the calls of ``BEGIN`` / ``START TRANSACTION``, recorded because
``pg_stat_statements.track_utility`` is on) and ``single_statement``: the rest, each one statement
outside an explicit transaction, or an empty statement such as SQLAlchemy's connection pre-ping
``;``, which PostgreSQL counts as a transaction and ``pg_stat_statements`` does not record.

**Categories** (:func:`classify`, by the database and the tables a statement names):

``visibility``        any statement in the visibility database, or on ``executions_visibility``
``queue and polling`` task and queue tables: Temporal's ``*tasks*`` tables (transfer, timer,
                      visibility, replication, matching ``tasks``, ``task_queues``), ``queue*``,
                      ``shards`` updates (shard ownership); DBOS's queue reads and claims of
                      ``workflow_status`` (``queue_name`` / ``SKIP LOCKED``), ``notifications``,
                      ``workflow_queue``
``checkpoints``       workflow state: Temporal's ``history_node``, ``history_tree``,
                      ``executions``, ``current_executions``, ``*_info_maps``, ``signals_requested_sets``,
                      ``buffered_events``, the shard fence read (``shards`` ``SELECT``); DBOS's
                      ``operation_outputs``, ``workflow_status``, ``workflow_inputs``/``workflow_input``,
                      ``workflow_output``, ``transaction_outputs``, ``workflow_events``, ``streams``
``other``             the rest: transaction control (``BEGIN``, ``COMMIT``), session ``SET``, metadata
                      reads (namespaces, cluster metadata and membership), catalog queries

A PostgreSQL restart during a window empties its statistics (shared memory): the window is then
marked ``partial`` with the reset time, and covers only what ran after the restart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

STATEMENTS_FILE = "statements.json"
EXCLUDED_DBS = ("template0", "template1", "postgres", "durabench_floors")
VISIBILITY_DBS = ("temporal_visibility",)
CATEGORIES = ("checkpoints", "queue and polling", "visibility", "other")
FIGURES = ("calls", "rows", "wal_bytes", "wal_records", "wal_fpi", "total_exec_time")
TOP_STATEMENTS = 15
QUERY_CHARS = 160

_TABLE = re.compile(r'\b(?:from|into|update|join|table)\s+(?:only\s+)?(?:"?\w+"?\.)?"?([a-z_][a-z0-9_]*)"?')
_CONTROL = re.compile(r"^\s*(begin|commit|rollback|start transaction|end|savepoint|release|set|show|reset|"
                      r"deallocate|discard|select\s+\$1\s*$|select\s+1\s*$)\b")
_CHECKPOINT_TABLES = {
    "history_node", "history_tree", "executions", "current_executions", "activity_info_maps",
    "timer_info_maps", "child_execution_info_maps", "request_cancel_info_maps", "signal_info_maps",
    "signals_requested_sets", "buffered_events", "chasm_node_maps",
    "operation_outputs", "workflow_status", "workflow_inputs", "workflow_input", "workflow_output",
    "transaction_outputs", "workflow_events", "workflow_events_history", "streams",
}
_QUEUE_TABLES = {"tasks", "tasks_v2", "task_queues", "task_queues_v2", "task_queue_user_data", "queue",
                 "queue_messages", "queue_metadata", "queue_v2", "queue_v2_metadata", "notifications",
                 "workflow_queue", "build_id_to_task_queue"}


def tables(query: str) -> list[str]:
    """The table names a (normalized) statement refers to, in order."""
    return _TABLE.findall(query.lower())


def classify(db: str, query: str) -> str:
    """The category of one statement (see the module docstring); the first rule that matches wins."""
    q = query.lower()
    names = tables(q)
    rules = (
        ("visibility", db in VISIBILITY_DBS or "executions_visibility" in names),
        ("other", bool(_CONTROL.match(q))),
        ("queue and polling", any(n in _QUEUE_TABLES or n.endswith("_tasks") for n in names)),
        # DBOS: queue reads and dequeue claims on workflow_status
        ("queue and polling", "workflow_status" in names and ("queue_name" in q or "skip locked" in q)),
        # Temporal: shard ownership updates are housekeeping; the shard read in a write is its fence
        ("queue and polling", "shards" in names and q.lstrip().startswith("update")),
        ("checkpoints", "shards" in names or any(n in _CHECKPOINT_TABLES for n in names)),
    )
    return next((category for category, matches in rules if matches), "other")


def kind(query: str) -> str:
    """The statement's verb and first table, e.g. ``INSERT history_node``; transaction control by its verb."""
    q = query.strip()
    verb = q.split(None, 1)[0].upper() if q else "?"
    names = tables(q)
    return f"{verb} {names[0]}" if names else verb


def _window(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if not raw or "statements" not in raw or "start_ns" not in raw or "end_ns" not in raw:
        return None
    seconds = (raw["end_ns"] - raw["start_ns"]) / 1e9
    xacts: dict[str, int] = {}
    start, end = raw.get("start_databases") or {}, raw.get("end_databases") or {}
    for db, counters in end.items():
        if db in EXCLUDED_DBS:
            continue
        before = start.get(db, {})
        total = sum(int(counters.get(k, 0)) for k in ("xact_commit", "xact_rollback"))
        base = sum(int(before.get(k, 0)) for k in ("xact_commit", "xact_rollback"))
        xacts[db] = total - base if total >= base else total  # counters reset by a restart: from zero
    rows = [r for r in raw["statements"] if r["db"] not in EXCLUDED_DBS]
    reset = raw.get("stats_reset")
    xids = raw["end_xid"] - raw["start_xid"] if "start_xid" in raw and "end_xid" in raw else None
    return {"seconds": seconds, "statements": rows, "xacts": xacts, "stats_reset": reset, "xids": xids}


def _role(db: str) -> str:
    return "visibility" if db in VISIBILITY_DBS else "main"


_BEGIN = re.compile(r"^\s*(begin|start\s+transaction)\b")


def _begins(rows: list[dict[str, Any]], role: str) -> float:
    """Transactions opened by an explicit BEGIN / START TRANSACTION in the databases of ``role``."""
    return float(sum(r["calls"] for r in rows if _role(r["db"]) == role and _BEGIN.match(r["query"].lower())))


def _sum(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {f: float(sum(r.get(f, 0) for r in rows)) for f in FIGURES}


def _split(load_total: float, idle_total: float | None, idle_s: float | None, load_s: float,
           completed: int) -> dict[str, float | None]:
    """per_s (idle rate), per_workflow (load minus the idle rate over the load's seconds)."""
    per_s = idle_total / idle_s if idle_total is not None and idle_s else None
    variable = load_total - (per_s or 0.0) * load_s
    return {"per_s": None if per_s is None else round(per_s, 4),
            "per_workflow": round(variable / completed, 4) if completed else None,
            "load_total": round(load_total, 3)}


def analyze(edir: Path, completed: int, steps: int) -> dict[str, Any] | None:
    """The ``statements`` summary field of one engine, or None when the run has no statements.json."""
    path = edir / STATEMENTS_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())["windows"]
    load = _window(raw.get("load"))
    if load is None:
        return {"error": (raw.get("load") or {}).get("error", "no load window")}
    idle = _window(raw.get("idle"))
    idle_s = idle["seconds"] if idle else None
    load_s = load["seconds"]
    steps_total = completed * steps

    def split(load_v: float, idle_v: float | None) -> dict[str, float | None]:
        out = _split(load_v, idle_v, idle_s, load_s, completed)
        out["per_step"] = round(out["per_workflow"] / steps, 4) if out["per_workflow"] is not None and steps else None
        return out

    # transactions by database role; those a BEGIN opened, and the rest (one statement each, or an
    # empty statement such as a connection pool's pre-ping ";", which pg_stat_statements does not record)
    xacts: dict[str, Any] = {}
    for role in ("main", "visibility"):
        lv = sum(v for db, v in load["xacts"].items() if _role(db) == role)
        iv = sum(v for db, v in idle["xacts"].items() if _role(db) == role) if idle else None
        if lv or iv:
            xacts[role] = split(float(lv), None if iv is None else float(iv))
            lb = _begins(load["statements"], role)
            ib = _begins(idle["statements"], role) if idle else None
            xacts[role]["opened_by_begin"] = split(lb, ib)
            xacts[role]["single_statement"] = split(lv - lb, None if iv is None or ib is None else iv - ib)
    if load["xids"] is not None:  # write transactions: xids consumed, cluster-wide (all databases)
        xacts["writes"] = split(float(load["xids"]), None if not idle or idle["xids"] is None else float(idle["xids"]))
    # figures by category and by database role
    by_cat: dict[str, Any] = {}
    by_role: dict[str, Any] = {}
    for cat in CATEGORIES:
        lrows = [r for r in load["statements"] if classify(r["db"], r["query"]) == cat]
        irows = [r for r in idle["statements"] if classify(r["db"], r["query"]) == cat] if idle else None
        ls, isum = _sum(lrows), _sum(irows) if irows is not None else None
        by_cat[cat] = {f: split(ls[f], None if isum is None else isum[f]) for f in FIGURES}
    for role in ("main", "visibility"):
        lrows = [r for r in load["statements"] if _role(r["db"]) == role]
        if not lrows:
            continue
        irows = [r for r in idle["statements"] if _role(r["db"]) == role] if idle else None
        ls, isum = _sum(lrows), _sum(irows) if irows is not None else None
        by_role[role] = {f: split(ls[f], None if isum is None else isum[f]) for f in FIGURES}
    # the statements themselves (load window), heaviest first by WAL then calls
    idle_by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for r in idle["statements"] if idle else []:
        idle_by_key[(r["db"], r["query"])] = r
    listed = []

    def idle_calls(i: dict[str, Any] | None) -> float | None:
        """A statement's calls in the idle window (0 when it did not run there; None without a window)."""
        if idle is None:
            return None
        return float(i["calls"]) if i else 0.0

    for r in load["statements"]:
        i = idle_by_key.get((r["db"], r["query"]))
        listed.append({
            "db": r["db"], "database": _role(r["db"]), "category": classify(r["db"], r["query"]),
            "kind": kind(r["query"]), "query": " ".join(r["query"].split())[:QUERY_CHARS],
            "calls_per_workflow": split(float(r["calls"]), idle_calls(i))["per_workflow"],
            "calls_per_s_idle": round(i["calls"] / idle_s, 3) if i and idle_s else (0.0 if idle else None),
            "rows_per_workflow": round(r["rows"] / completed, 3) if completed else None,
            "wal_bytes_per_workflow": round(r["wal_bytes"] / completed, 1) if completed else None,
            "exec_ms_per_workflow": round(r["total_exec_time"] / completed, 4) if completed else None,
            "calls": r["calls"], "rows": r["rows"], "wal_bytes": r["wal_bytes"],
            "total_exec_ms": round(r["total_exec_time"], 3),
        })
    listed.sort(key=lambda s: (-(s["wal_bytes"]), -(s["calls"])))
    total_wal = sum(by_cat[c]["wal_bytes"]["load_total"] or 0 for c in CATEGORIES)
    vis_wal = by_cat["visibility"]["wal_bytes"]["load_total"] or 0
    return {
        "idle_s": None if idle_s is None else round(idle_s, 3),
        "load_s": round(load_s, 3),
        "workflows": completed,
        "steps": steps_total,
        "fixed_subtracted": idle is not None,
        "partial": _partial(raw, load),
        "transactions": xacts,
        "by_category": by_cat,
        "by_database": by_role,
        "visibility_wal_share": round(vis_wal / total_wal, 4) if total_wal else None,
        "statements": listed,
        "distinct_statements": len(listed),
    }


def _partial(raw: dict[str, Any], load: dict[str, Any]) -> str | None:
    """Why the load window's statistics are incomplete (a PostgreSQL restart emptied them), or None."""
    reset = load.get("stats_reset")
    start_ns = (raw.get("load") or {}).get("start_ns")
    if not reset or start_ns is None:
        return None
    from datetime import datetime

    try:
        reset_ns = int(datetime.fromisoformat(reset).timestamp() * 1e9)
    except ValueError:
        return None
    if reset_ns > start_ns + 1_000_000_000:  # reset more than 1 s after the window opened: a restart
        return f"statistics restarted at {reset} (a PostgreSQL restart during the load): figures cover only after it"
    return None


def per_step_by_category(st: dict[str, Any], figure: str) -> dict[str, float | None]:
    """``figure`` per step of each category (the per-workflow part), for tables and charts."""
    return {c: st["by_category"][c][figure]["per_step"] for c in CATEGORIES}
