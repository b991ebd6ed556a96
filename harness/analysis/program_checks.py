"""The checks of workflow programs (harness/checker.py's docstring defines each one).

A pure function of the traces, the program, the engine's reconcile records and the application
table's rows; it adds counts and ids to a :class:`harness.checker.CheckResult` and the figures
(distributions, ratios) that summary.json reports under ``program`` (docs/results.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from harness.contract import EngineRecord
from harness.program import STEP_KINDS

if TYPE_CHECKING:
    from harness.analysis.checker import CheckResult, WorkflowTrace

# Deadlines are stored at millisecond resolution by some engines (DBOS-Go checkpoints a sleep's wake-up
# time as deadline.UnixMilli(), rounded down): a fire less than this before due is that resolution,
# not an early timer. Lateness values keep the exact difference.
TIMER_RESOLUTION_MS = 1.0
NEW_IDS = ("effects_duplicated", "effects_missing", "timers_early", "signals_lost", "signals_undelivered",
           "signals_duplicated", "signals_timed_out", "branches_missing", "branches_duplicated",
           "branch_records_repeated", "wasted_calls", "calls_without_success")
EFFECT_COUNTS = ("effects_duplicated", "effects_missing")  # null in summary.json when the table was not read


def _pct(values: list[float]) -> dict[str, float | int | None]:
    """count, p50, p99, max (ms, rounded) of a list of millisecond values."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    v = sorted(values)

    def at(p: float) -> float:
        return round(v[min(len(v) - 1, int(p / 100 * len(v)))], 3)

    return {"count": len(v), "p50": at(50), "p99": at(99), "max": round(v[-1], 3)}


def _walk(program: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int | None]]:
    """(stage, the step of its parallel stage or None) for every stage."""
    out: list[tuple[dict[str, Any], int | None]] = []

    def visit(seq: list[dict[str, Any]], parallel: int | None) -> None:
        for stage in seq:
            out.append((stage, parallel))
            for branch in stage.get("branches", []):
                visit(branch, stage["step"])

    visit(program, None)
    return out


def _step_stages(seq: list[dict[str, Any]]) -> list[int]:
    """The steps of the stages run as engine steps (work, call, effect) in a branch, nested ones included."""
    return [stage["step"] for stage, _ in _walk(seq) if stage["kind"] in STEP_KINDS]


