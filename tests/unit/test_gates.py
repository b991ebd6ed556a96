"""CI gates (harness/gates.py) and their JUnit XML (harness/junit.py): pure functions of summaries."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import gates
from harness.errors import UserError
from harness.report import junit
from harness.scenario import ScenarioError, SloSpec, parse


def engine(p99_ms: float = 100.0, p999_ms: float = 200.0, thr: float = 19.0, offered: float | None = 20.0,
           lost: int = 0, replayed: int = 0, dup: int = 0, recovery: list[dict[str, Any]] | None = None,
           verdict: str = "correct") -> dict[str, Any]:
    return {"status": "ok", "error": None, "verdict": verdict, "throughput_per_s": thr, "offered_rate_per_s": offered,
            "e2e_latency_ms": {"p99": p99_ms, "p99.9": p999_ms}, "lost": lost, "replayed_completed_steps": replayed,
            "duplicated_steps": dup, "unexpected": 0, "missing_steps": 0, "recovery": recovery or []}


def summary(**engines: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": 1, "engines": engines}


def slo(**blocks: Any) -> SloSpec:
    return parse({"name": "t", "engines": ["dbos", "celery"], "slo": blocks}, "t.yaml").slo


def by_gate(results: list[gates.GateResult]) -> dict[tuple[str, str], str]:
    return {(r.engine, r.gate): r.outcome for r in results}


def test_limits_met_pass_and_exceeded_fail() -> None:
    spec = slo(all={"max_e2e_p99": "150ms", "max_e2e_p99_9": "1s", "min_throughput_ratio": 0.9, "max_lost": 0})
    results = gates.evaluate([summary(dbos=engine(), celery=engine(p99_ms=400, thr=10, lost=3))], spec, ["slo"])
    outcome = by_gate(results)
    assert outcome[("dbos", "slo.max_e2e_p99")] == "pass"
    assert outcome[("dbos", "slo.min_throughput_ratio")] == "pass"
    assert outcome[("celery", "slo.max_e2e_p99")] == "fail"
    assert outcome[("celery", "slo.min_throughput_ratio")] == "fail"
    assert outcome[("celery", "slo.max_lost")] == "fail"
    assert outcome[("celery", "slo.max_e2e_p99_9")] == "pass"
    assert gates.exit_code(results) == gates.EXIT_GATE_FAILED
    failed = next(r for r in results if (r.engine, r.gate) == ("celery", "slo.max_e2e_p99"))
    assert "400 ms" in failed.message and "150 ms" in failed.message


def test_per_engine_limits_override_all() -> None:
    spec = slo(all={"max_e2e_p99": "150ms"}, engines={"celery": {"max_e2e_p99": "1s"}})
    results = gates.evaluate([summary(dbos=engine(p99_ms=400), celery=engine(p99_ms=400))], spec, ["slo"])
    assert by_gate(results)[("dbos", "slo.max_e2e_p99")] == "fail"
    assert by_gate(results)[("celery", "slo.max_e2e_p99")] == "pass"
    assert spec.limits_for("celery@variant").max_e2e_p99 == 1.0  # a sweep's result takes its engine's limits


def test_recovery_never_done_fails_and_no_fault_is_skipped() -> None:
    spec = slo(all={"max_recovery": "30s"})
    never = [{"all_done_s": None, "affected_unfinished": 2}]
    fine = [{"all_done_s": 3.0, "affected_unfinished": 0}, {"all_done_s": None, "affected": 0}]
    results = gates.evaluate([summary(dbos=engine(recovery=fine), celery=engine(recovery=never))], spec, ["slo"])
    assert by_gate(results)[("dbos", "slo.max_recovery")] == "pass"
    assert by_gate(results)[("celery", "slo.max_recovery")] == "fail"
    assert gates._recovery_s(engine(recovery=never)) == math.inf
    results = gates.evaluate([summary(dbos=engine())], spec, ["slo"])
    assert by_gate(results)[("dbos", "slo.max_recovery")] == "skipped"
    assert gates.exit_code(results) == gates.EXIT_PASS


def test_repetitions_median_for_figures_worst_for_counts() -> None:
    spec = slo(all={"max_e2e_p99": "150ms", "max_duplicated": 0})
    reps = [summary(dbos=engine(p99_ms=100)), summary(dbos=engine(p99_ms=500, dup=1)), summary(dbos=engine(p99_ms=120))]
    outcome = by_gate(gates.evaluate(reps, spec, ["slo"]))
    assert outcome[("dbos", "slo.max_e2e_p99")] == "pass"  # median 120 ms
    assert outcome[("dbos", "slo.max_duplicated")] == "fail"  # one repetition duplicated a step


def test_violations_gate_and_engine_that_did_not_run() -> None:
    bad = engine(verdict="violations", lost=2)
    broken = {"status": "error", "error": "ServiceError: postgres died"}
    results = gates.evaluate([summary(dbos=engine(), celery=bad, temporal=broken)], SloSpec(), ["violations"])
    outcome = by_gate(results)
    assert outcome[("dbos", "violations")] == "pass"
    assert outcome[("celery", "violations")] == "fail"
    assert outcome[("temporal", "ran")] == "error"
    assert ("temporal", "violations") not in outcome
    assert gates.exit_code(results) == gates.EXIT_ENGINE_FAILED
    assert "2 lost" in next(r.message for r in results if r.gate == "violations" and r.engine == "celery")


def test_no_gate_selected_judges_only_that_engines_ran() -> None:
    results = gates.evaluate([summary(dbos=engine(verdict="violations"))], slo(all={"max_lost": 0}), [])
    assert [(r.gate, r.outcome) for r in results] == [("ran", "pass")]
    assert gates.exit_code(results) == gates.EXIT_PASS


def test_closed_loop_throughput_ratio_is_skipped_but_missing_latency_fails() -> None:
    spec = slo(all={"min_throughput_ratio": 0.9, "max_e2e_p99": "1s"})
    e = engine(offered=None)
    e["e2e_latency_ms"] = {"p99": None}
    outcome = by_gate(gates.evaluate([summary(dbos=e)], spec, ["slo"]))
    assert outcome[("dbos", "slo.min_throughput_ratio")] == "skipped"
    assert outcome[("dbos", "slo.max_e2e_p99")] == "fail"


@pytest.mark.parametrize(("text", "message"), [("", "--fail-on is empty"), ("slo,bogus", "unknown gate 'bogus'"),
                                                (",", "--fail-on is empty")])
def test_fail_on_parsing(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        gates.parse_fail_on(text)
    assert gates.parse_fail_on("violations, slo,slo") == ["violations", "slo"]


def test_fail_on_slo_without_limits_is_refused() -> None:
    with pytest.raises(UserError, match="sets no limit"):
        gates.require_slo(SloSpec(), ["slo"], "t.yaml")
    gates.require_slo(SloSpec(), ["violations"], "t.yaml")


@pytest.mark.parametrize(("block", "message"), [
    ({"all": {"max_p99": "1s"}}, "slo.all.max_p99 is not a known field"),
    ({"everyone": {}}, "slo.everyone is not a known field"),
    ({"engines": {"temporal": {"max_lost": 0}}}, "slo.engines.temporal: expected one of the scenario's engines"),
    ({"all": {"max_lost": -1}}, "slo.all.max_lost"),
    ({"all": {"max_e2e_p99": "soon"}}, "expected a duration"),
])
def test_bad_slo_blocks_are_refused(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse({"name": "t", "engines": ["dbos"], "slo": block}, "t.yaml")


def test_junit_one_testcase_per_engine_and_gate(tmp_path: Path) -> None:
    spec = slo(all={"max_e2e_p99": "150ms", "max_lost": 0})
    results = gates.evaluate([summary(dbos=engine(), celery=engine(p99_ms=900),
                                      temporal={"status": "error", "error": "boom"})], spec, ["slo", "violations"])
    path = tmp_path / "ci" / "durabench.xml"
    junit.write(path, results, "quick", "2026-11-30T00:00:00+00:00")
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "quick"
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert len(cases) == len(results) == 4 + 4 + 1  # ran, violations, 2 slo limits for 2 engines; ran for temporal
    assert cases[("durabench.quick.celery", "slo.max_e2e_p99")].find("failure") is not None
    assert cases[("durabench.quick.dbos", "slo.max_e2e_p99")].find("failure") is None
    assert cases[("durabench.quick.temporal", "ran")].find("error") is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("9", "1", "1")


def test_junit_path_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a directory"):
        junit.check_path(tmp_path)
    with pytest.raises(UserError, match="is a file, not a directory"):
        junit.check_path(tmp_path / "file" / "x.xml")


def test_violations_message_names_program_anomalies() -> None:
    """A program run fails the gate on a program check (double effects) and the message says which."""
    summary = {"engines": {"celery": {"status": "ok", "verdict": "violations", "lost": 0, "unexpected": 0,
                                      "throughput_per_s": 1.0,
                                      "program": {"counts": {"effects_duplicated": 3, "effects_missing": None}}}}}
    (result,) = [g for g in gates.evaluate([summary], SloSpec(), {"violations"}) if g.gate == "violations"]
    assert result.outcome == "fail"
    assert result.message == "checker anomalies: 3 effects duplicated"
