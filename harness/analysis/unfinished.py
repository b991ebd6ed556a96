"""What an accepted workflow that never completed was doing when the run ended: the evidence behind every
``unfinished`` (and ``lost``) id, and the state of each unfinished one (a backlog, or stalled).

The checker (harness/analysis/checker.py) says *that* a workflow is unfinished (the engine still holds it
as pending) or lost; this module says, from the ledger and the engine's own record only, what it was doing:

- **its last ledger record** at or before the drain's end: the driver's ack, or a worker's last step or stage
  record (``ev``, ``src``, ``ns``), and its **idle time** at the drain's end (drain end minus that record);
- whether **any step ever started** (a ``step_start`` or a stage start in the ledger);
- **the engine's record** as the adapter reported it (``EngineRecord.status`` and ``detail``);
- its **claim**: ``claimed`` when a worker took it (a step started per the ledger; else the record's
  ``detail.claimed`` is true or its ``detail.dequeued_by`` names a worker), ``queued`` when the record says
  it waits in the engine's queue (``detail.claimed`` false: never claimed, or put back by a recovery after a
  step ran), ``unknown``
  when neither the ledger nor the record can tell (an adapter that does not report ``claimed``);
- **records in the drain**: how many ledger records of it fall between the load's end (the driver's last
  ``load_end`` record) and the drain's end (its ``drain_end``; for a run without one, interrupted, the
  history's last record); None when the history has no ``load_end``.

The state of an unfinished workflow (``STATES``), from that evidence only:

- ``queued``: the engine reports it still waiting in its queue, never claimed by a worker (a backlog);
- ``stalled``: claimed, no ledger record of it from the load's end to the drain's end, and no stage of it
  due to run past the drain's end (nothing ran it during the whole drain: a claim the worker dropped, or a
  retry waiting on a timeout longer than the drain);
- ``in_progress``: claimed, and it moved during the drain (ledger records after the load's end: its idle time
  says how long ago it last moved), or its last record opened a stage due to end after the drain's end (a
  step whose drawn ``duration_s`` outlasts the drain, a timer due later);
- ``unknown``: the claim is unknown and no step started, or the history has no ``load_end``.

Pure: a function of the history, the checker's traces and the reconcile records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.analysis.checker import WorkflowTrace
from harness.contract import EngineRecord

STATES = ("queued", "stalled", "in_progress", "unknown")
# driver records that are not the workflow doing anything (its ``ack`` is its last record when nothing ran it,
# but never counts as moving in the drain: only a worker's records do)
NOT_ACTIVITY = ("invoke", "signal_sent", "event_produced")
# the record's own name for its status, and the worker or executor holding it, first found wins (an adapter
# names them in its detail; a record without them is shown by its EngineRecord.status only)
STATUS_KEYS = ("dbos_status", "status", "restate_status", "absurd_state", "state")
HOLDER_KEYS = ("dequeued_by", "executor_id", "claimed_by")  # the first two of them


@dataclass(frozen=True)
class Bounds:
    """The run's phases as the driver recorded them, wall-clock ns (None: no such record)."""

    load_start_ns: int | None
    load_end_ns: int | None  # the last ``load_end``
    drain_end_ns: int | None  # the last ``drain_end``, else the history's last record (a run stopped before)


def bounds(events: list[dict[str, Any]]) -> Bounds:
    load_start = load_end = drain_end = None
    for r in events:
        ev = r["ev"]
        if ev == "load_start" and load_start is None:
            load_start = r["ns"]
        elif ev == "load_end":
            load_end = r["ns"]
        elif ev == "drain_end":
            drain_end = r["ns"]
    if drain_end is None and events:
        drain_end = events[-1]["ns"]
    return Bounds(load_start, load_end, drain_end)


def claim(step_started: bool, record: EngineRecord | None) -> tuple[str, str]:
    """(``claimed`` / ``queued`` / ``unknown``, its source: ``ledger``, ``engine`` or ``none``)."""
    detail = record.detail if record is not None else {}
    said = detail.get("claimed")
    if said is False:  # the engine holds it in its queue now, even if a step ran before (put back)
        return "queued", "engine"
    if step_started:
        return "claimed", "ledger"
    if said is True or detail.get("dequeued_by"):
        return "claimed", "engine"
    return "unknown", "none"


def open_until_ns(record: dict[str, Any] | None) -> int | None:
    """When the stage a workflow's last record opened is due to end: a ``step_start``'s start plus its drawn
    ``duration_s``, a ``timer_set``'s ``due_ns``; None for any other record."""
    if record is None:
        return None
    if record["ev"] == "step_start" and isinstance(record.get("duration_s"), int | float):
        return int(record["ns"] + record["duration_s"] * 1e9)
    if record["ev"] == "timer_set" and isinstance(record.get("due_ns"), int):
        return int(record["due_ns"])
    return None


def state_of(claimed: str, records_in_drain: int | None, open_past_drain: bool = False) -> str:
    """One of STATES, from the claim, the ledger's records in the drain and whether a stage of it was due
    to run past the drain's end."""
    if claimed == "queued":
        return "queued"
    if claimed == "unknown" or records_in_drain is None:
        return "unknown"
    return "in_progress" if records_in_drain or open_past_drain else "stalled"


def engine_status(record: EngineRecord | None) -> str:
    """The engine's own name for the record's status (``PENDING``), else its EngineRecord status."""
    if record is None:
        return "no record"
    for key in STATUS_KEYS:
        if isinstance(record.detail.get(key), str):
            return str(record.detail[key])
    return record.status


