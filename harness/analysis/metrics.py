"""Every metric durabench reports, defined once (the report cites these definitions).

All inputs are wall-clock nanoseconds from the history; histograms record microseconds and
summaries report milliseconds (fields end in ``_ms``), seconds (``_s``) or rates (``_per_s``).

- **measured window**: from the end of the warmup to the end of the load.
- **throughput_per_s**: workflows whose durable completion (as the engine records it) falls in
  the measured window, divided by the window length; ``steps_per_s`` the same for step ends.
- **e2e_latency**: durable completion (engine's timestamp) minus the *intended* start, for
  workflows whose intended start is in the measured window (no coordinated omission).
- **submit_latency**: acknowledgement of the submit minus the time it was sent.
- **pickup_latency**: first step start minus the time the submit was sent.
- **step_overhead**: (e2e - the summed duration of each step's final execution) / steps: the
  orchestration cost per step, including queueing.
- **pacer_lateness**: actual send time minus intended time (the driver's own delay).
- **achieved_rate**: submissions actually sent in the measured window / its length.
- **driver_fell_behind**: the achieved submission rate is below 95% of the offered rate, or p99 of
  the pacer's lateness exceeds ``PACER_LATE_S`` (100 ms);
  **engine_fell_behind**: fewer than 90% as many workflows completed in the measured window as were
  submitted in it (the engine did not keep up; its latency then grows with the run's length).
- **recovery**, per fault: affected workflows are those not complete at the fault whose latest
  step record before it came from a targeted worker (worker faults), or every workflow submitted
  before the fault healed and not complete when it began (store and link faults).
  ``first_progress_s``: fault start to the first step start of an affected workflow after it;
  ``resume_delay_s``: that delay per workflow (p50/p99/max); ``all_done_s``: fault start to the
  last affected workflow's completion;
  ``throughput_recovered_s``: fault start to the first 1-s bucket at or above 90% of the median
  pre-fault throughput after the dip (0 if it never dipped); ``affected_unfinished``: affected
  workflows that never completed (lost to this fault); ``extra_step_executions`` and
  ``replayed_completed_steps``: re-executions that started between this fault and the next.
"""

from __future__ import annotations

import base64
import statistics
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.analysis.checker import WorkflowTrace, reexecutions
from harness.contract import EngineRecord

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
HIST_MAX_US = 3_600_000_000  # one hour
HIST_DIGITS = 3
PACER_LATE_S = 0.1  # the driver fell behind when p99 of its send lateness exceeds this
DIP_HORIZON_S = 5  # a throughput dip counts when it starts within this many seconds of the fault
HISTOGRAMS = ("e2e_latency", "submit_latency", "pickup_latency", "step_overhead", "pacer_lateness")


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIST_MAX_US, HIST_DIGITS)


def encode(hist: HdrHistogram) -> str:
    return base64.b64encode(hist.encode()).decode() if hist.get_total_count() else ""


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(base64.b64decode(text)) if text else new_histogram()


def summarize_ms(hist: HdrHistogram) -> dict[str, float | int | None]:
    """count, mean, percentiles and max of a microsecond histogram, in milliseconds."""
    n = hist.get_total_count()
    if n == 0:
        return {"count": 0, "mean": None, **dict.fromkeys(PERCENTILES), "max": None}
    out: dict[str, float | int | None] = {"count": n, "mean": round(hist.get_mean_value() / 1000, 3)}
    for name, pct in PERCENTILES.items():
        out[name] = round(hist.get_value_at_percentile(pct) / 1000, 3)
    out["max"] = round(hist.get_max_value() / 1000, 3)
    return out


