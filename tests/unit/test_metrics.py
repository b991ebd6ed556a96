from __future__ import annotations

from harness.analysis import metrics
from harness.analysis.checker import traces
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
