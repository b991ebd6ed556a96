"""What re-execution cost: the work done twice, and duplicates no fault explains.

A pure function of one engine's traces (from the ledger) and its fault windows. For every
(workflow, step) that started more than once, the execution kept is the first that ended; every
other execution is waste:

- one that ended (a redelivery that ran to the end beside, or after, the kept one): all its time;
- one that never ended (its worker was killed, its engine gave up on it, or the run ended while it
  ran): from its start to the first fault that began after it started and hit its worker (the kill:
  a fault targeting that worker, or a store or network fault, which hits every worker), or to the next
  start of the same step if that came first, else to the end of the history (upper bounds). A fault
  on another worker does not stop it: an attempt an activity timeout abandoned on a worker the kill
  missed ran until its retry started.

Every time is the execution's own, measured in the ledger: jobs of any length, drawn per execution.

A duplicate **without a fault** is a (workflow, step) whose second execution started with no fault
hitting the first one in between: no fault began between the two starts that targeted the first
execution's worker (worker faults) or every worker (store and network faults). The engine re-ran
work on its own, e.g. a broker's visibility timeout or an activity timeout shorter than the step
redelivering a step that was still running.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.checker import Execution, WorkflowTrace

Fault = tuple[int, tuple[str, ...]]  # start ns, targeted workers (empty: every worker, a store or network fault)


def _lost_ns(ex: Execution, later_start_ns: int | None, faults: list[Fault], end_ns: int | None) -> int | None:
    if ex.end_ns is not None:
        return ex.end_ns - ex.start_ns
    after = [start for start, workers in faults if start >= ex.start_ns and (not workers or ex.src in workers)]
    bounds = [b for b in (min(after, default=None), later_start_ns) if b is not None] or (
        [end_ns] if end_ns is not None else [])
    return (min(bounds) - ex.start_ns) if bounds else None


def figures(trs: dict[str, WorkflowTrace], faults: list[Fault], end_ns: int | None = None) -> dict[str, Any]:
    """``work_lost_s``, ``wasted_executions``, ``duplicates_without_fault`` and its ids (``wf#step``);
    ``end_ns``: the end of the history (bounds an execution cut off by the end of the run)."""
    lost_ns = 0
    wasted = 0
    no_fault: list[str] = []
    for wf, tr in sorted(trs.items()):
        for step, execs in sorted(tr.steps.items()):
            if len(execs) < 2:
                continue
            ordered = sorted(execs, key=lambda e: e.start_ns)
            ended = [e for e in ordered if e.end_ns is not None]
            kept = min(ended, key=lambda e: e.end_ns or 0) if ended else None
            for i, ex in enumerate(ordered):
                if ex is kept:
                    continue
                later = ordered[i + 1].start_ns if i + 1 < len(ordered) else None
                ns = _lost_ns(ex, later, faults, end_ns)
                if ns is not None:
                    lost_ns += ns
                    wasted += 1
            first, second = ordered[0], ordered[1].start_ns
            if not any(first.start_ns <= start <= second and (not workers or first.src in workers)
                       for start, workers in faults):
                no_fault.append(f"{wf}#{step}")
    return {"work_lost_s": round(lost_ns / 1e9, 3), "wasted_executions": wasted,
            "duplicates_without_fault": len(no_fault), "duplicates_without_fault_ids": no_fault}