def _record(hist: HdrHistogram, ns: int | None) -> None:
    if ns is not None:
        hist.record_value(max(1, min(ns // 1000, HIST_MAX_US)))


def completion_ns(tr: WorkflowTrace, record: EngineRecord | None, steps: int) -> int | None:
    if record is not None and record.status == "completed" and record.completed_ns is not None:
        return record.completed_ns
    return tr.ledger_completed_ns(steps)


@dataclass
class Window:
    load_start_ns: int
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def contains(self, ns: int | None) -> bool:
        return ns is not None and self.start_ns <= ns < self.end_ns


def window(events: list[dict[str, Any]]) -> Window:
    start = next(r for r in events if r["ev"] == "load_start")
    begin = start["ns"] + start["warmup_ns"]
    return Window(start["ns"], begin, begin + start["duration_ns"])


def latency_histograms(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
                       win: Window) -> dict[str, HdrHistogram]:
    hists = {name: new_histogram() for name in HISTOGRAMS}
    for wf, tr in trs.items():
        if tr.intended_ns is None or not win.contains(tr.intended_ns):
            continue
        if tr.sent_ns is not None:
            _record(hists["pacer_lateness"], max(0, tr.sent_ns - tr.intended_ns))
            if tr.ack_ns is not None and tr.outcome == "ok":
                _record(hists["submit_latency"], tr.ack_ns - tr.sent_ns)
            first = tr.first_start_ns()
            if first is not None:
                _record(hists["pickup_latency"], max(0, first - tr.sent_ns))
        done = completion_ns(tr, engine.get(wf), steps)
        if done is None or tr.ledger_completed_ns(steps) is None:
            continue
        e2e = done - tr.intended_ns
        _record(hists["e2e_latency"], e2e)
        work = 0
        for step in range(steps):
            finished = [e for e in tr.steps[step] if e.end_ns is not None]
            last = max(finished, key=lambda e: e.start_ns)
            assert last.end_ns is not None
            work += last.end_ns - last.start_ns
        _record(hists["step_overhead"], max(0, (e2e - work) // steps))
    return hists


def throughput(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
               events: list[dict[str, Any]], win: Window) -> dict[str, Any]:
    done = [completion_ns(tr, engine.get(wf), steps) for wf, tr in trs.items() if tr.intended_ns is not None]
    completed_in = sum(1 for ns in done if win.contains(ns))
    step_ends = sum(1 for r in events if r["ev"] == "step_end" and win.contains(r["ns"]))
    invoked = sum(1 for tr in trs.values() if win.contains(tr.intended_ns))
    sent = sum(1 for tr in trs.values() if win.contains(tr.sent_ns))
    late = sorted(tr.sent_ns - tr.intended_ns for tr in trs.values()
                  if tr.sent_ns is not None and tr.intended_ns is not None and win.contains(tr.intended_ns))
    late_p99_s = late[min(len(late) - 1, int(0.99 * len(late)))] / 1e9 if late else 0.0
    start = next(r for r in events if r["ev"] == "load_start")
    offered = start["rate"] if start["mode"] == "open" else None
    achieved = sent / win.seconds  # by actual send time: a late pacer shows here
    return {
        "throughput_per_s": round(completed_in / win.seconds, 3),
        "steps_per_s": round(step_ends / win.seconds, 3),
        "offered_rate_per_s": offered,
        "achieved_rate_per_s": round(achieved, 3),
        "load_mode": start["mode"],
        "measured_window_s": round(win.seconds, 3),
        "driver_fell_behind": bool(offered and (achieved < 0.95 * offered or late_p99_s > PACER_LATE_S)),
        "engine_fell_behind": completed_in < 0.9 * invoked,
    }


def completions_per_second(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
                           origin_ns: int) -> list[int]:
    """Completed workflows per 1-s bucket from ``origin_ns`` (the load start)."""
    buckets: list[int] = []
    for wf, tr in trs.items():
        ns = completion_ns(tr, engine.get(wf), steps)
        if ns is None or ns < origin_ns:
            continue
        i = int((ns - origin_ns) // 1_000_000_000)
        while len(buckets) <= i:
            buckets.append(0)
        buckets[i] += 1
    return buckets


def recovery(fault: dict[str, Any], fault_end: dict[str, Any] | None, trs: dict[str, WorkflowTrace],
             engine: dict[str, EngineRecord], steps: int, win: Window, until_ns: int | None = None) -> dict[str, Any]:
    """Recovery figures of one fault; re-executions are attributed to it from its start to ``until_ns``
    (the next fault's start, or the end of the history)."""
    start = fault["ns"]
    targets = set(fault.get("workers") or [])
    cutoff = fault_end["ns"] if fault_end is not None else start
    affected: list[WorkflowTrace] = []
    for wf, tr in trs.items():
        done = completion_ns(tr, engine.get(wf), steps)
        if done is not None and done <= start:
            continue
        if targets:  # a worker fault hits the workflows whose latest step ran on a targeted worker
            before = [(e.start_ns, e.src) for execs in tr.steps.values() for e in execs if e.start_ns <= start]
            if before and max(before)[1] in targets:
                affected.append(tr)
        elif tr.sent_ns is not None and tr.sent_ns <= cutoff and tr.outcome in ("ok", "unknown"):
            affected.append(tr)  # a store or link fault hits every workflow in flight until it heals
    delays, finishes = [], []
    for tr in affected:
        after = [e.start_ns for execs in tr.steps.values() for e in execs if e.start_ns > start]
        if after:
            delays.append((min(after) - start) / 1e9)
        done = completion_ns(tr, engine.get(tr.wf), steps)
        finishes.append(None if done is None or tr.ledger_completed_ns(steps) is None else (done - start) / 1e9)
    unfinished = sum(1 for f in finishes if f is None)
    dup, replayed = 0, 0
    for wf, tr in trs.items():
        record = engine.get(wf)
        for rerun in reexecutions(tr, steps, record.completed_ns if record else None):
            if start <= rerun.start_ns and (until_ns is None or rerun.start_ns < until_ns):
                dup += 1
                replayed += rerun.replayed
    return {
        "fault_id": fault["fault_id"],
        "kind": fault["kind"],
        "target": fault["target"],
        "start_s": round((start - win.load_start_ns) / 1e9, 3),
        "end_s": None if fault_end is None else round((fault_end["ns"] - win.load_start_ns) / 1e9, 3),
        "affected": len(affected),
        "affected_unfinished": unfinished,
        "first_progress_s": round(min(delays), 3) if delays else None,
        "resume_delay_s": _spread(delays),
        "all_done_s": round(max(f for f in finishes if f is not None), 3) if finishes and not unfinished else None,
        "throughput_recovered_s": _throughput_recovered(trs, engine, steps, win, start),
        "extra_step_executions": dup,
        "replayed_completed_steps": replayed,
        "affected_ids": sorted(tr.wf for tr in affected),
        "unfinished_ids": sorted(tr.wf for tr, f in zip(affected, finishes, strict=True) if f is None),
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)

    return {"p50": pct(50), "p99": pct(99), "max": round(ordered[-1], 3)}


def _throughput_recovered(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
                          win: Window, fault_ns: int) -> float | None:
    buckets = completions_per_second(trs, engine, steps, win.load_start_ns)
    first_bucket = int((fault_ns - win.load_start_ns) // 1_000_000_000)
    warm = int((win.start_ns - win.load_start_ns) // 1_000_000_000)
    before = buckets[warm:first_bucket]
    if not before:
        return None
    target = 0.9 * statistics.median(before)
    horizon = range(first_bucket, min(len(buckets), first_bucket + DIP_HORIZON_S))
    dip = next((i for i in horizon if buckets[i] < target), None)
    if dip is None:
        return 0.0
    back = next((i for i in range(dip, len(buckets)) if buckets[i] >= target), None)
    if back is None:
        return None
    return round(max(0.0, (win.load_start_ns + back * 1_000_000_000 - fault_ns) / 1e9), 3)