def holder(record: EngineRecord | None) -> str | None:
    """The worker the record says holds the workflow (``dequeued_by``), with the engine's own name for it
    (``worker:1 (durabench-x-w1)``), or that name alone; None when the record does not say."""
    if record is None:
        return None
    names = list(dict.fromkeys(str(record.detail[k]) for k in HOLDER_KEYS if record.detail.get(k)))
    if not names:
        return None
    return f"{names[0]} ({names[1]})" if len(names) > 1 else names[0]


def evidence(events: list[dict[str, Any]], trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord],
             wfs: list[str], *, classify: bool = True) -> dict[str, dict[str, Any]]:
    """Per workflow id of ``wfs``: its evidence (module docstring), and with ``classify`` its ``state``.
    ``wfs`` must be accepted workflows (in ``trs``)."""
    if not wfs:
        return {}
    b = bounds(events)
    load_end, drain_end = b.load_end_ns, b.drain_end_ns

    def since_load_start(ns: Any) -> float | None:
        return round((int(ns) - b.load_start_ns) / 1e9, 3) if isinstance(ns, int) and b.load_start_ns else None

    wanted = set(wfs)
    last: dict[str, dict[str, Any]] = {}
    in_drain: Counter[str] = Counter()
    for r in events:
        wf = r.get("wf")
        if wf not in wanted or r["ev"] in NOT_ACTIVITY:
            continue
        ns = r["ns"]
        if drain_end is not None and ns > drain_end:
            continue
        last[wf] = r  # events are in time order
        if load_end is not None and ns >= load_end and r["ev"] != "ack":
            in_drain[wf] += 1
    out: dict[str, dict[str, Any]] = {}
    for wf in sorted(wanted):
        tr = trs[wf]
        record = engine.get(wf)
        started = tr.first_start_ns() is not None
        claimed, source = claim(started, record)
        rec = last.get(wf)
        n_drain = in_drain[wf] if load_end is not None else None
        until = open_until_ns(rec)
        open_past = until is not None and drain_end is not None and until > drain_end
        ev: dict[str, Any] = {
            "last_record": ({"ev": rec["ev"], "src": rec.get("src"), "ns": rec["ns"], "s": since_load_start(rec["ns"])}
                            if rec else None),
            "idle_s": round((drain_end - rec["ns"]) / 1e9, 3) if rec and drain_end is not None else None,
            "step_started": started,
            "records_in_drain": n_drain,
            "open_past_drain": open_past,
            "claim": claimed,
            "claim_source": source,
            "engine_status": engine_status(record),
            "held_by": holder(record),
            # when a worker took it off the queue, per the engine (``dequeued_ns``), seconds from the load start
            "claimed_s": since_load_start(record.detail.get("dequeued_ns")) if record is not None else None,
            "engine": {"status": record.status, "detail": record.detail} if record is not None else None,
        }
        if classify:
            ev["state"] = state_of(claimed, n_drain, open_past)
        out[wf] = ev
    return out


def by_state(unfinished: dict[str, dict[str, Any]]) -> dict[str, int]:
    """summary.json ``unfinished_by_state``: how many unfinished workflows are in each of STATES."""
    counts = Counter(e["state"] for e in unfinished.values())
    return {s: counts.get(s, 0) for s in STATES}


def groups(unfinished: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """summary.json ``unfinished_groups``: the unfinished workflows grouped by state, holder, engine status
    and whether a step started, each with its count and its idle time at the drain's end (min, max), the
    largest group first."""
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for e in unfinished.values():
        key = (e["state"], e["claim"], e["held_by"], e["engine_status"], e["step_started"])
        grouped.setdefault(key, []).append(e)
    out = []
    for (state, claimed, held_by, status, started), members in grouped.items():
        idle = [e["idle_s"] for e in members if e["idle_s"] is not None]
        claimed_at = [e["claimed_s"] for e in members if e.get("claimed_s") is not None]
        out.append({"state": state, "count": len(members), "claim": claimed, "held_by": held_by,
                    "engine_status": status, "step_started": started,
                    "idle_s_min": min(idle) if idle else None, "idle_s_max": max(idle) if idle else None,
                    "claimed_s_min": min(claimed_at) if claimed_at else None,
                    "claimed_s_max": max(claimed_at) if claimed_at else None})
    return sorted(out, key=lambda g: (-g["count"], STATES.index(g["state"]), str(g["held_by"])))


def describe(group: dict[str, Any]) -> str:
    """One group as the report says it: ``2 stalled (claimed by worker:1 as PENDING, no step started, idle 39 s
    at the drain's end)``."""
    state, claimed, status = group["state"], group.get("claim"), group["engine_status"]
    if state == "queued":
        parts = [f"waiting in the engine's queue as {status}"]
    elif claimed == "claimed":
        who = f" by {group['held_by']}" if group["held_by"] else ""
        at = group.get("claimed_s_min"), group.get("claimed_s_max")
        when = f" at {_span(at[0], at[1], 1)} s" if at[0] is not None and at[1] is not None else ""
        parts = [f"claimed{who}{when} as {status}"]
        if state == "unknown":
            parts.append("the history has no load end to judge the drain by")
    else:
        parts = [f"{status}, whether a worker claimed it the engine's record does not say"]
    parts.append("a step started" if group["step_started"] else "no step started")
    lo, hi = group["idle_s_min"], group["idle_s_max"]
    if lo is not None and hi is not None:
        parts.append(f"idle {_span(lo, hi, 0)} s at the drain's end")
    return f"{group['count']} {state.replace('_', ' ')} ({', '.join(parts)})"


def _span(lo: float, hi: float, digits: int) -> str:
    a, b = f"{lo:.{digits}f}", f"{hi:.{digits}f}"
    return a if a == b else f"{a}-{b}"
