"""The report section "What each engine does in PostgreSQL" (from the ``statements`` summary field).

A pure function of the summary (harness/analysis/statements.py defines every figure): per engine,
transactions per workflow by database, statements and WAL bytes per workflow and per step by
category, each split into the per-workflow part and the per-second part measured while idle; the
heaviest statements; and the fairness notes a Temporal maintainer would ask for.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.cost import fmt_value as _f
from harness.analysis.statements import CATEGORIES

TOP = 8
FAIRNESS = (
    "Temporal's visibility store is often not PostgreSQL in production: Temporal's docs recommend Elasticsearch "
    "(or OpenSearch) for advanced visibility at scale (docs.temporal.io, 'Visibility' of the self-hosted guide). "
    "Here visibility is the `temporal_visibility` database of the same PostgreSQL (the SQL advanced "
    "visibility of Temporal >= 1.20); its transactions, statements and WAL are shown apart so that a reader "
    "can subtract them.",
    "One Temporal server process runs all four services (frontend, history, matching, worker); production "
    "deployments run them as separate processes, usually several of each (Temporal's Helm chart). In-process "
    "calls between services are cheaper than the network hops of a cluster; the store work is the same.",
    "The history-shard count is fixed when the database is created and is recorded with the server settings; "
    "Temporal's dev config for PostgreSQL uses 4, its Helm chart 512.",
    "PostgreSQL 18 is outside Temporal's tested PostgreSQL versions (13-16).",
    "DBOS keeps its state in the application's database; its queue polling (per worker, `polling_interval_s`) is "
    "a per-second cost, measured while idle and subtracted from the per-workflow part like Temporal's polling "
    "and housekeeping.",
)


def _pair(entry: dict[str, Any] | None, key: str = "per_workflow", digits: int = 1) -> str:
    """``per-workflow part (+ per-second part/s)``."""
    if not entry:
        return "-"
    per_s = entry.get("per_s")
    tail = f" (+{_f(per_s, digits)}/s)" if per_s is not None else ""
    return f"{_f(entry.get(key), digits)}{tail}"


def section(summary: dict[str, Any]) -> list[str]:
    engines = {n: e["statements"] for n, e in summary["engines"].items()
               if isinstance(e.get("statements"), dict) and "by_category" in e["statements"]}
    if not engines:
        return []
    lines = [
        "## What each engine does in PostgreSQL",
        "",
        "From `pg_stat_statements` and `pg_stat_database` on the run's PostgreSQL (harness/analysis/statements.py). "
        "Each figure is split into a **per-second part** (measured while the workers were up and idle before the "
        "load: polling, housekeeping; shown as `+N/s`) and a **per-workflow part** (the load window's total minus "
        "the per-second part times the window's seconds, divided by the completed workflows). Compare engines on "
        "the per-workflow part; at a lower rate the per-second part weighs more per workflow. Transactions are "
        "counted per database (PostgreSQL does not attribute them to statements); statements and WAL per category. "
        "A single-statement transaction is one statement outside BEGIN ... COMMIT, or an empty statement such as "
        "SQLAlchemy's connection pre-ping `;` (DBOS-Python's default `pool_pre_ping`), which PostgreSQL counts "
        "as a transaction and pg_stat_statements does not record.",
        "",
        "| engine | transactions / wf, main | of which opened by BEGIN / single-statement | "
        "transactions / wf, visibility | write transactions / wf (xids) | statements / wf | WAL bytes / wf | "
        "WAL bytes / step | visibility share of WAL | window s (idle s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, st in engines.items():
        calls = sum((st["by_category"][c]["calls"]["per_workflow"] or 0.0) for c in CATEGORIES)
        calls_s = sum((st["by_category"][c]["calls"]["per_s"] or 0.0) for c in CATEGORIES)
        wal = sum((st["by_category"][c]["wal_bytes"]["per_workflow"] or 0.0) for c in CATEGORIES)
        wal_s = sum((st["by_category"][c]["wal_bytes"]["per_s"] or 0.0) for c in CATEGORIES)
        wal_step = sum((st["by_category"][c]["wal_bytes"]["per_step"] or 0.0) for c in CATEGORIES)
        tx = st.get("transactions", {})
        main = tx.get("main") or {}
        share = st.get("visibility_wal_share")
        fixed = st.get("fixed_subtracted")
        lines.append(
            f"| {name} | {_pair(tx.get('main'))} | {_pair(main.get('opened_by_begin'))} / "
            f"{_pair(main.get('single_statement'))} | {_pair(tx.get('visibility'))} | {_pair(tx.get('writes'))} | "
            f"{_f(calls)}"
            f"{f' (+{_f(calls_s)}/s)' if fixed else ''} | {_f(wal, 0)}{f' (+{_f(wal_s, 0)}/s)' if fixed else ''} | "
            f"{_f(wal_step, 0)} | {'-' if share is None else f'{100 * share:.0f}%'} | "
            f"{_f(st['load_s'])} ({_f(st.get('idle_s'))}) |")
    lines += ["", "Per step, by category (per-workflow part / steps; per-second part in brackets):", "",
              "| engine | category | statements / step | rows / step | WAL bytes / step | exec ms / step |",
              "|---|---|---|---|---|---|"]
    for name, st in engines.items():
        for cat in CATEGORIES:
            c = st["by_category"][cat]
            if not c["calls"]["load_total"]:
                continue
            lines.append(f"| {name} | {cat} | {_pair(c['calls'], 'per_step', 2)} | {_pair(c['rows'], 'per_step', 2)} | "
                         f"{_pair(c['wal_bytes'], 'per_step', 0)} | {_pair(c['total_exec_time'], 'per_step', 3)} |")
    partial = [f"{n}: {st['partial']}" for n, st in engines.items() if st.get("partial")]
    if partial:
        lines += ["", *(f"- {p}" for p in partial)]
    lines += ["", f"Heaviest statements per engine (by WAL, then calls; top {TOP}; every statement is in "
              "summary.json under `statements.statements`):", "",
              "| engine | db | category | kind | calls / wf | idle calls / s | rows / wf | WAL B / wf | ms / wf | "
              "statement |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, st in engines.items():
        for s in st["statements"][:TOP]:
            query = s["query"].replace("|", "\\|")
            lines.append(f"| {name} | {s['database']} | {s['category']} | {s['kind']} | "
                         f"{_f(s['calls_per_workflow'], 2)} | {_f(s['calls_per_s_idle'], 2)} | "
                         f"{_f(s['rows_per_workflow'], 2)} | {_f(s['wal_bytes_per_workflow'], 0)} | "
                         f"{_f(s['exec_ms_per_workflow'], 3)} | `{query}` |")
    lines += ["", "Fairness notes:", "", *(f"- {note}" for note in FAIRNESS), ""]
    return lines
