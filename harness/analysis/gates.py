"""Gates for CI: pass or fail a run from its ``summary.json`` (one per repetition) and the
scenario's ``slo`` block, for ``durabench run|analyze --fail-on violations,slo``.

A pure function of those files, so ``durabench analyze RUN --fail-on ...`` re-judges any run.

Gates, per engine (``docs/scenarios.md``, "slo"):

``ran``         the engine ran (always judged; an engine that failed to run is exit code 3)
``violations``  the checker's verdict is ``correct`` in every repetition (no lost or unexpected
                workflow, missing step or replayed completed step; duplicated steps are
                at-least-once re-execution, not a violation: ``slo.max_duplicated`` limits them);
                ``unverified`` (a check without evidence, e.g. effects not measured) fails it too
``slo.<limit>`` one limit of the ``slo`` block: figures (latency, throughput ratio, recovery) are
                the median over repetitions; counts (lost, replayed, duplicated) the worst one

Exit codes of ``durabench run`` (:data:`EXIT_CODES`): 0 pass, 1 a selected gate failed, 2 user
error, 3 an engine failed to run, 130 interrupted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from harness.analysis import checker
from harness.errors import UserError
from harness.scenario import SloLimits, SloSpec

EXIT_PASS, EXIT_GATE_FAILED, EXIT_USER_ERROR, EXIT_ENGINE_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = (f"{EXIT_PASS} pass; {EXIT_GATE_FAILED} a gate of --fail-on failed; {EXIT_USER_ERROR} user error (bad "
              f"input); {EXIT_ENGINE_FAILED} an engine failed to run; {EXIT_INTERRUPTED} interrupted (Ctrl-C)")
GATES = ("violations", "slo")


@dataclass(frozen=True)
class GateResult:
    engine: str
    gate: str  # "ran", "violations", "slo.max_e2e_p99", ...
    outcome: str  # "pass", "fail", "error" (the engine did not run), "skipped" (nothing to judge)
    message: str

    @property
    def failed(self) -> bool:
        return self.outcome in ("fail", "error")


def parse_fail_on(text: str | None) -> list[str]:
    """``"violations,slo"`` -> ["violations", "slo"]; refuses an unknown gate name."""
    if text is None:
        return []
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"--fail-on is empty; give a comma-separated list of {', '.join(GATES)}")
    for name in names:
        if name not in GATES:
            raise UserError(f"--fail-on: unknown gate {name!r} (known: {', '.join(GATES)})")
    return list(dict.fromkeys(names))


def slo_of(scenario: dict[str, Any]) -> SloSpec:
    """The slo block of a resolved scenario (a manifest's ``scenario``); empty for runs made before it."""
    try:
        return SloSpec.model_validate(scenario.get("slo") or {})
    except ValueError as exc:
        raise UserError(f"the run's manifest holds an slo block this durabench cannot read: {exc}") from None


def require_slo(slo: SloSpec, fail_on: Collection[str], where: str) -> None:
    if "slo" in fail_on and slo.empty:
        raise UserError(f"--fail-on slo: {where} sets no limit; add an slo block (docs/scenarios.md) "
                        "or leave slo out of --fail-on")


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _latency_s(summary: dict[str, Any], pct: str) -> float | None:
    value = (summary.get("e2e_latency_ms") or {}).get(pct)
    return None if value is None else float(value) / 1000


def _throughput_ratio(summary: dict[str, Any]) -> float | None:
    offered = summary.get("offered_rate_per_s")
    if not offered:
        return None
    return float(summary.get("throughput_per_s") or 0.0) / float(offered)


def _recovery_s(summary: dict[str, Any]) -> float | None:
    """The longest time from a fault to the completion of the last workflow it affected; inf when
    one never finished; None without faults."""
    faults = summary.get("recovery") or []
    if not faults:
        return None
    worst = 0.0
    for f in faults:
        if f.get("all_done_s") is None:
            if f.get("affected_unfinished"):
                return math.inf
            continue
        worst = max(worst, float(f["all_done_s"]))
    return worst


@dataclass(frozen=True)
class _Limit:
    field: str
    label: str
    get: Callable[[dict[str, Any]], float | None]
    upper: bool  # the figure must stay at or below the limit (else at or above)
    count: bool  # judged on the worst repetition (else the median)
    unit: str
    none_means: str  # why a figure is missing


LIMITS = (
    _Limit("max_e2e_p99", "e2e p99", lambda s: _latency_s(s, "p99"), True, False, "ms",
           "no workflow completed in the measured window"),
    _Limit("max_e2e_p99_9", "e2e p99.9", lambda s: _latency_s(s, "p99.9"), True, False, "ms",
           "no workflow completed in the measured window"),
    _Limit("min_throughput_ratio", "throughput / offered", _throughput_ratio, False, False, "",
           "closed-loop load has no offered rate"),
    _Limit("max_recovery", "recovery", _recovery_s, True, False, "s", "no fault was injected"),
    _Limit("max_lost", "lost", lambda s: s.get("lost"), True, True, "", "not counted"),
    _Limit("max_replayed", "replayed completed steps", lambda s: s.get("replayed_completed_steps"), True, True, "",
           "not counted"),
    _Limit("max_duplicated", "duplicated steps", lambda s: s.get("duplicated_steps"), True, True, "",
           "not counted"),
)


def _fmt(value: float, unit: str) -> str:
    """``value`` is in seconds for a unit ``s`` or ``ms`` (shown in that unit), else a plain number."""
    if math.isinf(value):
        return "never (a workflow it affected did not finish)"
    if unit == "ms":
        return f"{value * 1000:.4g} ms"
    if unit == "s":
        return f"{value:.4g} s"
    return f"{value:.4g}"


def _judge(limit: _Limit, bound: float, sums: list[dict[str, Any]], engine: str) -> GateResult:
    gate = f"slo.{limit.field}"
    values = [limit.get(s) for s in sums]
    if limit.count:
        present = [float(v) for v in values if v is not None]
        value = max(present) if present else None
        how = "worst of {n} repetitions" if len(sums) > 1 else ""
    else:
        value = _median([None if v is None else float(v) for v in values])
        how = "median of {n} repetitions" if len(sums) > 1 else ""
    how = how.format(n=len(sums))
    if value is None:
        if limit.field in ("max_e2e_p99", "max_e2e_p99_9"):  # a latency limit with nothing completed fails
            return GateResult(engine, gate, "fail", f"{limit.label}: {limit.none_means}")
        return GateResult(engine, gate, "skipped", f"{limit.label}: not judged, {limit.none_means}")
    ok = value <= bound if limit.upper else value >= bound
    op = ("<=" if ok else ">") if limit.upper else (">=" if ok else "<")
    text = f"{limit.label} {_fmt(value, limit.unit)}{f' ({how})' if how else ''} {op} limit {_fmt(bound, limit.unit)}"
    return GateResult(engine, gate, "pass" if ok else "fail", text)


def _not_measured(sums: list[dict[str, Any]]) -> str:
    """"; effects not measured (why)" when a repetition's effects check had no table to read."""
    why = [e["not_measured"] for s in sums if (e := (s.get("program") or {}).get("effects"))
           and e.get("measured") is False]
    return f"; effects not measured ({why[0]})" if why else ""


def _violations(sums: list[dict[str, Any]], engine: str) -> GateResult:
    bad = [s for s in sums if s.get("verdict") != checker.CORRECT]
    if not bad:
        return GateResult(engine, "violations", "pass", "the checker found no anomaly"
                          + (f" in {len(sums)} repetitions" if len(sums) > 1 else "") + _not_measured(sums))
    if all(s.get("verdict") == checker.UNVERIFIED for s in bad):  # no anomaly counted, but not all measured
        where = f" in {len(bad)} of {len(sums)} repetitions" if len(sums) > 1 else ""
        return GateResult(engine, "violations", "fail", f"not verified{where}: the checker counted no anomaly, but "
                          f"a check had no evidence to judge{_not_measured(sums)}")

    def count(s: dict[str, Any], key: str) -> int:  # the chain's counts, else the program checks' ones
        return int(s.get(key) or ((s.get("program") or {}).get("counts") or {}).get(key) or 0)

    worst = {k: max(count(s, k) for s in bad) for k in checker.VIOLATIONS}  # what CheckResult.violations_found reads
    interrupted = sum(1 for s in bad if s.get("verdict") == checker.INTERRUPTED)
    unverified = sum(1 for s in bad if s.get("verdict") == checker.UNVERIFIED)
    counts = ", ".join([f"{n} {k.replace('_', ' ')}" for k, n in worst.items() if n]
                       + ([f"{interrupted} interrupted"] if interrupted else [])
                       + ([f"{unverified} unverified"] if unverified else [])) or "none counted"
    where = f" in {len(bad)} of {len(sums)} repetitions" if len(sums) > 1 else ""
    return GateResult(engine, "violations", "fail", f"checker anomalies{where}: {counts}{_not_measured(sums)}")


def engine_names(summaries: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for summary in summaries:
        names += [n for n in summary.get("engines", {}) if n not in names]
    return names


def evaluate(summaries: Sequence[dict[str, Any]], slo: SloSpec, fail_on: Collection[str]) -> list[GateResult]:
    """Every gate of ``fail_on`` (and ``ran``) for every engine of the summaries (repetitions of one
    run). Pure: a function of the summaries and the slo block only."""
    out: list[GateResult] = []
    for engine in engine_names(summaries):
        entries = [s["engines"].get(engine) for s in summaries]
        skipped = [e for e in entries if e is not None and e.get("status") == "skipped"]
        if skipped and len(skipped) == len(entries):  # the program needs a stage kind the engine does not run
            out.append(GateResult(engine, "ran", "skipped", f"skipped: {skipped[0]['skipped']}"))
            continue
        failed = [e for e in entries if e is None or e.get("status") != "ok" or "throughput_per_s" not in e]
        if failed:
            errors = "; ".join(str((e or {}).get("error") or "no results") for e in failed)
            out.append(GateResult(engine, "ran", "error", f"did not run in {len(failed)} of {len(entries)} "
                                  f"repetitions: {errors}" if len(entries) > 1 else f"did not run: {errors}"))
            continue
        sums = [e for e in entries if e is not None]
        out.append(GateResult(engine, "ran", "pass", f"ran ({len(sums)} repetitions)" if len(sums) > 1 else "ran"))
        if "violations" in fail_on:
            out.append(_violations(sums, engine))
        if "slo" in fail_on:
            limits: SloLimits = slo.limits_for(engine)
            for limit in LIMITS:
                bound = getattr(limits, limit.field)
                if bound is not None:
                    out.append(_judge(limit, float(bound), sums, engine))
    return out


def exit_code(results: Sequence[GateResult]) -> int:
    if any(r.outcome == "error" for r in results):
        return EXIT_ENGINE_FAILED
    if any(r.outcome == "fail" for r in results):
        return EXIT_GATE_FAILED
    return EXIT_PASS


def lines(results: Sequence[GateResult]) -> list[str]:
    """One line per judged gate, for the terminal."""
    marks = {"pass": "pass", "fail": "FAIL", "error": "ERROR", "skipped": "skip"}
    return [f"  {marks[r.outcome]:5} {r.engine}: {r.gate}: {r.message}" for r in results if r.gate != "ran"
            or r.outcome != "pass"]
