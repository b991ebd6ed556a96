"""Every metric durabench reports, defined once (the report cites these definitions).

All inputs are wall-clock nanoseconds from the history; histograms record microseconds and
summaries report milliseconds (fields end in ``_ms``), seconds (``_s``) or rates (``_per_s``).

- **measured window**: from the end of the warmup to the end of the load (for a run interrupted
  part-way, to its last record; from the load start if it stopped during the warmup).
- **throughput_per_s**: *verified* completions (every step of the workflow ended per the ledger)
  whose durable completion (as the engine records it, else the ledger's last step end) falls in
  the measured window, divided by the window length; ``steps_per_s`` the same for step ends.
  **engine_claimed_throughput_per_s**: the same for the workflows the engine's own store records as
  completed (whatever the ledger says); None when the engine was not asked. Reports show both when
  they differ (an engine that claims a workflow whose step never ran).
- **e2e_latency**: durable completion (engine's timestamp) minus the *intended* start, for
  workflows whose intended start is in the measured window (no coordinated omission).
- **submit_latency**: acknowledgement of the submit minus the time it was sent.
- **pickup_latency**: first step start minus the time the submit was sent.
- **step_overhead**: (e2e - the summed duration of each step's final execution) / steps: the
  orchestration cost per step, including queueing (only for workflows whose every stage is a step:
  a program with sleeps, signals or parallel stages has none).
- **pacer_lateness**: actual send time minus intended time (the driver's own delay).
- **achieved_rate**: submissions actually sent in the measured window / its length.
- **driver_fell_behind**: the achieved submission rate is below 95% of the offered rate, or p99 of
  the pacer's lateness exceeds ``PACER_LATE_S`` (100 ms);
  **engine_fell_behind**: evidence of a backlog (the engine did not keep up; its latency then grows
  with the run's length): work in flight grew over the measured window (workflows sent and not yet
  complete, counting only workflows that completed at all, grew by more than 10% of those submitted
  in the window, i.e. fewer than 90% as many of them completed in it as were submitted), or latency
  rose over it (the p50 end-to-end latency of the last quarter of the window is more than twice
  that of the first quarter and higher by more than 5% of the window's length). Workflows that never
  completed (lost, refused, unknown) are no evidence of a backlog: they are reported as losses.
  Neither are workflows a fault caught in flight (they wait on recovery). With faults in the window
  the growth may still be recovery (a consumer group rebalancing, a queue draining after a restart):
  ``engine_fell_behind`` is then false and the report says the evidence cannot tell the two apart.
  ``backlog`` holds the evidence.
- **recovery**, per fault: affected workflows are those not complete at the fault whose latest
  step record before it came from a targeted worker (worker faults), or every workflow submitted
  before the fault healed and not complete when it began (store and link faults). A workflow with no
  step started before a worker fault is affected too when the engine's own store records that a
  targeted worker dequeued it (``EngineRecord.detail``: ``dequeued_by`` a targeted worker, and
  ``dequeued_ns`` at or before the fault, or ``start_attempts`` above 1 for a workflow sent before
  it): a worker killed between dequeue and first step; ``affected_by_dequeue`` counts them.
  ``first_progress_s``: fault start to the first step start of an affected workflow after it (or
  its completion, for one that completed with no further step: its last step ended while the kill was
  landing); ``resume_delay_s``: that delay per workflow (p50/p99/max); ``all_done_s``: fault start to the
  last affected workflow's completion;
  ``throughput_recovered_s``: fault start to the first 1-s bucket at or above 90% of the median
  pre-fault throughput after the dip (0 if it never dipped); ``affected_unfinished``: affected
  workflows that never completed (lost to this fault); ``extra_step_executions`` and
  ``replayed_completed_steps``: re-executions that started between this fault and the next.
"""

from __future__ import annotations

