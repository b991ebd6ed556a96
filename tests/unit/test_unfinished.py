"""What an unfinished workflow was doing when the run ended (harness/analysis/unfinished.py): a queued backlog,
a stalled claim, one still in progress, and what the evidence cannot tell; the report's line says which."""

from __future__ import annotations

from pathlib import Path

from harness import ledger, results
from harness.analysis import unfinished
from harness.analysis.checker import check, traces
from harness.contract import EngineRecord
from harness.report.markdown import findings
from tests.unit.history import MS, T0, History

DATA = Path(__file__).parent / "data" / "dbos-stalled"
STEPS = 2


def _run(h: History, engine: dict[str, EngineRecord]) -> tuple[dict, dict]:
    """(unfinished evidence, lost evidence) of a history whose load ends at 5 s and whose drain ends at 35 s."""
    h.add("load_end", 5_000)
    h.add("drain_end", 35_000, complete=False, reason="quiet")
    events = h.sorted()
    trs = traces(events)
    ids = check(trs, STEPS, engine).ids
    return (unfinished.evidence(events, trs, engine, ids["unfinished"]),
            unfinished.evidence(events, trs, engine, ids["lost"], classify=False))


def test_a_queued_backlog_a_stalled_claim_and_one_in_progress_are_told_apart() -> None:
    h = History(duration_ms=5_000)
    h.workflow("done", 0)
    h.submit("waiting", 4_000)  # never taken off the queue
    h.submit("claimed", 1_000)  # taken by worker:1, which never ran a step of it
    h.submit("moving", 2_000)
    h.step("moving", 0, 2_010, 2_020)
    h.step("moving", 1, 20_000, None)  # started during the drain, still running at its end
    h.submit("retrying", 3_000)
    h.step("retrying", 0, 3_010, None)  # started before the load's end, nothing since
    engine = {
        "done": EngineRecord("completed", T0 + 30 * MS),
        "waiting": EngineRecord("pending", None, {"dbos_status": "ENQUEUED", "claimed": False}),
        "claimed": EngineRecord("pending", None, {"dbos_status": "PENDING", "executor_id": "run-w1", "claimed": True,
                                                  "dequeued_by": "worker:1", "dequeued_ns": T0 + 1_050 * MS}),
        "moving": EngineRecord("pending", None, {"status": "RUNNING", "claimed": True}),
        "retrying": EngineRecord("pending", None, {"status": "RUNNING"}),  # no claim said: the ledger's step says it
    }
    held, lost = _run(h, engine)
    assert {wf: e["state"] for wf, e in held.items()} == {
        "waiting": "queued", "claimed": "stalled", "moving": "in_progress", "retrying": "stalled"}
    assert lost == {}
    c = held["claimed"]
    assert c["claim"] == "claimed" and c["claim_source"] == "engine" and not c["step_started"]
    assert c["last_record"]["ev"] == "ack" and c["last_record"]["s"] == 1.001
    assert c["idle_s"] == 35 - 1.001 and c["records_in_drain"] == 0
    assert c["held_by"] == "worker:1 (run-w1)" and c["engine_status"] == "PENDING" and c["claimed_s"] == 1.05
    assert c["engine"]["detail"]["executor_id"] == "run-w1"
    assert held["retrying"]["claim_source"] == "ledger" and held["retrying"]["last_record"]["ev"] == "step_start"
    assert held["moving"]["records_in_drain"] == 1 and held["moving"]["idle_s"] == 15.0
    assert held["waiting"]["claim"] == "queued" and held["waiting"]["engine_status"] == "ENQUEUED"
    assert unfinished.by_state(held) == {"queued": 1, "stalled": 2, "in_progress": 1, "unknown": 0}


def test_what_the_record_cannot_say_is_unknown_not_guessed() -> None:
    h = History(duration_ms=5_000)
    h.submit("silent", 1_000)  # no step, and a record that does not say whether a worker took it
    h.submit("forgotten", 2_000)
    h.step("forgotten", 0, 2_010, 2_020)
    held, lost = _run(h, {"silent": EngineRecord("pending"), "forgotten": EngineRecord("not_found")})
    assert held["silent"]["state"] == "unknown" and held["silent"]["claim"] == "unknown"
    assert held["silent"]["held_by"] is None and held["silent"]["engine_status"] == "pending"
    assert list(lost) == ["forgotten"] and "state" not in lost["forgotten"]
    assert lost["forgotten"]["last_record"]["ev"] == "step_end" and lost["forgotten"]["engine_status"] == "not_found"
    group = unfinished.groups(held)[0]
    assert unfinished.describe(group) == ("1 unknown (pending, whether a worker claimed it the engine's record does "
                                          "not say, no step started, idle 34 s at the drain's end)")


