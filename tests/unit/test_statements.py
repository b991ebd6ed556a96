"""pg_stat_statements accounting (harness/analysis/statements.py) on synthetic snapshots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import statements
from harness.report import database

S = 1_000_000_000


def _row(db: str, query: str, calls: int, wal: int = 0, rows: int = 0, ms: float = 0.0) -> dict[str, Any]:
    return {"db": db, "queryid": hash(query), "toplevel": True, "query": query, "calls": calls, "rows": rows,
            "total_exec_time": ms, "wal_records": 0, "wal_fpi": 0, "wal_bytes": wal}


def _write(tmp: Path, load: dict[str, Any], idle: dict[str, Any] | None = None) -> Path:
    windows = {"load": load} | ({"idle": idle} if idle else {})
    (tmp / "statements.json").write_text(json.dumps({"windows": windows}))
    return tmp


POLL = "SELECT task_id, data FROM tasks WHERE range_hash = $1 AND task_queue_id = $2"
HIST = "INSERT INTO history_node (shard_id, tree_id) VALUES ($1, $2)"
VIS = "INSERT INTO executions_visibility (namespace_id, run_id) VALUES ($1, $2)"


@pytest.mark.parametrize(("db", "query", "category"), [
    ("temporal", HIST, "checkpoints"),
    ("temporal", "UPDATE executions SET db_record_version = $1 WHERE shard_id = $2", "checkpoints"),
    ("temporal", "SELECT range_id FROM shards WHERE shard_id = $1 FOR SHARE", "checkpoints"),
    ("temporal", "UPDATE shards SET range_id = $1 WHERE shard_id = $2", "queue and polling"),
    ("temporal", POLL, "queue and polling"),
    ("temporal", "INSERT INTO transfer_tasks (shard_id, task_id) VALUES ($1, $2)", "queue and polling"),
    ("temporal", "DELETE FROM history_immediate_tasks WHERE shard_id = $1", "queue and polling"),
    ("temporal_visibility", "SELECT count(*) FROM anything", "visibility"),
    ("temporal", VIS, "visibility"),
    ("temporal", "BEGIN", "other"),
    ("temporal", "commit", "other"),
    ("temporal", "SELECT * FROM cluster_membership WHERE role = $1", "other"),
    ("dbos_x", 'INSERT INTO "dbos"."operation_outputs" (workflow_uuid) VALUES ($1)', "checkpoints"),
    ("dbos_x", 'UPDATE dbos.workflow_status SET status = $1 WHERE workflow_uuid = $2', "checkpoints"),
    ("dbos_x", "SELECT workflow_uuid FROM dbos.workflow_status WHERE queue_name = $1 FOR UPDATE SKIP LOCKED",
     "queue and polling"),
])
def test_classify(db: str, query: str, category: str) -> None:
    assert statements.classify(db, query) == category


def test_kind_names_verb_and_first_table() -> None:
    assert statements.kind(HIST) == "INSERT history_node"
    assert statements.kind("BEGIN") == "BEGIN"
    assert statements.kind('SELECT a FROM "dbos"."workflow_status" w JOIN x ON true') == "SELECT workflow_status"


def test_per_second_part_is_subtracted_from_the_per_workflow_part(tmp_path: Path) -> None:
    # idle: 10 s, 20 polls/s, 10 main transactions/s; load: 5 s, 100 workflows of 2 steps
    idle = {"start_ns": 0, "end_ns": 10 * S, "statements": [_row("temporal", POLL, 200)],
            "start_databases": {"temporal": {"xact_commit": 1000, "xact_rollback": 0}},
            "end_databases": {"temporal": {"xact_commit": 1100, "xact_rollback": 0}}, "stats_reset": None,
            "start_xid": 1000, "end_xid": 1020}
    load = {"start_ns": 20 * S, "end_ns": 25 * S,
            "statements": [_row("temporal", POLL, 100 + 300), _row("temporal", HIST, 200, wal=200 * 500),
                           _row("temporal", "begin", 500),
                           _row("temporal_visibility", VIS, 100, wal=100 * 3000),
                           _row("postgres", "SELECT 1 FROM pg_stat_database", 50, wal=7)],
            "start_databases": {"temporal": {"xact_commit": 2000, "xact_rollback": 0},
                                "temporal_visibility": {"xact_commit": 10, "xact_rollback": 0},
                                "postgres": {"xact_commit": 5, "xact_rollback": 0}},
            "end_databases": {"temporal": {"xact_commit": 2000 + 50 + 700, "xact_rollback": 10},
                              "temporal_visibility": {"xact_commit": 110, "xact_rollback": 0},
                              "postgres": {"xact_commit": 999, "xact_rollback": 0}}, "stats_reset": None,
            "start_xid": 5000, "end_xid": 5410}
    st = statements.analyze(_write(tmp_path, load, idle), completed=100, steps=2)
    assert st is not None and st["fixed_subtracted"]
    polls = st["by_category"]["queue and polling"]["calls"]
    assert polls["per_s"] == 20.0
    assert polls["per_workflow"] == 3.0  # (400 - 20/s x 5 s) / 100
    tx = st["transactions"]
    assert tx["main"]["per_s"] == 10.0
    assert tx["main"]["per_workflow"] == 7.1  # (760 - 10/s x 5 s) / 100
    assert tx["main"]["per_step"] == 3.55
    assert tx["main"]["opened_by_begin"]["per_workflow"] == 5.0  # no BEGIN while idle
    assert tx["main"]["single_statement"]["per_workflow"] == 2.1  # (260 - 10/s x 5 s) / 100
    assert tx["visibility"]["per_workflow"] == 1.0 and tx["visibility"]["per_s"] == 0.0
    assert tx["writes"] == {"per_s": 2.0, "per_workflow": 4.0, "load_total": 410.0, "per_step": 2.0}
    assert st["by_category"]["checkpoints"]["wal_bytes"]["per_step"] == 500.0
    assert st["visibility_wal_share"] == pytest.approx(300_000 / 400_000)
    assert all(s["db"] != "postgres" for s in st["statements"])  # the probe's database is left out
    assert st["statements"][0]["kind"] == "INSERT executions_visibility"  # heaviest WAL first
    poll = next(s for s in st["statements"] if s["kind"] == "SELECT tasks")
    assert poll["calls_per_s_idle"] == 20.0 and poll["calls_per_workflow"] == 3.0
    text = "\n".join(database.section({"engines": {"temporal-pg": {"statements": st}}}))
    assert "7.1 (+10.0/s)" in text and "Elasticsearch" in text and "75%" in text


def test_without_idle_window_the_whole_load_counts(tmp_path: Path) -> None:
    load = {"start_ns": 0, "end_ns": 2 * S, "statements": [_row("app", POLL, 50)],
            "start_databases": {"app": {"xact_commit": 0, "xact_rollback": 0}},
            "end_databases": {"app": {"xact_commit": 40, "xact_rollback": 0}}, "stats_reset": None}
    st = statements.analyze(_write(tmp_path, load), completed=10, steps=1)
    assert st is not None and not st["fixed_subtracted"]
    assert st["by_category"]["queue and polling"]["calls"] == {"per_s": None, "per_workflow": 5.0,
                                                               "load_total": 50.0, "per_step": 5.0}
    assert st["transactions"]["main"]["per_workflow"] == 4.0


def test_a_restart_during_the_load_marks_the_window_partial(tmp_path: Path) -> None:
    load = {"start_ns": 1_700_000_000 * S, "end_ns": 1_700_000_060 * S, "statements": [],
            "start_databases": {}, "end_databases": {}, "stats_reset": "2023-11-14 22:13:40+00:00"}
    st = statements.analyze(_write(tmp_path, load), completed=1, steps=1)
    assert st is not None and st["partial"] and "restart" in st["partial"]


def test_missing_load_snapshot_is_an_error_entry(tmp_path: Path) -> None:
    st = statements.analyze(_write(tmp_path, {"start_ns": 0, "error": "OperationalError: down"}), 1, 1)
    assert st == {"error": "OperationalError: down"}
    assert statements.analyze(tmp_path / "nowhere", 1, 1) is None
