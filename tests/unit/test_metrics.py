from __future__ import annotations

from typing import Any

from harness.analysis import metrics
from harness.analysis.checker import check, traces
from harness.contract import EngineRecord
from tests.unit.history import MS, T0, History


def test_percentiles_are_lossless_enough_and_mergeable() -> None:
    a, b = metrics.new_histogram(), metrics.new_histogram()
    for v in range(1, 1001):
        (a if v % 2 else b).record_value(v * 1000)  # 1..1000 ms in us
    merged = metrics.decode(metrics.encode(a))
    merged.add(metrics.decode(metrics.encode(b)))
    s = metrics.summarize_ms(merged)
    assert s["count"] == 1000
    assert abs(s["p50"] - 500) <= 1 and abs(s["p99"] - 990) <= 1 and abs(s["max"] - 1000) <= 1
    assert metrics.summarize_ms(metrics.new_histogram())["p50"] is None


def test_latency_is_measured_from_intended_start_with_engine_completion() -> None:
    h = History(warmup_ms=0, duration_ms=1000)
    h.workflow("w", 100, steps=2, step_ms=10)  # steps end at 112 and 123 ms
    trs = traces(h.sorted())
    engine = {"w": EngineRecord("completed", T0 + 130 * MS)}
    hists = metrics.latency_histograms(trs, engine, 2, metrics.window(h.sorted()))
    assert abs(metrics.summarize_ms(hists["e2e_latency"])["p50"] - 30) < 0.1
    # overhead = (30 ms e2e - 20 ms of step work) / 2 steps
    assert abs(metrics.summarize_ms(hists["step_overhead"])["p50"] - 5) < 0.1
    assert abs(metrics.summarize_ms(hists["pickup_latency"])["p50"] - 2) < 0.1
    assert abs(metrics.summarize_ms(hists["submit_latency"])["p50"] - 1) < 0.1
    # without an engine timestamp the ledger's last step end is used
    hists = metrics.latency_histograms(trs, {}, 2, metrics.window(h.sorted()))
    assert abs(metrics.summarize_ms(hists["e2e_latency"])["p50"] - 23) < 0.1


def test_warmup_is_excluded() -> None:
    h = History(warmup_ms=500, duration_ms=1000)
    h.workflow("early", 100)
    h.workflow("late", 700)
    events = h.sorted()
    hists = metrics.latency_histograms(traces(events), {}, 2, metrics.window(events))
    assert hists["e2e_latency"].get_total_count() == 1


def test_throughput_counts_completions_in_the_window() -> None:
    h = History(warmup_ms=0, duration_ms=2000, rate=10)
    for i in range(20):
        h.workflow(f"w{i}", i * 100)
    events = h.sorted()
    tp = metrics.throughput(traces(events), {}, 2, events, metrics.window(events))
    assert tp["throughput_per_s"] == 10.0
    assert tp["achieved_rate_per_s"] == 10.0
    assert tp["steps_per_s"] == 20.0
    assert not tp["driver_fell_behind"]