def test_a_stalled_claim_needs_a_load_end_to_be_judged() -> None:
    h = History(duration_ms=5_000)
    h.submit("claimed", 1_000)
    events = h.sorted()  # no load_end, no drain_end: a run stopped during its load
    trs = traces(events)
    record = {"claimed": EngineRecord("pending", None, {"claimed": True})}
    held = unfinished.evidence(events, trs, record, ["claimed"])
    assert held["claimed"]["state"] == "unknown" and held["claimed"]["records_in_drain"] is None
    assert held["claimed"]["idle_s"] == 0.0  # the drain's end is the history's last record: the ack itself


def test_the_ci_run_classifies_both_dropped_claims_as_stalled() -> None:
    """The records of the CI run where worker:1 claimed two workflows 59 ms before a connection reset and never
    ran them (tests/unit/data/dbos-stalled/README.md)."""
    events = list(ledger.read_file(DATA / "history.jsonl"))
    engine = results.load_reconcile(DATA / "reconcile.json")
    trs = traces(events)
    ids = check(trs, 3, engine).ids
    assert ids["unfinished"] == ["dbos-c7d8a028-0000164", "dbos-c7d8a028-0000165"] and ids["lost"] == []
    held = unfinished.evidence(events, trs, engine, ids["unfinished"])
    assert unfinished.by_state(held) == {"queued": 0, "stalled": 2, "in_progress": 0, "unknown": 0}
    assert all(e["idle_s"] > 38 and not e["step_started"] for e in held.values())
    groups = unfinished.groups(held)
    assert [g["count"] for g in groups] == [2]
    e = {"unfinished": 2, "acknowledged": 4, "unfinished_groups": groups}
    line = " ".join(findings(e))
    assert ("2 stalled (claimed by worker:1 (durabench-c7d8a028-w1) at 10.9 s as PENDING, no step started, idle "
            "39 s at the drain's end)") in line


def test_the_report_line_for_a_backlog_and_for_a_summary_without_evidence() -> None:
    group = {"state": "queued", "count": 3, "claim": "queued", "held_by": None, "engine_status": "ENQUEUED",
             "step_started": False, "idle_s_min": 2.4, "idle_s_max": 9.6, "claimed_s_min": None,
             "claimed_s_max": None}
    text = " ".join(findings({"unfinished": 3, "acknowledged": 10, "unfinished_groups": [group]}))
    assert ("3 queued (waiting in the engine's queue as ENQUEUED, no step started, idle 2-10 s at the drain's "
            "end)") in text
    old = " ".join(findings({"unfinished": 3, "acknowledged": 10}))
    assert "this summary does not say which" in old


def test_a_stage_due_past_the_drain_is_in_progress_and_a_requeued_one_queued() -> None:
    h = History(duration_ms=5_000)
    h.submit("long", 1_000)
    h.add("step_start", 1_010, src="worker:0", pid=100, wf="long", step=0, duration_s=120.0)  # ends at 121 s
    h.submit("short", 1_000)
    h.add("step_start", 1_010, src="worker:0", pid=100, wf="short", step=0, duration_s=1.0)  # ended (no record)
    h.submit("sleeping", 1_000)
    h.step("sleeping", 0, 1_010, 1_020)
    h.add("timer_set", 1_030, src="worker:0", pid=100, wf="sleeping", step=1, due_ns=T0 + 60_000 * MS)
    h.submit("requeued", 1_000)
    h.step("requeued", 0, 1_010, None)  # its worker died; a recovery put it back in the queue
    h.submit("late-ack", 4_900, ack_ms=6_000)  # an ack written in the drain is not the workflow moving
    pending = {"status": "RUNNING", "claimed": True}
    engine = {"long": EngineRecord("pending", None, pending), "short": EngineRecord("pending", None, pending),
              "sleeping": EngineRecord("pending", None, pending),
              "requeued": EngineRecord("pending", None, {"dbos_status": "ENQUEUED", "claimed": False}),
              "late-ack": EngineRecord("pending", None, pending)}
    held, _ = _run(h, engine)
    assert {wf: e["state"] for wf, e in held.items()} == {
        "long": "in_progress", "short": "stalled", "sleeping": "in_progress", "requeued": "queued",
        "late-ack": "stalled"}
    assert held["long"]["open_past_drain"] and not held["short"]["open_past_drain"]
    assert held["late-ack"]["records_in_drain"] == 0 and held["late-ack"]["last_record"]["ev"] == "ack"
