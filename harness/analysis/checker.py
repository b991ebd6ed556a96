"""The checker: a pure function of one engine's history and reconcile records.

Per workflow id (Jepsen's taxonomy): submitted, acknowledged, completed, failed, **lost**
(acknowledged, or resolved as accepted, never completed, and the engine does not hold it either:
it has it failed, has no record of it, or claims it done without the steps in the ledger),
**unfinished** (acknowledged, not completed when the run ended, and the engine still holds it as
pending: not a loss; still not a correct run, as its work was not done within the run; whether it waits in
the queue, stalled after a claim or was still moving, harness/analysis/unfinished.py says), **unknown** (submit outcome
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

Workflow programs (harness/program.py) add, per stage kind, with ids ``<wf>#<step>``:

- an execution that ended in ``step_error`` (a failed call attempt) is a retry: a later execution
  is a duplicate only if some earlier one did not fail explicitly (it ended, or a crash cut it);
- **effects** counted from the application table's dump (``effects.json``): applied more than once
  (``effects_duplicated``; ``effect_extra_applications`` rows beyond the first), or never for a
  workflow that went past the stage (``effects_missing``); when the dump failed or is absent, not
  measured: nothing counted, and the verdict is ``unverified``, never ``correct``;
- **timers**: due at the earliest ``timer_set.due_ns``, fired at the first ``timer_fired``; fired
  more than 1 ms (``TIMER_RESOLUTION_MS``, the resolution of deadlines stored in milliseconds) before
  due is a violation (``timers_early``); lateness = fired - due, a distribution;
- **signals**: sent ok by the driver and never received though the wait is over (``signals_lost``:
  it timed out or ended, or the workflow completed or failed); still waiting at the end of the run
  is ``signals_undelivered``, not a loss; more than one distinct payload received (``signals_duplicated``);
  signal-to-resume latency = first receipt - the first successful send's start;
- **branches**: the workflow went past the join while a branch had not ended (``branches_missing``,
  ids ``<wf>#<step>.<branch>``), or a finished branch's work ran again: every step of it replayed
  after completion by the replayed-completed-step rule (``branches_duplicated``; an item in flight at
  a crash that re-runs is at-least-once, counted as a duplicated step); more than one ``branch_end`` record, which
  workflow code may legitimately write twice, is only ``branch_records_repeated``;
- **calls**, from the flaky API's own log (``api_request``): retry amplification = requests /
  logical calls (a (workflow, call stage) that reached the API); a **wasted call** is a request made
  after an earlier request of the same call had been answered 200 and delivered: its result was
  lost (a crash before the engine recorded it), unlike the engine's retries of failed attempts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.contract import EngineRecord

VIOLATIONS = ("lost", "unfinished", "unexpected", "missing_steps", "replayed_completed_steps", "effects_duplicated",
              "effects_missing", "timers_early", "signals_lost", "signals_duplicated", "branches_missing",
              "branches_duplicated")
# summary.json's verdict per engine: no violation and every check measured; a violation counted; no
# violation counted but a check had no evidence to judge (``not_measured`` says which and why: exactly-once
# effects are never claimed without the application table's count); the run was stopped part-way.
CORRECT, VIOLATIONS_FOUND, UNVERIFIED, INTERRUPTED = "correct", "violations", "unverified", "interrupted"
VERDICTS = (CORRECT, VIOLATIONS_FOUND, UNVERIFIED, INTERRUPTED)
STAGE_START_EVENTS = ("timer_set", "signal_wait", "branch_start")  # non-step stages (parallel: its branches)
STAGE_END_EVENTS = ("timer_fired", "signal_received", "signal_timeout", "join")


@dataclass
class Execution:
    start_ns: int
    end_ns: int | None
    src: str
    pid: int
    failed: bool = False  # ended in step_error (a failed attempt the engine may retry)


@dataclass
class WorkflowTrace:
    """Everything the history says about one workflow id."""

    wf: str
    intended_ns: int | None = None
    sent_ns: int | None = None
    ack_ns: int | None = None
    outcome: str | None = None  # ok / fail / unknown; None = never invoked
    steps: dict[int, list[Execution]] = field(default_factory=lambda: defaultdict(list))
    stage_starts: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # timers, waits, branches
    stage_ends: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # fired, received, join
    records: list[dict[str, Any]] = field(default_factory=list)  # every program record of this workflow

    def first_start_ns(self) -> int | None:
        starts = [e.start_ns for execs in self.steps.values() for e in execs]
        starts += [ns for ns_list in self.stage_starts.values() for ns in ns_list]
        return min(starts) if starts else None

    def end_ns(self, step: int) -> int | None:
        """When stage ``step`` first ended (step_end, timer_fired, signal_received/timeout, join)."""
        done = [e.end_ns for e in self.steps.get(step, []) if e.end_ns is not None] + self.stage_ends.get(step, [])
        return min(done) if done else None

    def starts_of(self, step: int) -> list[int]:
        return [e.start_ns for e in self.steps.get(step, [])] + self.stage_starts.get(step, [])

    def ledger_completed_ns(self, n_steps: int) -> int | None:
        ends = []
        for step in range(n_steps):
            done = self.end_ns(step)
            if done is None:
                return None
            ends.append(done)
        return max(ends)


def traces(events: list[dict[str, Any]]) -> dict[str, WorkflowTrace]:
    """Group history records by workflow id; pair step starts with their ends."""
    out: dict[str, WorkflowTrace] = {}
    open_execs: dict[tuple[str, int, int], Execution] = {}
    for rec in events:
        wf = rec.get("wf")
        if wf is None:
            continue
        tr = out.get(wf)
        if tr is None:
            tr = out[wf] = WorkflowTrace(wf)
        ev = rec["ev"]
        if ev == "invoke":
            tr.intended_ns, tr.sent_ns = rec["intended_ns"], rec["ns"]
        elif ev == "ack":
            tr.ack_ns, tr.outcome = rec["ns"], rec["outcome"]
        elif ev == "step_start":
            ex = Execution(rec["ns"], None, rec["src"], rec["pid"])
            tr.steps[rec["step"]].append(ex)
            open_execs[(wf, rec["step"], rec["pid"])] = ex
        elif ev == "step_end":
            ex_open = open_execs.pop((wf, rec["step"], rec["pid"]), None)
            if ex_open is not None:
                ex_open.end_ns = rec["ns"]
        elif ev == "step_error":
            ex_open = open_execs.pop((wf, rec["step"], rec["pid"]), None)
            if ex_open is not None:
                ex_open.failed = True
        elif ev in STAGE_START_EVENTS:
            tr.stage_starts[rec["step"]].append(rec["ns"])
            tr.records.append(rec)
        elif ev in STAGE_END_EVENTS:
            if ev != "signal_timeout" or rec.get("on_timeout") == "continue":
                tr.stage_ends[rec["step"]].append(rec["ns"])
            tr.records.append(rec)
        elif ev in ("branch_end", "effect_applied", "signal_sent", "api_request", "call_attempt"):
            tr.records.append(rec)
    return out


@dataclass
class CheckResult:
    counts: dict[str, int]
    ids: dict[str, list[str]]

    figures: dict[str, Any] = field(default_factory=dict)  # distributions and ratios (summary.json "program")

    @property
    def violations_found(self) -> bool:
        return any(self.counts.get(k, 0) for k in VIOLATIONS)

    @property
    def not_measured(self) -> dict[str, str]:
        """The checks the program needs whose evidence is missing, with why: ``effects`` when the
        application table could not be read (the effects were then not counted, so not judged)."""
        effects = self.figures.get("effects")
        if effects and effects.get("measured") is False:
            return {"effects": str(effects.get("not_measured") or "the table was not read")}
        return {}

    @property
    def correct(self) -> bool:
        """No violation counted and every check measured: a figure says no more than its evidence."""
        return not self.violations_found and not self.not_measured

    def verdict(self, interrupted: bool = False) -> str:
        """summary.json's ``verdict`` (:data:`VERDICTS`)."""
        if interrupted:
            return INTERRUPTED
        if self.violations_found:
            return VIOLATIONS_FOUND
        return UNVERIFIED if self.not_measured else CORRECT