def check_program(result: CheckResult, trs: dict[str, WorkflowTrace], program: list[dict[str, Any]],
                  engine: dict[str, EngineRecord], effects: list[dict[str, Any]] | None,
                  fault_windows: list[tuple[int, int]] | None = None, effects_error: str | None = None) -> None:
    """``effects``: the application table's rows, None when they could not be read (``effects_error``
    says why): the effects check is then not measured and counts nothing."""
    ids: dict[str, list[str]] = {k: [] for k in NEW_IDS}
    stages = _walk(program)
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for stage, _ in stages:
        by_kind[stage["kind"]].append(stage)
    accepted = set(result.ids["acknowledged"])
    completed = set(result.ids["completed"])
    figures: dict[str, Any] = {"stage_kinds": sorted(by_kind)}

    # -- effects, from the application table
    if by_kind.get("effect") and effects is None:  # no evidence: judge nothing (never "all missing")
        figures["effects"] = {"idempotency": sorted({s["idempotency"] for s in by_kind["effect"]}),
                              "measured": False, "not_measured": effects_error or "the table was not read",
                              "rows": None, "extra_applications": None, "deduplicated_by_key": None,
                              "table_read": False}
    elif by_kind.get("effect"):
        rows: Counter[tuple[str, int]] = Counter()
        for row in effects or ():
            rows[(row["wf"], int(row["step"]))] += 1
        extra = 0
        for wf in sorted(accepted):
            tr = trs[wf]
            for stage in by_kind["effect"]:
                n = rows.get((wf, stage["step"]), 0)
                key = f"{wf}#{stage['step']}"
                if n > 1:
                    ids["effects_duplicated"].append(key)
                    extra += n - 1
                elif n == 0 and (wf in completed or tr.end_ns(stage["step"]) is not None):
                    ids["effects_missing"].append(key)
        deduplicated = sum(1 for tr in trs.values() for r in tr.records
                           if r["ev"] == "effect_applied" and r.get("inserted") is False)
        figures["effects"] = {"idempotency": sorted({s["idempotency"] for s in by_kind["effect"]}),
                              "rows": sum(rows.values()), "extra_applications": extra,
                              "deduplicated_by_key": deduplicated, "measured": True, "not_measured": None,
                              "table_read": True}

    # -- timers
    if by_kind.get("sleep"):
        lateness: list[float] = []
        faulted: list[float] = []
        refired = 0
        for wf in sorted(accepted):
            tr = trs[wf]
            for stage in by_kind["sleep"]:
                step = stage["step"]
                sets = [r for r in tr.records if r["ev"] == "timer_set" and r["step"] == step]
                fires = sorted(r["ns"] for r in tr.records if r["ev"] == "timer_fired" and r["step"] == step)
                if not sets or not fires:
                    continue
                refired += len(fires) - 1
                set_ns = min(r["ns"] for r in sets)
                due = min(int(r["due_ns"]) for r in sets)
                late_ms = (fires[0] - due) / 1e6
                if late_ms < -TIMER_RESOLUTION_MS:
                    ids["timers_early"].append(f"{wf}#{step}")
                lateness.append(late_ms)
                if any(start <= fires[0] and end >= set_ns for start, end in fault_windows or []):
                    faulted.append(late_ms)
        figures["timers"] = {"lateness_ms": _pct(lateness), "lateness_across_faults_ms": _pct(faulted),
                             "extra_fire_records": refired, "lateness_values_ms": [round(v, 3) for v in lateness]}

    # -- signals
    if by_kind.get("wait_signal"):
        resume: list[float] = []
        sent_ok = unsent = 0
        for wf in sorted(accepted):
            tr = trs[wf]
            for stage in by_kind["wait_signal"]:
                step = stage["step"]
                key = f"{wf}#{step}"
                if not any(r["ev"] == "signal_wait" and r["step"] == step for r in tr.records):
                    continue
                sends = sorted((r for r in tr.records if r["ev"] == "signal_sent" and r["step"] == step
                                and r["outcome"] == "ok"), key=lambda r: r["ns"])
                got = sorted((r for r in tr.records if r["ev"] == "signal_received" and r["step"] == step),
                             key=lambda r: r["ns"])
                timeouts = [r["ns"] for r in tr.records if r["ev"] == "signal_timeout" and r["step"] == step]
                if not sends:
                    unsent += 1
                    if timeouts:
                        ids["signals_timed_out"].append(key)
                    continue
                sent_ok += 1
                if not got:
                    # lost only once the wait is over without it: timed out, went past the wait, or the
                    # workflow ended; still waiting when the run ended is undelivered, not lost
                    rec = engine.get(wf)
                    over = (timeouts or tr.end_ns(step) is not None or wf in completed
                            or (rec is not None and rec.status in ("completed", "failed")))
                    ids["signals_lost" if over else "signals_undelivered"].append(key)
                    continue
                if len({r.get("payload") for r in got}) > 1:
                    ids["signals_duplicated"].append(key)
                resume.append((got[0]["ns"] - int(sends[0].get("sent_ns", sends[0]["ns"]))) / 1e6)
        figures["signals"] = {"sent": sent_ok, "never_sent": unsent, "signal_to_resume_ms": _pct(resume)}

    # -- branches. branch_end is written by workflow code, which an engine may legitimately run again
    # (a Temporal workflow task whose worker died is re-run by another worker): a repeated record
    # is no evidence that the branch's work ran twice. A branch is duplicated when every one of its
    # steps ran again after it had completed and the engine had moved past it (the checker's
    # replayed_completed_steps rule), i.e. the finished branch was done again. An item in flight at a
    # crash that runs again is at-least-once re-execution, counted in duplicated_steps and
    # branch_steps_reexecuted like any other step, not a violation.
    if by_kind.get("parallel"):
        duplicated_steps = set(result.ids.get("replayed_completed_steps", ()))
        for wf in sorted(accepted):
            tr = trs[wf]
            for stage in by_kind["parallel"]:
                step = stage["step"]
                ends: Counter[int] = Counter(r["branch"] for r in tr.records
                                             if r["ev"] == "branch_end" and r["step"] == step)
                joined = tr.end_ns(step) is not None or wf in completed
                for b, branch in enumerate(stage["branches"]):
                    key = f"{wf}#{step}.{b}"
                    steps = _step_stages(branch)
                    if steps and all(f"{wf}#{s}" in duplicated_steps for s in steps):
                        ids["branches_duplicated"].append(key)
                    if ends[b] > 1:
                        ids["branch_records_repeated"].append(key)
                    elif ends[b] == 0 and joined:
                        ids["branches_missing"].append(key)
        # a branch's steps (a fan-out's items) executed again: every execution beyond a step's first
        in_branches = [stage["step"] for stage, parallel in stages if parallel is not None]
        again = sum(max(0, len(trs[wf].steps.get(step, ())) - 1) for wf in sorted(trs) for step in in_branches)
        figures["branches"] = {"parallel_stages": len(by_kind["parallel"]),
                               "branches_per_stage": [len(s["branches"]) for s in by_kind["parallel"]],
                               "branch_steps_reexecuted": again}

    # -- calls, from the flaky API's log
    if by_kind.get("call"):
        statuses: Counter[str] = Counter()
        logical = attempts = 0
        per_call: list[int] = []
        call_steps = {s["step"] for s in by_kind["call"]}
        for wf in sorted(trs):
            tr = trs[wf]
            reqs: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for r in tr.records:
                if r["ev"] == "api_request" and r["step"] in call_steps:
                    reqs[r["step"]].append(r)
            for step, rs in sorted(reqs.items()):
                rs.sort(key=lambda r: r["recv_ns"])
                logical += 1
                attempts += len(rs)
                per_call.append(len(rs))
                answered_ok = False
                for r in rs:
                    statuses[str(r["status"])] += 1
                    if answered_ok:
                        ids["wasted_calls"].append(f"{wf}#{step}@{r['request']}")
                    if r["status"] == 200 and r.get("delivered", True):
                        answered_ok = True
                if not answered_ok and wf in accepted and tr.end_ns(step) is None:
                    ids["calls_without_success"].append(f"{wf}#{step}")
        figures["calls"] = {
            "logical_calls": logical, "requests": attempts,
            "retry_amplification": round(attempts / logical, 3) if logical else None,
            "max_requests_per_call": max(per_call, default=0), "statuses": dict(sorted(statuses.items())),
            "wasted_calls": len(ids["wasted_calls"]),
        }

    for k, v in ids.items():
        result.ids[k] = v
        result.counts[k] = len(v)
    result.figures.update(figures)
