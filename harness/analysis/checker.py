"""The checker: a pure function of one engine's history and reconcile records.

Per workflow id (Jepsen's taxonomy): submitted, acknowledged, completed, failed, **lost**
(acknowledged, or resolved as accepted, but never completed), **unknown** (submit outcome
indeterminate and not resolved by the engine's own store or the ledger), **unexpected** (ran
but never submitted).

Per (workflow, step), counted from the external ledger only (engine bookkeeping undercounts
re-executions): **missing** (an accepted workflow's step that never ended), **duplicated**
(more than one execution started), and **replayed completed** (an execution that started
after an earlier execution of the same step had ended *and* the engine had moved past the
step: the next step had started, or for the last step, the engine recorded the workflow as
complete). A duplicate of a step in flight at a crash is at-least-once behaviour every
engine here documents; a replayed completed step means a checkpoint was lost.

The ids behind every count are kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.contract import EngineRecord


@dataclass(slots=True)
class Execution:
    start_ns: int
    end_ns: int | None
    src: str
    pid: int


@dataclass
class WorkflowTrace:
    """Everything the history says about one workflow id."""

    wf: str
    intended_ns: int | None = None
    sent_ns: int | None = None
    ack_ns: int | None = None
    outcome: str | None = None  # ok / fail / unknown; None = never invoked
    steps: dict[int, list[Execution]] = field(default_factory=lambda: defaultdict(list))
    _completed: tuple[int, int | None] | None = field(default=None, repr=False, compare=False)

    def first_start_ns(self) -> int | None:
        starts = [e.start_ns for execs in self.steps.values() for e in execs]
        return min(starts) if starts else None

    def ledger_completed_ns(self, n_steps: int) -> int | None:
        """When the last of the ``n_steps`` steps first ended per the ledger; None if one never ended.
        Remembered per trace: a trace is complete once ``traces`` returns it."""
        if self._completed is not None and self._completed[0] == n_steps:
            return self._completed[1]
        ends = []
        done_ns: int | None = None
        for step in range(n_steps):
            done = [e.end_ns for e in self.steps.get(step, ()) if e.end_ns is not None]
            if not done:
                break
            ends.append(min(done))
        else:
            done_ns = max(ends) if ends else None
        self._completed = (n_steps, done_ns)
        return done_ns


def traces(events: list[dict[str, Any]]) -> dict[str, WorkflowTrace]:
    """Group history records by workflow id; pair step starts with their ends."""
    out: dict[str, WorkflowTrace] = {}
    open_execs: dict[tuple[str, int, int], Execution] = {}
    get = out.get
    for rec in events:
        wf = rec.get("wf")
        if wf is None:
            continue
        tr = get(wf)
        if tr is None:
            tr = out[wf] = WorkflowTrace(wf)
        ev = rec["ev"]
        if ev == "step_start":
            ex = Execution(rec["ns"], None, rec["src"], rec["pid"])
            tr.steps[rec["step"]].append(ex)
            open_execs[(wf, rec["step"], rec["pid"])] = ex
        elif ev == "step_end":
            ex_open = open_execs.pop((wf, rec["step"], rec["pid"]), None)
            if ex_open is not None:
                ex_open.end_ns = rec["ns"]
        elif ev == "invoke":
            tr.intended_ns, tr.sent_ns = rec["intended_ns"], rec["ns"]
        elif ev == "ack":
            tr.ack_ns, tr.outcome = rec["ns"], rec["outcome"]
    return out


@dataclass
class CheckResult:
    counts: dict[str, int]
    ids: dict[str, list[str]]

    @property
    def correct(self) -> bool:
        return all(self.counts[k] == 0 for k in ("lost", "unexpected", "missing_steps", "replayed_completed_steps"))


def check(trs: dict[str, WorkflowTrace], n_steps: int, engine: dict[str, EngineRecord]) -> CheckResult:
    ids: dict[str, list[str]] = {k: [] for k in (
        "submitted", "acknowledged", "failed", "unknown", "resolved_unknown", "completed", "lost", "unexpected",
        "missing_steps", "duplicated_steps", "replayed_completed_steps",
    )}
    extra_executions = 0
    for wf, tr in sorted(trs.items()):
        ran = bool(tr.steps)
        if tr.outcome is None and tr.intended_ns is None:
            if ran:
                ids["unexpected"].append(wf)
            continue
        ids["submitted"].append(wf)
        record = engine.get(wf)
        known_to_engine = record is not None and record.status != "not_found"
        if tr.outcome == "fail" and not ran and not known_to_engine:
            ids["failed"].append(wf)
            continue
        if tr.outcome != "ok":
            if ran or known_to_engine:
                ids["resolved_unknown"].append(wf)
            else:
                ids["unknown"].append(wf)
                continue
        ids["acknowledged"].append(wf)
        completed_ns = tr.ledger_completed_ns(n_steps)
        if completed_ns is not None:
            ids["completed"].append(wf)
        else:
            ids["lost"].append(wf)
            for step in range(n_steps):  # (a completed workflow has every step ended)
                if not any(e.end_ns is not None for e in tr.steps.get(step, [])):
                    ids["missing_steps"].append(f"{wf}#{step}")
        engine_done_ns = record.completed_ns if record is not None else None
        reruns = reexecutions(tr, n_steps, engine_done_ns)
        if reruns:
            extra_executions += len(reruns)
            ids["duplicated_steps"] += sorted({f"{wf}#{r.step}" for r in reruns})
            ids["replayed_completed_steps"] += sorted({f"{wf}#{r.step}" for r in reruns if r.replayed})
    counts = {k: len(v) for k, v in ids.items()}
    counts["extra_step_executions"] = extra_executions
    return CheckResult(counts, ids)


@dataclass(frozen=True)
class Rerun:
    """An execution of a step beyond its first one."""

    step: int
    start_ns: int
    replayed: bool  # the step had ended and the engine had moved past it before this execution


def reexecutions(tr: WorkflowTrace, n_steps: int, engine_done_ns: int | None) -> list[Rerun]:
    """Every re-execution of every step of one workflow, classified."""
    out: list[Rerun] = []
    for execs in tr.steps.values():
        if len(execs) > 1:
            break
    else:
        return out  # the common case: every step ran once
    for step in range(n_steps):
        execs = sorted(tr.steps.get(step, []), key=lambda e: e.start_ns)
        next_starts = [n.start_ns for n in tr.steps.get(step + 1, [])]
        for i, later in enumerate(execs[1:], start=1):
            ended = any(e.end_ns is not None and e.end_ns <= later.start_ns for e in execs[:i])
            if step == n_steps - 1:
                moved_on = engine_done_ns is not None and engine_done_ns <= later.start_ns
            else:
                moved_on = any(ns <= later.start_ns for ns in next_starts)
            out.append(Rerun(step, later.start_ns, ended and moved_on))
    return out
