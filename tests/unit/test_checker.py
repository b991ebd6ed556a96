from __future__ import annotations

from harness.analysis.checker import check, traces
from harness.contract import EngineRecord
from tests.unit.history import MS, T0, History


def run(h: History, steps: int = 2, engine: dict[str, EngineRecord] | None = None):  # type: ignore[no-untyped-def]
    return check(traces(h.sorted()), steps, engine or {})


def test_clean_history_is_correct() -> None:
    h = History()
    for i in range(5):
        h.workflow(f"w{i}", i * 100)
    result = run(h)
    assert result.correct
    assert result.counts["submitted"] == result.counts["completed"] == 5
    assert result.counts["lost"] == result.counts["duplicated_steps"] == 0


def test_lost_and_missing_steps_are_counted_with_ids() -> None:
    h = History()
    h.workflow("ok", 0)
    h.submit("lost", 10)
    h.step("lost", 0, 12, 20)
    h.step("lost", 1, 21, None)  # killed mid-step, never re-ran
    result = run(h)
    assert not result.correct
    assert result.ids["lost"] == ["lost"]
    assert result.ids["missing_steps"] == ["lost#1"]


def test_unexpected_workflow() -> None:
    h = History()
    h.step("ghost", 0, 5, 6)
    result = run(h)
    assert result.ids["unexpected"] == ["ghost"]
    assert not result.correct


def test_in_flight_rerun_is_duplicated_not_replayed() -> None:
    h = History()
    h.submit("w", 0)
    h.step("w", 0, 2, None, pid=100)  # worker killed during step 0
    h.step("w", 0, 500, 510, pid=200)  # re-run after restart
    h.step("w", 1, 511, 520, pid=200)
    result = run(h)
    assert result.ids["duplicated_steps"] == ["w#0"]
    assert result.counts["replayed_completed_steps"] == 0
    assert result.counts["extra_step_executions"] == 1
    assert result.correct


def test_completed_step_rerun_after_next_step_started_is_replayed() -> None:
    h = History()
    h.submit("w", 0)
    h.step("w", 0, 2, 10, pid=100)
    h.step("w", 1, 11, None, pid=100)  # crash during step 1
    h.step("w", 0, 500, 510, pid=200)  # step 0 ran again: its checkpoint was lost
    h.step("w", 1, 511, 520, pid=200)
    result = run(h)
    assert result.ids["replayed_completed_steps"] == ["w#0"]
    assert sorted(result.ids["duplicated_steps"]) == ["w#0", "w#1"]
    assert not result.correct


def test_step_ended_but_not_checkpointed_is_only_duplicated() -> None:
    h = History()
    h.submit("w", 0)
    h.step("w", 0, 2, 10, pid=100)  # ended, crash before the engine recorded it; next step never started
    h.step("w", 0, 500, 510, pid=200)
    h.step("w", 1, 511, 520, pid=200)
    result = run(h)
    assert result.counts["replayed_completed_steps"] == 0
    assert result.ids["duplicated_steps"] == ["w#0"]


def test_last_step_replayed_after_engine_completion() -> None:
    h = History()
    h.workflow("w", 0)
    h.step("w", 1, 900, 910, pid=300)
    done = EngineRecord("completed", T0 + 100 * MS)
    assert run(h, engine={"w": done}).ids["replayed_completed_steps"] == ["w#1"]
    assert run(h, engine={"w": EngineRecord("pending")}).counts["replayed_completed_steps"] == 0


def test_unknown_submit_resolution() -> None:
    h = History()
    h.submit("ran", 0, outcome="unknown")
    h.step("ran", 0, 2, 3)
    h.step("ran", 1, 4, 5)
    h.submit("engine-knows", 10, outcome="unknown")
    h.submit("nobody-knows", 20, outcome="unknown")
    h.submit("refused", 30, outcome="fail")
    result = run(h, engine={"engine-knows": EngineRecord("pending"), "nobody-knows": EngineRecord("not_found")})
    assert result.ids["resolved_unknown"] == ["engine-knows", "ran"]
    assert result.ids["unknown"] == ["nobody-knows"]
    assert result.ids["failed"] == ["refused"]
    assert result.ids["unfinished"] == ["engine-knows"]  # accepted by the engine, not run yet: it still holds it
    assert result.ids["lost"] == []
    assert result.ids["completed"] == ["ran"]


def test_unfinished_is_what_the_engine_still_holds_lost_is_the_rest() -> None:
    """A workflow accepted and not completed when the run ends is a loss only when the engine does not
    hold it: a pending record (a backlog, a retry waiting on a long timeout) is unfinished, unless the
    engine says nothing is left that would run it (``queued: False``)."""
    h = History()
    for i, wf in enumerate(("held", "no-message", "failed", "forgotten", "no-record")):
        h.submit(wf, 10 * i)
        h.step(wf, 0, 10 * i + 1, 10 * i + 2)
    engine = {"held": EngineRecord("pending", None, {"queued": True}),
              "no-message": EngineRecord("pending", None, {"step_states": ["SUCCESS"], "queued": False}),
              "failed": EngineRecord("failed"), "forgotten": EngineRecord("not_found")}
    result = run(h, engine=engine)
    assert result.ids["unfinished"] == ["held"]
    assert result.ids["lost"] == ["failed", "forgotten", "no-message", "no-record"]
    assert not result.correct  # work not done within the run is not a correct run either