def test_a_workflow_that_completes_as_the_kill_lands_made_progress() -> None:
    """The fault's time is taken before the kill lands: a workflow whose last step ends in between is
    affected (its latest step ran on the target) but needs no further step. Its completion is its
    progress, so first_progress_s is never missing while all_done_s is known (seen in CI: dbos-go, 4 ms)."""
    h = History(warmup_ms=0, duration_ms=10_000, rate=10)
    for i in range(50):
        h.workflow(f"steady{i}", i * 100, worker=1)
    h.submit("landing", 1000)
    h.step("landing", 0, 1002, 1010, worker=0, pid=100)
    h.step("landing", 1, 1400, 1504, worker=0, pid=100)  # ends 4 ms after the fault's timestamp
    h.add("fault_start", 1500, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0",
          workers=["worker:0"])
    h.add("fault_end", 2600, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0")
    events = h.sorted()
    fault = next(e for e in events if e["ev"] == "fault_start")
    end = next(e for e in events if e["ev"] == "fault_end")
    rec = metrics.recovery(fault, end, traces(events), {}, 2, metrics.window(events))
    assert rec["affected_ids"] == ["landing"] and rec["affected_unfinished"] == 0
    assert rec["first_progress_s"] == rec["all_done_s"] == 0.004


def test_recovery_after_a_worker_kill() -> None:
    h = History(warmup_ms=0, duration_ms=10_000, rate=10)
    for i in range(50):  # steady 10/s on worker 1
        h.workflow(f"steady{i}", i * 100, worker=1)
    h.submit("hit", 1000)
    h.step("hit", 0, 1002, None, worker=0, pid=100)  # in flight on worker:0 when it dies at 1500 ms
    h.add("fault_start", 1500, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0",
          workers=["worker:0"])
    h.add("fault_end", 2600, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0")
    h.step("hit", 0, 4500, 4510, worker=0, pid=200)
    h.step("hit", 1, 4511, 4520, worker=0, pid=200)
    events = h.sorted()
    trs = traces(events)
    fault = next(e for e in events if e["ev"] == "fault_start")
    end = next(e for e in events if e["ev"] == "fault_end")
    rec = metrics.recovery(fault, end, trs, {}, 2, metrics.window(events))
    assert rec["affected"] == 1 and rec["affected_ids"] == ["hit"]
    assert rec["first_progress_s"] == 3.0
    assert rec["all_done_s"] == 3.02
    assert rec["resume_delay_s"]["max"] == 3.0
    assert (rec["start_s"], rec["end_s"]) == (1.5, 2.6)
    assert rec["throughput_recovered_s"] == 0.0  # worker 1 carried on at full rate


def test_bulk_recording_matches_hdrhistogram() -> None:
    import random

    rng = random.Random(7)
    values = [1, 2, 2047, 2048, 2049, 4095, 4096, metrics.HIST_MAX_US, metrics.HIST_MAX_US - 1]
    values += [rng.randint(1, 10**rng.randint(1, 9)) for _ in range(20_000)]
    one, bulk = metrics.new_histogram(), metrics.new_histogram()
    for v in values:
        one.record_value(v)
    metrics.record_all(bulk, values)
    assert metrics.encode(bulk) == metrics.encode(one)
    assert (bulk.get_total_count(), bulk.get_min_value(), bulk.get_max_value()) == (
        one.get_total_count(), one.get_min_value(), one.get_max_value())
    assert metrics.mean_value(bulk) == one.get_mean_value()
    assert metrics.summarize_ms(bulk) == metrics.summarize_ms(one)


def _steady(h: History, n: int, every_ms: float, latency_ms: float, prefix: str = "w") -> None:
    for i in range(n):
        at = i * every_ms
        h.submit(f"{prefix}{i}", at)
        h.step(f"{prefix}{i}", 0, at + latency_ms - 10, at + latency_ms - 5)
        h.step(f"{prefix}{i}", 1, at + latency_ms - 4, at + latency_ms)


def test_a_lossy_engine_without_backlog_is_not_flagged_as_fell_behind() -> None:
    h = History(warmup_ms=0, duration_ms=10_000, rate=10)
    _steady(h, 100, 100, 30)
    for i in range(40):  # 40% of the load is acknowledged and never runs: lost, not a backlog
        h.submit(f"lost{i}", i * 250 + 50)
    h.submit("refused", 5000, outcome="fail")
    events = h.sorted()
    trs = traces(events)
    tp = metrics.throughput(trs, {}, 2, events, metrics.window(events))
    assert not tp["engine_fell_behind"]
    assert not tp["backlog"]["in_flight_grew"] and not tp["backlog"]["latency_rose"]
    assert tp["throughput_per_s"] == 10.0
    verdict = check(trs, 2, {})
    assert verdict.counts["lost"] == 40 and verdict.counts["failed"] == 1  # the losses are reported as losses


def test_a_backlogged_engine_is_flagged_by_growing_in_flight_work() -> None:
    h = History(warmup_ms=0, duration_ms=10_000, rate=20)
    for i in range(200):  # 20/s offered, served at 10/s: each waits behind the ones before it
        at = i * 50
        done = 100 + i * 100
        h.submit(f"w{i}", at)
        h.step(f"w{i}", 0, done - 20, done - 15)
        h.step(f"w{i}", 1, done - 10, done)
    events = h.sorted()
    tp = metrics.throughput(traces(events), {}, 2, events, metrics.window(events))
    assert tp["engine_fell_behind"]
    b = tp["backlog"]
    assert b["in_flight_grew"] and b["in_flight_at_window_end"] - b["in_flight_at_window_start"] > 50
    assert b["latency_rose"]  # the last quarter waits ~7.5 s longer than the first


def test_in_flight_filling_up_over_a_long_latency_is_not_a_backlog() -> None:
    # steady state: 4/s of workflows that take 8 s each (Little's law: 32 in flight), with no warmup,
    # so in-flight work rises from 0 to 32 during the first 8 s of the window without any backlog
    h = History(warmup_ms=0, duration_ms=30_000, rate=4)
    _steady(h, 120, 250, 8_000)
    events = h.sorted()
    tp = metrics.throughput(traces(events), {}, 2, events, metrics.window(events))
    b = tp["backlog"]
    assert b["in_flight_measured_from_s"] >= 7.9  # one median latency into the window
    assert not b["in_flight_grew"] and not b["latency_rose"] and not tp["engine_fell_behind"]


def test_rising_latency_alone_is_evidence_of_a_backlog() -> None:
    h = History(warmup_ms=0, duration_ms=20_000, rate=10)
    for i in range(200):  # every workflow completes, but later ones wait longer (latency 50 ms -> ~4 s)
        at = i * 100
        latency = 50 + i * 20
        h.submit(f"w{i}", at)
        h.step(f"w{i}", 0, at + latency - 10, at + latency - 5)
        h.step(f"w{i}", 1, at + latency - 4, at + latency)
    events = h.sorted()
    tp = metrics.throughput(traces(events), {}, 2, events, metrics.window(events))
    assert tp["backlog"]["latency_rose"] and tp["engine_fell_behind"]
    assert tp["backlog"]["e2e_p50_last_quarter_ms"] > 2 * tp["backlog"]["e2e_p50_first_quarter_ms"]


def test_throughput_counts_verified_completions_and_names_the_engines_claim() -> None:
    h = History(warmup_ms=0, duration_ms=2000, rate=10)
    for i in range(20):
        h.workflow(f"w{i}", i * 100)
    h.submit("claimed", 500)
    h.step("claimed", 0, 510, 520)  # step 1 never ran, yet the engine records the workflow complete
    events = h.sorted()
    engine = {f"w{i}": EngineRecord("completed", T0 + (i * 100 + 30) * MS) for i in range(20)}
    engine["claimed"] = EngineRecord("completed", T0 + 600 * MS)
    trs = traces(events)
    tp = metrics.throughput(trs, engine, 2, events, metrics.window(events))
    assert tp["throughput_per_s"] == 10.0  # 20 verified completions in 2 s
    assert tp["engine_claimed_throughput_per_s"] == 10.5  # the engine claims 21
    assert sum(metrics.completions_per_second(trs, engine, 2, T0)) == 20
    assert metrics.throughput(trs, {}, 2, events, metrics.window(events))["engine_claimed_throughput_per_s"] is None


def test_a_workflow_dequeued_by_a_killed_worker_before_its_first_step_is_attributed_to_the_kill() -> None:
    h = History(warmup_ms=0, duration_ms=10_000, rate=10)
    h.submit("taken", 1000)  # dequeued by worker:0 at 1100 ms; worker:0 dies at 1500 ms before step 0 started
    h.submit("requeued", 1200)  # dequeued by worker:0 too; the engine re-queued it after the restart
    h.submit("elsewhere", 1300)  # dequeued by worker:1, which was not killed
    h.add("fault_start", 1500, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0",
          workers=["worker:0"])
    h.add("fault_end", 2600, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0")
    for wf, at in (("taken", 4000), ("requeued", 4100), ("elsewhere", 5000)):
        h.step(wf, 0, at, at + 10, worker=0 if wf != "elsewhere" else 1, pid=200)
        h.step(wf, 1, at + 11, at + 20, worker=0 if wf != "elsewhere" else 1, pid=200)
    events = h.sorted()
    engine = {
        "taken": EngineRecord("completed", T0 + 4021 * MS, {"dequeued_by": "worker:0", "dequeued_ns": T0 + 1100 * MS,
                                                           "start_attempts": 1}),
        "requeued": EngineRecord("completed", T0 + 4121 * MS, {"dequeued_by": "worker:0",
                                                              "dequeued_ns": T0 + 4050 * MS, "start_attempts": 2}),
        "elsewhere": EngineRecord("completed", T0 + 5021 * MS, {"dequeued_by": "worker:1",
                                                               "dequeued_ns": T0 + 1350 * MS, "start_attempts": 1}),
    }
    fault = next(e for e in events if e["ev"] == "fault_start")
    end = next(e for e in events if e["ev"] == "fault_end")
    rec = metrics.recovery(fault, end, traces(events), engine, 2, metrics.window(events))
    assert rec["affected_ids"] == ["requeued", "taken"]
    assert rec["affected_by_dequeue"] == 2
    assert rec["first_progress_s"] == 2.5 and rec["all_done_s"] == 2.621
    # without the engine's record of the dequeue, the ledger alone cannot tell
    assert metrics.recovery(fault, end, traces(events), {}, 2, metrics.window(events))["affected"] == 0



def test_long_workflows_of_varied_length_filling_up_are_not_a_backlog() -> None:
    # 1/s of workflows taking 22-31 s (a business process: waits of varied length), no backlog. In-flight
    # work fills up until the longest of them has ended, not just the median: measured from the longest
    # first-quarter latency, and not judged at all when less than a quarter of the window remains.
    for duration_ms, judged in ((40_000, False), (120_000, True)):
        h = History(warmup_ms=0, duration_ms=duration_ms, rate=1)
        for i in range(duration_ms // 1000):
            at, latency = i * 1000, 22_000 + (i * 7 % 10) * 1000
            h.submit(f"w{i}", at)
            h.step(f"w{i}", 0, at + 10, at + 20)
            h.step(f"w{i}", 1, at + latency - 10, at + latency)
        events = h.sorted()
        b = metrics.throughput(traces(events), {}, 2, events, metrics.window(events))["backlog"]
        assert b["in_flight_judged"] is judged and b["in_flight_measured_from_s"] >= 30.9
        assert not b["in_flight_grew"] and not b["latency_rose"]


def test_workflows_held_up_by_a_fault_are_not_evidence_of_a_backlog() -> None:
    # 10/s of 100 ms workflows; the store is down from 15 s to 19 s of a 20 s window: everything sent
    # meanwhile waits for it (latency up to 4 s), which is recovery (the recovery figures measure it),
    # not an engine that cannot keep up. The same history without the fault records reads as a backlog.
    def history(with_fault: bool) -> list[dict[str, Any]]:
        h = History(warmup_ms=0, duration_ms=20_000, rate=10)
        for i in range(200):
            at = i * 100
            done = max(at + 100, 19_100) if 15_000 <= at < 19_000 else at + 100
            h.submit(f"w{i}", at)
            h.step(f"w{i}", 0, done - 20, done - 15)
            h.step(f"w{i}", 1, done - 10, done)
        if with_fault:
            h.add("fault_start", 15_000, fault_id="f0", kind="restart-store")
            h.add("fault_end", 19_000, fault_id="f0")
        return h.sorted()

    for with_fault in (False, True):
        events = history(with_fault)
        tp = metrics.throughput(traces(events), {}, 2, events, metrics.window(events))
        assert tp["backlog"]["latency_rose"] is not with_fault
        assert tp["engine_fell_behind"] is not with_fault
    # sent from 15.0 s to 19.0 s (41), and the one sent at 14.9 s that ended at 15.0 s
    assert tp["backlog"]["excluded_caught_by_faults"] == 42