def verdict_label(engine_summary: dict[str, Any]) -> str:
    """An engine's verdict as the reports print it: ``unverified`` says what was not measured."""
    verdict = str(engine_summary.get("verdict", "?"))
    if verdict == UNVERIFIED:
        what = " and ".join(engine_summary.get("not_measured") or {}) or "a check"
        return f"{UNVERIFIED} ({what} not measured)"
    return verdict


def check(trs: dict[str, WorkflowTrace], n_steps: int, engine: dict[str, EngineRecord],
          program: list[dict[str, Any]] | None = None) -> CheckResult:
    """Jepsen's per-workflow taxonomy and per-step executions; ``program`` gives the stages' order
    (None: a chain). The program's own checks are harness/analysis/program_checks.py."""
    after = _after(program) if program is not None else None
    ids: dict[str, list[str]] = {k: [] for k in (
        "submitted", "acknowledged", "failed", "unknown", "resolved_unknown", "completed", "lost", "unfinished",
        "unexpected", "missing_steps", "duplicated_steps", "replayed_completed_steps",
    )}
    extra_executions = 0
    for wf, tr in sorted(trs.items()):
        ran = tr.first_start_ns() is not None
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
            held = record is not None and record.status == "pending" and record.detail.get("queued") is not False
            ids["unfinished" if held else "lost"].append(wf)
            for step in range(n_steps):  # (a completed workflow has every stage ended)
                if tr.end_ns(step) is None:
                    ids["missing_steps"].append(f"{wf}#{step}")
        engine_done_ns = record.completed_ns if record is not None else None
        reruns = reexecutions(tr, n_steps, engine_done_ns, after)
        if reruns:
            extra_executions += len(reruns)
            ids["duplicated_steps"] += sorted({f"{wf}#{r.step}" for r in reruns})
            ids["replayed_completed_steps"] += sorted({f"{wf}#{r.step}" for r in reruns if r.replayed})
    counts = {k: len(v) for k, v in ids.items()}
    counts["extra_step_executions"] = extra_executions
    return CheckResult(counts, ids)