import base64
import bisect
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.analysis.checker import Rerun, WorkflowTrace, reexecutions
from harness.contract import EngineRecord

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
HIST_MAX_US = 3_600_000_000  # one hour
HIST_DIGITS = 3
PACER_LATE_S = 0.1  # the driver fell behind when p99 of its send lateness exceeds this
DIP_HORIZON_S = 5  # a throughput dip counts when it starts within this many seconds of the fault
BACKLOG_GROWTH = 0.1  # in-flight work growing by more than this share of the window's submissions
BACKLOG_MIN_SAMPLE = 10  # sends after the fill-up below which in-flight growth is not judged
LATENCY_MIN_SAMPLE = 5  # completions per quarter below which the latency rise is not judged
LATENCY_RISE_RATIO = 2.0  # last-quarter p50 e2e latency above this multiple of the first quarter's ...
LATENCY_RISE_WINDOW = 0.05  # ... and higher by more than this share of the window's length
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
    out: dict[str, float | int | None] = {"count": n, "mean": round(mean_value(hist) / 1000, 3)}
    for name, pct in PERCENTILES.items():
        out[name] = round(hist.get_value_at_percentile(pct) / 1000, 3)
    out["max"] = round(hist.get_max_value() / 1000, 3)
    return out


def _us(ns: int) -> int:
    return max(1, min(ns // 1000, HIST_MAX_US))


def record_all(hist: HdrHistogram, values: list[int]) -> None:
    """``hist.record_value(v)`` for every value, in bulk: the same counts, total, min and max (the bucket index
    is HdrHistogram's own formula; tests/unit/test_metrics.py checks both agree), ~10x faster for the
    hundreds of thousands of latencies of a long run."""
    if not values:
        return
    counts, n_counts = hist.counts, hist.counts_len
    mask, unit, half_mag, half = (hist.sub_bucket_mask, hist.unit_magnitude, hist.sub_bucket_half_count_magnitude,
                                  hist.sub_bucket_half_count)
    added, lo, hi = 0, hist.min_value, hist.max_value
    for value, count in Counter(values).items():
        if value < 0:
            continue
        bucket = (value | mask).bit_length() - unit - (half_mag + 1)
        index = ((bucket + 1) << half_mag) + (value >> (bucket + unit)) - half
        if index < 0 or index >= n_counts:
            continue
        counts[index] += count
        added += count
        lo, hi = min(lo, value), max(hi, value)
    hist.total_count += added
    hist.min_value, hist.max_value = lo, hi


def mean_value(hist: HdrHistogram) -> float:
    """``hist.get_mean_value()`` (each count at the middle of its bucket) without its slow iterator."""
    if not hist.total_count:
        return 0.0
    total = 0
    median_equiv, value_at = hist._hdr_median_equiv_value, hist.get_value_from_index
    for index, count in enumerate(hist.counts[: hist.encoder.payload.counts_len]):
        if count:
            total += count * median_equiv(value_at(index))
    return float(total) / hist.total_count


def completion_ns(tr: WorkflowTrace, record: EngineRecord | None, steps: int) -> int | None:
    if record is not None and record.status == "completed" and record.completed_ns is not None:
        return record.completed_ns
    return tr.ledger_completed_ns(steps)


def verified_completion_ns(tr: WorkflowTrace, record: EngineRecord | None, steps: int) -> int | None:
    """The completion time of a workflow whose every step ended per the ledger (the engine's timestamp
    where it has one); None for a workflow the ledger does not show complete, whatever the engine says."""
    if tr.ledger_completed_ns(steps) is None:
        return None
    return completion_ns(tr, record, steps)


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


def truncated(win: Window, last_ns: int) -> Window:
    """The window of a run interrupted at ``last_ns`` (its last record): it ends there; a run stopped during
    the warmup is measured from the load start."""
    if last_ns >= win.end_ns:
        return win
    start = win.start_ns if last_ns > win.start_ns else win.load_start_ns
    return Window(win.load_start_ns, start, max(last_ns, start + 1))


def latency_histograms(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
                       win: Window) -> dict[str, HdrHistogram]:
    values: dict[str, list[int]] = {name: [] for name in HISTOGRAMS}
    e2e_us, submit, pickup, overhead, lateness = (values[k] for k in HISTOGRAMS)
    for wf, tr in trs.items():
        if tr.intended_ns is None or not win.contains(tr.intended_ns):
            continue
        if tr.sent_ns is not None:
            lateness.append(_us(max(0, tr.sent_ns - tr.intended_ns)))
            if tr.ack_ns is not None and tr.outcome == "ok":
                submit.append(_us(tr.ack_ns - tr.sent_ns))
            first = tr.first_start_ns()
            if first is not None:
                pickup.append(_us(max(0, first - tr.sent_ns)))
        done = completion_ns(tr, engine.get(wf), steps)
        if done is None or tr.ledger_completed_ns(steps) is None:
            continue
        e2e = done - tr.intended_ns
        e2e_us.append(_us(e2e))
        work = 0
        for step in range(steps):
            last = None  # the step's final execution: the latest-started one that ended
            for e in tr.steps.get(step, ()):
                if e.end_ns is not None and (last is None or e.start_ns > last.start_ns):
                    last = e
            if last is None or last.end_ns is None:  # a program's sleep / wait / parallel stage: no step work
                work = -1
                break
            work += last.end_ns - last.start_ns
        if work >= 0:  # step overhead: chains of steps only
            overhead.append(_us(max(0, (e2e - work) // steps)))
    hists = {name: new_histogram() for name in HISTOGRAMS}
    for name, hist in hists.items():
        record_all(hist, values[name])
    return hists


def throughput(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
               events: list[dict[str, Any]], win: Window) -> dict[str, Any]:
    completed_in = claimed_in = 0
    for wf, tr in trs.items():
        if tr.intended_ns is None:
            continue
        record = engine.get(wf)
        if win.contains(verified_completion_ns(tr, record, steps)):
            completed_in += 1
        if record is not None and record.status == "completed" and win.contains(completion_ns(tr, record, steps)):
            claimed_in += 1
    step_ends = sum(1 for r in events if r["ev"] == "step_end" and win.contains(r["ns"]))
    sent = sum(1 for tr in trs.values() if win.contains(tr.sent_ns))
    late = sorted(tr.sent_ns - tr.intended_ns for tr in trs.values()
                  if tr.sent_ns is not None and tr.intended_ns is not None and win.contains(tr.intended_ns))
    late_p99_s = late[min(len(late) - 1, int(0.99 * len(late)))] / 1e9 if late else 0.0
    start = next(r for r in events if r["ev"] == "load_start")
    offered = start["rate"] if start["mode"] == "open" else None
    achieved = sent / win.seconds  # by actual send time: a late pacer shows here
    ends = {r["fault_id"]: r["ns"] for r in events if r["ev"] == "fault_end"}
    faults = [(r["ns"], ends.get(r["fault_id"], r["ns"])) for r in events if r["ev"] == "fault_start"]
    evidence = backlog(trs, engine, steps, win, faults)
    return {
        "throughput_per_s": round(completed_in / win.seconds, 3),
        "engine_claimed_throughput_per_s": round(claimed_in / win.seconds, 3) if engine else None,
        "steps_per_s": round(step_ends / win.seconds, 3),
        "offered_rate_per_s": offered,
        "achieved_rate_per_s": round(achieved, 3),
        "load_mode": start["mode"],
        "measured_window_s": round(win.seconds, 3),
        "driver_fell_behind": bool(offered and (achieved < 0.95 * offered or late_p99_s > PACER_LATE_S)),
        # with faults in the window, growth may be recovery as well as a backlog: said so, not claimed
        "engine_fell_behind": (evidence["in_flight_grew"] or evidence["latency_rose"]) and not faults,
        "backlog": evidence,
    }


def backlog(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
            win: Window, faults: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """The evidence behind ``engine_fell_behind``, from the workflows that completed (verified) only, and
    of those only the ones no fault caught in flight (``faults``: (start, end) ns of each fault): a
    workflow held up by a kill or a store restart waits on recovery, which the recovery figures measure;
    it is not evidence that the engine cannot keep up with the offered load."""
    sent: list[int] = []
    done: list[int] = []
    latencies: list[tuple[int, int]] = []  # (intended start, e2e ns) of completions started in the window
    submitted_in = excluded = 0
    for wf, tr in trs.items():
        if tr.sent_ns is None:
            continue
        finished = verified_completion_ns(tr, engine.get(wf), steps)
        if finished is None:
            continue  # lost, refused or unknown: a loss, not a backlog
        if any(tr.sent_ns <= end and finished >= start for start, end in faults or ()):
            excluded += 1
            continue
        sent.append(tr.sent_ns)
        done.append(finished)
        if win.contains(tr.sent_ns):
            submitted_in += 1
        if tr.intended_ns is not None and win.contains(tr.intended_ns):
            latencies.append((tr.intended_ns, finished - tr.intended_ns))
    sent.sort()
    done.sort()

    def in_flight(ns: int) -> int:
        return bisect.bisect_right(sent, ns) - bisect.bisect_right(done, ns)

    quarter = (win.end_ns - win.start_ns) // 4
    first = sorted(e2e for at, e2e in latencies if at < win.start_ns + quarter)
    last = sorted(e2e for at, e2e in latencies if at >= win.end_ns - quarter)
    first_p50 = first[len(first) // 2] if first else None
    last_p50 = last[len(last) // 2] if last else None
    # In-flight work fills up until the longest workflow started at the load's start has ended (Little's
    # law: rate x latency in steady state); a warmup shorter than the workflows' latencies must not read
    # as a backlog, so the in-flight growth is measured from the longest first-quarter latency into the
    # window, and judged only when a quarter of the window at least remains after that.
    base_ns = min(win.start_ns + (first[-1] if first else 0), win.end_ns)
    at_start, at_end = in_flight(base_ns), in_flight(win.end_ns)
    submitted_after = bisect.bisect_right(sent, win.end_ns) - bisect.bisect_right(sent, base_ns)
    judged = bool(first) and win.end_ns - base_ns >= quarter and submitted_after >= BACKLOG_MIN_SAMPLE
    rose = (len(first) >= LATENCY_MIN_SAMPLE and len(last) >= LATENCY_MIN_SAMPLE and first_p50 is not None
            and last_p50 is not None and last_p50 > LATENCY_RISE_RATIO * first_p50
            and last_p50 - first_p50 > LATENCY_RISE_WINDOW * (win.end_ns - win.start_ns))
    return {
        "in_flight_measured_from_s": round((base_ns - win.start_ns) / 1e9, 3),
        "in_flight_at_window_start": at_start,
        "in_flight_at_window_end": at_end,
        "submitted_in_window": submitted_in,
        "in_flight_judged": judged,
        "in_flight_grew": judged and at_end - at_start > BACKLOG_GROWTH * submitted_after,
        "e2e_p50_first_quarter_ms": None if first_p50 is None else round(first_p50 / 1e6, 3),
        "e2e_p50_last_quarter_ms": None if last_p50 is None else round(last_p50 / 1e6, 3),
        "latency_rose": rose,
        "excluded_caught_by_faults": excluded,
        "faults_in_window": len(faults or ()),
    }


def completions_per_second(trs: dict[str, WorkflowTrace], engine: dict[str, EngineRecord], steps: int,
                           origin_ns: int) -> list[int]:
    """Verified completions per 1-s bucket from ``origin_ns`` (the load start)."""
    buckets: list[int] = []
    for wf, tr in trs.items():
        ns = verified_completion_ns(tr, engine.get(wf), steps)
        if ns is None or ns < origin_ns:
            continue
        i = int((ns - origin_ns) // 1_000_000_000)
        while len(buckets) <= i:
            buckets.append(0)
        buckets[i] += 1
    return buckets


def recovery(fault: dict[str, Any], fault_end: dict[str, Any] | None, trs: dict[str, WorkflowTrace],
             engine: dict[str, EngineRecord], steps: int, win: Window, until_ns: int | None = None,
             reruns: dict[str, list[Rerun]] | None = None, buckets: list[int] | None = None) -> dict[str, Any]:
    """Recovery figures of one fault; re-executions are attributed to it from its start to ``until_ns``
    (the next fault's start, or the end of the history). ``reruns`` (every trace's re-executions) and
    ``buckets`` (completions_per_second from the load start) may be given precomputed: they do not
    depend on the fault."""
    start = fault["ns"]
    targets = set(fault.get("workers") or [])
    cutoff = fault_end["ns"] if fault_end is not None else start
    affected: list[WorkflowTrace] = []
    by_dequeue = 0
    reach = start if targets else cutoff  # a workflow sent later cannot be hit (its steps start after its send)
    for wf, tr in trs.items():
        if tr.sent_ns is not None and tr.sent_ns > reach:
            continue
        record = engine.get(wf)
        done = completion_ns(tr, record, steps)
        if done is not None and done <= start:
            continue
        if targets:  # a worker fault hits the workflows whose latest step ran on a targeted worker
            latest: tuple[int, str] | None = None
            for execs in tr.steps.values():
                for e in execs:
                    if e.start_ns <= start and (latest is None or (e.start_ns, e.src) > latest):
                        latest = (e.start_ns, e.src)
            if latest is not None:
                if latest[1] in targets:
                    affected.append(tr)
            elif _dequeued_by_target(tr, record, targets, start):
                affected.append(tr)  # taken off the queue by the killed worker before its first step
                by_dequeue += 1
        elif tr.sent_ns is not None and tr.sent_ns <= cutoff and tr.outcome in ("ok", "unknown"):
            affected.append(tr)  # a store or link fault hits every workflow in flight until it heals
    delays, finishes = [], []
    for tr in affected:
        after = [e.start_ns for execs in tr.steps.values() for e in execs if e.start_ns > start]
        done = verified_completion_ns(tr, engine.get(tr.wf), steps)
        if after:
            delays.append((min(after) - start) / 1e9)
        elif done is not None:  # completed with no further step: its last step ended in the moments the
            delays.append((done - start) / 1e9)  # kill took to land (the fault's time is taken before it)
        finishes.append(None if done is None else (done - start) / 1e9)
    unfinished = sum(1 for f in finishes if f is None)
    dup, replayed = 0, 0
    if reruns is None:
        reruns = {wf: reexecutions(tr, steps, rec.completed_ns if (rec := engine.get(wf)) else None)
                  for wf, tr in trs.items()}
    for found in reruns.values():
        for rerun in found:
            if start <= rerun.start_ns and (until_ns is None or rerun.start_ns < until_ns):
                dup += 1
                replayed += rerun.replayed
    if buckets is None:
        buckets = completions_per_second(trs, engine, steps, win.load_start_ns)
    return {
        "fault_id": fault["fault_id"],
        "kind": fault["kind"],
        "target": fault["target"],
        "start_s": round((start - win.load_start_ns) / 1e9, 3),
        "end_s": None if fault_end is None else round((fault_end["ns"] - win.load_start_ns) / 1e9, 3),
        "affected": len(affected),
        "affected_by_dequeue": by_dequeue,
        "affected_unfinished": unfinished,
        "first_progress_s": round(min(delays), 3) if delays else None,
        "resume_delay_s": _spread(delays),
        "all_done_s": round(max(f for f in finishes if f is not None), 3) if finishes and not unfinished else None,
        "throughput_recovered_s": _throughput_recovered(buckets, win, start),
        "extra_step_executions": dup,
        "replayed_completed_steps": replayed,
        "affected_ids": sorted(tr.wf for tr in affected),
        "unfinished_ids": sorted(tr.wf for tr, f in zip(affected, finishes, strict=True) if f is None),
    }


def _dequeued_by_target(tr: WorkflowTrace, record: EngineRecord | None, targets: set[str], fault_ns: int) -> bool:
    """The engine's own store says a targeted worker took this workflow off the queue before the fault: its
    recorded dequeue is at or before the fault, or it was started more than once and sent before the fault
    (the recorded dequeue is then the restarted worker's)."""
    if record is None or tr.sent_ns is None or tr.sent_ns > fault_ns or tr.outcome not in ("ok", "unknown"):
        return False
    by, at, attempts = (record.detail.get(k) for k in ("dequeued_by", "dequeued_ns", "start_attempts"))
    if by not in targets:
        return False
    return (isinstance(at, int) and at <= fault_ns) or (isinstance(attempts, int) and attempts > 1)


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)

    return {"p50": pct(50), "p99": pct(99), "max": round(ordered[-1], 3)}


def _throughput_recovered(buckets: list[int], win: Window, fault_ns: int) -> float | None:
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
