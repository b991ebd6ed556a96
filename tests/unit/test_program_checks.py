"""The program checks (harness/analysis/program_checks.py) on synthetic histories: one case per guarantee."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from engines.temporal.worker import call_error
from harness import program, results, scenario
from harness.analysis import gates, runs, summary
from harness.analysis.checker import VIOLATIONS, CheckResult, check, traces
from harness.analysis.program_checks import check_program
from harness.contract import EngineRecord
from harness.report import compare, markdown
from harness.report import html as htmlreport
from harness.results import write_json
from tests.unit import runbuilder
from tests.unit.history import MS, T0, History


def compiled(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return scenario.parse({"name": "t", "engines": ["memory"], "workload": {"program": stages}},
                          "t.yaml").workload.to_workload(1).program


def run(h: History, prog: list[dict[str, Any]], effects: list[dict[str, Any]] | None = None,
        windows: list[tuple[int, int]] | None = None, engine: dict[str, EngineRecord] | None = None,
        effects_error: str | None = None) -> CheckResult:
    trs = traces(h.sorted())
    n = sum(1 for _ in _walk(prog))
    result = check(trs, n, engine or {}, prog)
    check_program(result, trs, prog, engine or {}, effects, windows, effects_error)
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


def test_effects_are_not_measured_when_the_table_dump_failed(tmp_path: Path) -> None:
    prog = compiled([{"kind": "effect"}])
    h = History()
    for wf in ("a", "b"):
        h.submit(wf, 0)
        h.step(wf, 0, 5, 10)
    dump = tmp_path / "effects.json"
    write_json(dump, {"error": "OperationalError: connection refused", "rows": []})  # what appdb.dump leaves
    rows, why = summary._effects(dump)
    assert rows is None and why == "the table dump failed: OperationalError: connection refused"
    assert summary._effects(tmp_path / "absent.json") == (None, "absent.json was not written")
    result = run(h, prog, effects=rows, effects_error=why)
    assert result.ids["effects_missing"] == [] and result.ids["effects_duplicated"] == []  # no evidence, no claim
    effects = result.figures["effects"]
    assert (effects["measured"], effects["table_read"], effects["rows"]) == (False, False, None)
    assert effects["not_measured"] == why
    # no violation counted, yet no claim of exactly-once effects without the count: unverified, not correct
    assert not result.violations_found and not result.correct and result.not_measured == {"effects": why}
    assert (result.verdict(), result.verdict(interrupted=True)) == ("unverified", "interrupted")
    prog_summary = summary.program_summary(result)
    assert prog_summary["counts"]["effects_missing"] is None and prog_summary["counts"]["effects_duplicated"] is None
    engine = {"status": "ok", "program": prog_summary}
    section = "\n".join(markdown.program_section({"program": [{"kind": "effect"}]}, {"engines": {"dbos": engine}}))
    assert f"| dbos | not measured ({why}) |" in section
    verdict = gates._violations([{"verdict": "unverified", "not_measured": result.not_measured,
                                  "program": prog_summary}], "dbos")
    assert verdict.outcome == "fail" and verdict.message.startswith("not verified: the checker counted no anomaly")
    assert verdict.message.endswith(f"; effects not measured ({why})")
    write_json(tmp_path / "ok.json", {"error": None, "rows": [row("a", 0)]})
    assert summary._effects(tmp_path / "ok.json") == ([row("a", 0)], None)
    measured = run(h, prog, effects=[row("a", 0)])  # read: b is missing, and that is evidence
    assert measured.ids["effects_missing"] == ["b#0"] and measured.figures["effects"]["measured"] is True
    assert measured.not_measured == {} and measured.verdict() == "violations"
    assert run(h, prog, effects=[row("a", 0), row("b", 0)]).verdict() == "correct"


def test_a_run_whose_effects_table_was_not_read_is_reported_unverified_never_correct(tmp_path: Path) -> None:
    """From the files of a run to what ls, the report, the headline and compare print: an effect program
    whose run has no effects.json (the dump never written) is unverified everywhere."""
    sc = scenario.parse({"name": "t", "engines": ["alpha"], "workload": {"program": [{"kind": "effect"}]},
                         "load": {"rate": 10, "warmup": "0s", "duration": "2s"}}, "t.yaml")
    run_dir = tmp_path / "20260101T000000Z-t"
    man = runbuilder.manifest(run_dir.name, ["alpha"])
    man["scenario"] = json.loads(json.dumps(sc.model_dump(), default=str))
    h = History(duration_ms=2000)
    for i in range(20):
        h.submit(f"wf-{i}", i * 100)
        h.step(f"wf-{i}", 0, i * 100 + 2, i * 100 + 12)
    h.add("load_end", 2000)
    edir = results.engine_dir(run_dir, "alpha")
    (edir / "history").mkdir(parents=True)
    (edir / "history" / "all.1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in h.sorted()))
    (edir / "reconcile.json").write_text("{}\n")
    results.write_json(run_dir / "manifest.json", man)
    e = summary.analyze(run_dir)["engines"]["alpha"]
    assert (e["verdict"], e["lost"], e["completed"]) == ("unverified", 0, 20)
    assert e["not_measured"] == {"effects": "effects.json was not written"}
    label = "unverified (effects not measured)"
    assert markdown.headline_rows({"engines": {"alpha": e}})[1][1] == label
    assert runs.ls_rows(tmp_path)[1][-1] == f"alpha: {label}"
    loaded = runs.load_run(run_dir)
    assert htmlreport.headline_table([loaded])[0][1][1] == label
    line = htmlreport.verdict_lines([loaded])[0]
    assert "**correct**" not in line and "**not verified** (no anomaly counted, but effects not measured: " \
        "effects.json was not written; no exactly-once claim" in line
    assert compare.engine_table([compare.Side("A", str(run_dir), [loaded])], "alpha")[1] == ["verdict", label]
    cut = runs.load_run(run_dir)  # a repetition cut short beside it: still no anomaly, never "NOT correct"
    cut.engines["alpha"].summary = {**cut.engines["alpha"].summary, "verdict": "interrupted"}
    line = htmlreport.verdict_lines([loaded, cut])[0]
    assert "NOT correct" not in line and "**not verified** in 1 of 2 runs" in line and "1 interrupted" in line


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
    h.add("signal_timeout", 10005, src="worker:0", wf="lost", step=0, signal="approve", on_timeout="fail")
    result = run(h, prog)
    assert result.ids["signals_lost"] == ["lost#0"]  # the wait timed out after a successful send
    assert result.ids["signals_duplicated"] == ["twice#0"]  # the same payload twice is a replay, not twice
    resume = result.figures["signals"]["signal_to_resume_ms"]
    assert (resume["count"], resume["max"]) == (2, 45.0)  # first receipt - first successful send
    assert not result.correct


def test_a_signal_is_lost_only_once_the_wait_is_over() -> None:
    prog = compiled([{"kind": "wait_signal", "delay": "100ms", "timeout": "60s"}])
    h = History()
    for wf in ("pending", "done_by_engine", "failed_by_engine"):
        h.submit(wf, 0)
        h.add("signal_wait", 5, src="worker:0", wf=wf, step=0, signal="approve")
        h.add("signal_sent", 110, wf=wf, step=0, signal="approve", payload=f"{wf}#0#1", outcome="ok",
              sent_ns=T0 + 105 * MS)
    engine = {"pending": EngineRecord("pending"), "done_by_engine": EngineRecord("completed", T0 + 200 * MS),
              "failed_by_engine": EngineRecord("failed")}
    result = run(h, prog, engine=engine)
    assert result.ids["signals_undelivered"] == ["pending#0"]  # still waiting when the run ended: not lost
    assert result.ids["signals_lost"] == ["done_by_engine#0", "failed_by_engine#0"]
    assert result.counts["signals_undelivered"] == 1
    only_pending = run(h, prog, engine={"pending": EngineRecord("pending")})
    assert only_pending.ids["signals_lost"] == [] and only_pending.counts["signals_undelivered"] == 3
    assert "signals_undelivered" not in VIOLATIONS and "branch_records_repeated" not in VIOLATIONS  # informational


def test_branches_missing_or_duplicated() -> None:
    prog = compiled([{"kind": "parallel", "branches": 2, "program": [{"kind": "work", "duration": "10ms"}]},
                     {"kind": "work", "duration": "5ms"}])
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
        h.step(wf, 3, 21, 26)  # the stage after the join: the workflow moved past the branches
    h.step("dup", 1, 30, 38, worker=1, pid=101)  # finished branch 0's work ran again on another worker
    h.add("branch_end", 40, src="worker:1", wf="dup", step=0, branch=0)
    result = run(h, prog)
    assert result.ids["branches_missing"] == ["missing#0.1"]
    assert result.ids["branches_duplicated"] == ["dup#0.0"]
    assert result.ids["branch_records_repeated"] == ["dup#0.0"]
    assert result.figures["branches"]["branch_steps_reexecuted"] == 1  # dup's branch 0 step ran twice
    assert not result.correct


def test_a_repeated_branch_record_without_repeated_work_is_not_a_duplicate() -> None:
    """A Temporal workflow task whose worker died is run again by another worker (not a replay): its
    branch_end records are written twice though no branch step ran twice."""
    prog = compiled([{"kind": "parallel", "branches": 2,
                      "program": [{"kind": "work", "duration": "10ms"}, {"kind": "work", "duration": "10ms"}]}])
    h = History()
    h.submit("rerun_task", 0)
    h.submit("one_step_again", 0)
    for wf in ("rerun_task", "one_step_again"):
        for b, (first, second) in enumerate(((1, 2), (3, 4))):
            h.add("branch_start", 5, src="worker:0", wf=wf, step=0, branch=b)
            h.step(wf, first, 6, 16)
            h.step(wf, second, 17, 27)
            h.add("branch_end", 28, src="worker:0", wf=wf, step=0, branch=b)
        h.add("join", 30, src="worker:0", wf=wf, step=0)
    for b in (0, 1):  # the task that wrote them is executed again by worker:1
        h.add("branch_end", 130, src="worker:1", wf="rerun_task", step=0, branch=b)
    h.add("step_start", 200, src="worker:1", pid=101, wf="one_step_again", step=2)  # one step of branch 0
    h.add("step_end", 210, src="worker:1", pid=101, wf="one_step_again", step=2)  # again: not its whole work
    result = run(h, prog)
    assert result.ids["branches_duplicated"] == []
    assert result.ids["branch_records_repeated"] == ["rerun_task#0.0", "rerun_task#0.1"]
    assert result.ids["duplicated_steps"] == ["one_step_again#2"]  # counted once, as a step
    assert result.correct


def test_temporal_next_retry_delay_is_never_shorter_than_the_policy() -> None:
    retry = {"initial_backoff_s": 0.2, "multiplier": 2.0, "max_backoff_s": 2.0}
    assert program.next_retry_delay_s(retry, 1, None) is None  # no Retry-After: the policy applies unchanged
    assert program.next_retry_delay_s(retry, 1, 0.5) == 0.5  # Retry-After longer than the 0.2 s backoff
    assert program.next_retry_delay_s(retry, 3, 0.5) == 0.8  # the policy's 0.2 * 2^2 is longer
    assert program.next_retry_delay_s(retry, 8, 0.5) == 2.0  # capped at max_backoff
    limited = program.CallFailed(program.CallOutcome(429, retry_after_s=0.5))
    assert call_error(limited, retry, 1).next_retry_delay == timedelta(seconds=0.5)
    assert call_error(limited, retry, 3).next_retry_delay == timedelta(seconds=0.8)  # was 0.5: Retry-After alone
    error = call_error(program.CallFailed(program.CallOutcome(503)), retry, 3)
    assert error.next_retry_delay is None and error.type == "FlakyApi503" and not error.non_retryable


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


def test_an_item_in_flight_at_a_crash_that_runs_again_is_not_a_duplicated_branch() -> None:
    """A fan-out item killed mid-step and run again is at-least-once re-execution (duplicated_steps,
    branch_steps_reexecuted), not a finished branch done again."""
    prog = compiled([{"kind": "parallel", "branches": 2, "program": [{"kind": "work", "duration": "10ms"}]},
                     {"kind": "work", "duration": "5ms"}])
    h = History()
    h.submit("killed", 0)
    h.add("branch_start", 5, src="worker:0", wf="killed", step=0, branch=0)
    h.add("branch_start", 5, src="worker:0", wf="killed", step=0, branch=1)
    h.step("killed", 1, 6, None)  # worker:0 died inside branch 0's item
    h.step("killed", 2, 6, 16)
    h.step("killed", 1, 40, 50, worker=1, pid=101)  # recovered: the item runs again
    h.add("branch_end", 51, src="worker:1", wf="killed", step=0, branch=0)
    h.add("branch_end", 17, src="worker:0", wf="killed", step=0, branch=1)
    h.add("join", 52, src="worker:1", wf="killed", step=0)
    h.step("killed", 3, 53, 58, worker=1, pid=101)
    result = run(h, prog)
    assert result.ids["duplicated_steps"] == ["killed#1"]
    assert result.ids["branches_duplicated"] == [] and result.ids["replayed_completed_steps"] == []
    assert result.figures["branches"]["branch_steps_reexecuted"] == 1
    assert result.correct