def _after(program: list[dict[str, Any]]) -> dict[int, int | None]:
    """Step -> the stage that can start only after it ended (None: the workflow's end)."""
    out: dict[int, int | None] = {}

    def visit(seq: list[dict[str, Any]], after_seq: int | None) -> None:
        for i, stage in enumerate(seq):
            after = seq[i + 1]["step"] if i + 1 < len(seq) else after_seq
            out[stage["step"]] = after
            for branch in stage.get("branches", []):
                visit(branch, after)

    visit(program, None)
    return out


@dataclass(frozen=True)
class Rerun:
    """An execution of a step beyond its first one."""

    step: int
    start_ns: int
    replayed: bool  # the step had ended and the engine had moved past it before this execution


def reexecutions(tr: WorkflowTrace, n_steps: int, engine_done_ns: int | None,
                 after: dict[int, int | None] | None = None) -> list[Rerun]:
    """Every re-execution of every step of one workflow, classified. ``after``: step -> the stage that
    follows it (a program's layout); None = a chain (step + 1, the last step followed by the end).
    An execution whose every earlier execution failed explicitly (``step_error``) is a retry, not a
    re-execution."""
    out: list[Rerun] = []
    if all(len(execs) <= 1 for execs in tr.steps.values()):
        return out  # the common case: every step ran once
    for step in range(n_steps):
        execs = sorted(tr.steps.get(step, []), key=lambda e: e.start_ns)
        nxt = (step + 1 if step + 1 < n_steps else None) if after is None else after.get(step)
        next_starts = tr.starts_of(nxt) if nxt is not None else []
        for i, later in enumerate(execs[1:], start=1):
            if all(e.failed for e in execs[:i]):
                continue  # the engine retried a failed attempt
            ended = any(e.end_ns is not None and e.end_ns <= later.start_ns for e in execs[:i])
            if nxt is None:
                moved_on = engine_done_ns is not None and engine_done_ns <= later.start_ns
            else:
                moved_on = any(ns <= later.start_ns for ns in next_starts)
            out.append(Rerun(step, later.start_ns, ended and moved_on))
    return out
