"""How reports name many faults and violations: a repeated fault once, many recoveries summarized, `ls`."""

from __future__ import annotations

from harness.report.html import fault_names
from harness.report.markdown import recovery_text


def _fault(fid: str, start_s: float, done_s: float | None) -> dict:
    return {"fault_id": fid, "kind": "reset-connections", "target": "link:store", "start_s": start_s,
            "all_done_s": done_s}


def test_a_repeated_fault_is_named_once_with_its_interval_and_count() -> None:
    rec = [_fault(f"f0.{i}", 2.0 + 0.7 * i, None) for i in range(42)]
    rec.append({"fault_id": "f1", "kind": "kill-worker", "target": "worker:0", "start_s": 40.0, "all_done_s": 1.0})
    assert fault_names(rec) == ["f0 reset-connections link:store 42 times, every 0.7s from 2.0s",
                                "f1 kill-worker worker:0 at 40.0s"]


def test_the_same_faults_of_several_runs_are_named_once() -> None:
    runs = [[_fault("f0", 8.0 + 0.003 * r, 1.0)] + [_fault(f"f1.{i}", 20.0 + i + 0.002 * r, None) for i in range(3)]
            for r in range(3)]
    assert fault_names([f for run in runs for f in run]) == [
        "f0 reset-connections link:store at 8.0s", "f1 reset-connections link:store 3 times, every 1.0s from 20.0s"]


def test_a_few_faults_are_listed_and_many_summarized() -> None:
    assert recovery_text([_fault("f0", 1, 2.5), _fault("f1", 5, None)]) == "2.5, -"
    assert recovery_text([]) == "-"
    many = [_fault(f"f0.{i}", i, float(i)) for i in range(1, 10)] + [_fault("f0.10", 10, None)]
    assert recovery_text(many) == "10 faults: median 5.0, max 9.0, 1 -"  # 1.0 ... 9.0
    assert recovery_text([_fault(f"f0.{i}", i, None) for i in range(8)]) == "8 faults, all -"


def test_ls_names_every_violation_an_engine_counted() -> None:
    from harness.analysis.runs import _verdict

    e = {"status": "ok", "verdict": "violations", "lost": 0, "unfinished": 7, "replayed_completed_steps": 2,
         "program": {"counts": {"effects_duplicated": 3, "timers_early": None}}}
    assert _verdict(e) == "violations (7 unfinished, 2 replayed completed steps, 3 effects duplicated)"
    assert _verdict({"status": "ok", "verdict": "correct"}) == "correct"
