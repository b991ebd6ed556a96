"""The program checks (harness/analysis/program_checks.py) on synthetic histories: one case per guarantee."""

from __future__ import annotations

from typing import Any

from harness import scenario
from harness.analysis.checker import CheckResult, check, traces
from harness.analysis.program_checks import check_program
from tests.unit.history import MS, T0, History


def compiled(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return scenario.parse({"name": "t", "engines": ["memory"], "workload": {"program": stages}},
                          "t.yaml").workload.to_workload().program


def run(h: History, prog: list[dict[str, Any]], effects: list[dict[str, Any]] | None = None,
        windows: list[tuple[int, int]] | None = None) -> CheckResult:
    trs = traces(h.sorted())
    n = sum(1 for _ in _walk(prog))
    result = check(trs, n, {}, prog)
    check_program(result, trs, prog, {}, effects, windows)
    return result


def _walk(prog: list[dict[str, Any]]) -> Any:
    for s in prog:
        yield s
        for b in s.get("branches", []):
            yield from _walk(b)


def row(wf: str, step: int) -> dict[str, Any]:
    return {"id": 1, "wf": wf, "step": step, "attempt": None, "worker": "worker:0", "idempotency_key": None,
            "applied_ns": T0}


def test_effects_duplicated_and_missing_are_counted_from_the_table() -> None:
    prog = compiled([{"kind": "effect"}])
    h = History()
    for wf in ("once", "twice", "never"):
        h.submit(wf, 0)
        h.step(wf, 0, 5, 10)
    result = run(h, prog, effects=[row("once", 0), row("twice", 0), row("twice", 0)])
    assert result.ids["effects_duplicated"] == ["twice#0"]
    assert result.ids["effects_missing"] == ["never#0"]
    assert result.figures["effects"]["extra_applications"] == 1
    assert not result.correct


def test_timer_fired_early_is_a_violation_and_lateness_a_distribution() -> None:
    prog = compiled([{"kind": "sleep", "duration": "1s"}])
    h = History()
    h.submit("late", 0)
    h.add("timer_set", 5, src="worker:0", wf="late", step=0, due_ns=T0 + 1005 * MS)
    h.add("timer_set", 3000, src="worker:1", wf="late", step=0, due_ns=T0 + 4000 * MS)  # re-run after a crash
    h.add("timer_fired", 1255, src="worker:1", wf="late", step=0)
    h.submit("early", 0)
    h.add("timer_set", 5, src="worker:0", wf="early", step=0, due_ns=T0 + 1005 * MS)
    h.add("timer_fired", 900, src="worker:0", wf="early", step=0)
    h.submit("ms", 0)  # a deadline stored in whole milliseconds (DBOS-Go): 0.6 ms early is its resolution
    h.add("timer_set", 5, src="worker:0", wf="ms", step=0, due_ns=T0 + 1005 * MS)
    h.add("timer_fired", 1004.4, src="worker:0", wf="ms", step=0)
    result = run(h, prog, windows=[(T0 + 500 * MS, T0 + 600 * MS)])
    assert result.ids["timers_early"] == ["early#0"]
    timers = result.figures["timers"]
    assert sorted(timers["lateness_values_ms"]) == [-105.0, -0.6, 250.0]  # the earliest due counts
    assert timers["lateness_across_faults_ms"]["count"] == 3  # all spanned the fault window
    assert not result.correct


def test_signals_lost_and_delivered_twice() -> None:
    prog = compiled([{"kind": "wait_signal", "delay": "100ms", "timeout": "10s"}])
    h = History()
    for wf in ("ok", "lost", "twice"):
        h.submit(wf, 0)
        h.add("signal_wait", 5, src="worker:0", wf=wf, step=0, signal="approve")
        h.add("signal_sent", 110, wf=wf, step=0, signal="approve", payload=f"{wf}#0#1", outcome="ok",
              sent_ns=T0 + 105 * MS)
    h.add("signal_received", 130, src="worker:0", wf="ok", step=0, signal="approve", payload="ok#0#1")
    h.add("signal_received", 130, src="worker:0", wf="ok", step=0, signal="approve", payload="ok#0#1")  # replay
    h.add("signal_sent", 200, wf="twice", step=0, signal="approve", payload="twice#0#2", outcome="ok",
          sent_ns=T0 + 195 * MS)
    h.add("signal_received", 150, src="worker:0", wf="twice", step=0, signal="approve", payload="twice#0#1")
    h.add("signal_received", 250, src="worker:1", wf="twice", step=0, signal="approve", payload="twice#0#2")
    result = run(h, prog)
    assert result.ids["signals_lost"] == ["lost#0"]
    assert result.ids["signals_duplicated"] == ["twice#0"]  # the same payload twice is a replay, not twice
    resume = result.figures["signals"]["signal_to_resume_ms"]
    assert (resume["count"], resume["max"]) == (2, 45.0)  # first receipt - first successful send
    assert not result.correct


def test_branches_missing_or_duplicated() -> None:
    prog = compiled([{"kind": "parallel", "branches": 2, "program": [{"kind": "work", "duration": "10ms"}]}])
    h = History()
    h.submit("good", 0)
    h.submit("missing", 0)
    h.submit("dup", 0)
    for wf in ("good", "missing", "dup"):
        for b, step in enumerate((1, 2)):
            h.add("branch_start", 5, src="worker:0", wf=wf, step=0, branch=b)
            h.step(wf, step, 6, 16)
            if not (wf == "missing" and b == 1):
                h.add("branch_end", 17, src="worker:0", wf=wf, step=0, branch=b)
        h.add("join", 20, src="worker:0", wf=wf, step=0)
    h.add("branch_end", 40, src="worker:1", wf="dup", step=0, branch=0)
    result = run(h, prog)
    assert result.ids["branches_missing"] == ["missing#0.1"]
    assert result.ids["branches_duplicated"] == ["dup#0.0"]
    assert not result.correct


def test_wasted_calls_and_retry_amplification_from_the_api_log() -> None:
    prog = compiled([{"kind": "call"}, {"kind": "work", "duration": "10ms"}])
    h = History()

    def api(wf: str, at: float, status: int | str, request: int) -> None:
        h.add("api_request", at, src="flaky-api", pid=9, wf=wf, step=0, attempt=None, worker="worker:0",
              status=status, recv_ns=T0 + int((at - 1) * MS), delivered=status == 200, request=request)

    h.submit("retried", 0)  # two failed attempts then success: engine retries, not duplicates
    for attempt, (at, status) in enumerate([(5, 503), (20, 429), (40, 200)], start=1):
        h.add("step_start", at - 2, src="worker:0", pid=100, wf="retried", step=0, attempt=attempt)
        api("retried", at, status, attempt)
        ev = "step_end" if status == 200 else "step_error"
        h.add(ev, at + 1, src="worker:0", pid=100, wf="retried", step=0, attempt=attempt)
    h.step("retried", 1, 50, 60)
    h.submit("crashed", 0)  # answered 200, the worker died before recording it: called again
    h.add("step_start", 3, src="worker:0", pid=100, wf="crashed", step=0)
    api("crashed", 5, 200, 10)
    h.add("step_start", 500, src="worker:0", pid=101, wf="crashed", step=0)
    api("crashed", 505, 200, 11)
    h.add("step_end", 506, src="worker:0", pid=101, wf="crashed", step=0)
    h.step("crashed", 1, 510, 520, pid=101)
    result = run(h, prog)
    assert result.ids["wasted_calls"] == ["crashed#0@11"]
    assert result.figures["calls"]["retry_amplification"] == 2.5  # 5 requests / 2 logical calls
    assert result.ids["duplicated_steps"] == ["crashed#0"]  # the retried call is not a duplicate
    assert result.figures["calls"]["statuses"] == {"200": 3, "429": 1, "503": 1}


def test_non_step_stages_end_the_workflow() -> None:
    prog = compiled([{"kind": "work", "duration": "10ms"}, {"kind": "sleep", "duration": "1s"}])
    h = History()
    h.submit("w", 0)
    h.step("w", 0, 2, 12)
    h.add("timer_set", 13, src="worker:0", wf="w", step=1, due_ns=T0 + 1013 * MS)
    h.add("timer_fired", 1020, src="worker:0", wf="w", step=1)
    result = run(h, prog)
    assert result.ids["completed"] == ["w"]
    assert result.counts["missing_steps"] == 0 and result.correct
