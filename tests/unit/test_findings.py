"""The report's sentences about an engine say what their evidence shows: losses as losses, a backlog with its
evidence, an engine's claim beside the verified figure, an interrupted run."""

from __future__ import annotations

from harness.analysis import metrics
from harness.analysis.checker import check, traces
from harness.report.markdown import findings
from tests.unit.history import History


def _summary(h: History) -> dict:
    events = h.sorted()
    trs = traces(events)
    c = check(trs, 2, {}).counts
    return {**c, **metrics.throughput(trs, {}, 2, events, metrics.window(events))}


def test_a_lossy_engine_reads_as_losses_not_as_a_backlog() -> None:
    h = History(warmup_ms=0, duration_ms=4000, rate=10)
    for i in range(40):
        h.workflow(f"w{i}", i * 100)
    for i in range(10):
        h.submit(f"lost{i}", i * 400 + 50)
    text = " ".join(findings(_summary(h)))
    assert "**Losses**: 10 of 50 accepted workflows never completed (lost)" in text
    assert "did not keep up" not in text


def test_a_backlog_reads_with_its_evidence() -> None:
    h = History(warmup_ms=0, duration_ms=4000, rate=20)
    for i in range(80):  # offered 20/s, served at 10/s
        done = 100 + i * 100
        h.submit(f"w{i}", i * 50)
        h.step(f"w{i}", 0, done - 20, done - 15)
        h.step(f"w{i}", 1, done - 10, done)
    text = " ".join(findings(_summary(h)))
    assert "**The engine did not keep up with the offered load** (work in flight grew from" in text
    assert "Losses" not in text


def test_work_piling_up_with_faults_in_the_window_is_not_called_a_backlog() -> None:
    # the same backlog, with a kill that catches one workflow: the rest still pile up, but the run had a
    # fault, so the report cannot tell recovery from a backlog and says so instead of claiming one
    h = History(warmup_ms=0, duration_ms=4000, rate=20)
    for i in range(80):
        done = 100 + i * 100
        h.submit(f"w{i}", i * 50)
        h.step(f"w{i}", 0, done - 20, done - 15)
        h.step(f"w{i}", 1, done - 10, done)
    h.add("fault_start", 20, fault_id="f0", kind="kill-worker")
    h.add("fault_end", 20, fault_id="f0")
    e = _summary(h)
    assert not e["engine_fell_behind"] and e["backlog"]["in_flight_grew"] and e["backlog"]["faults_in_window"] == 1
    text = " ".join(findings(e))
    assert "**Work piled up over the measured window** (work in flight grew from" in text
    assert "recovery from them or a backlog" in text and "did not keep up" not in text


def test_claims_and_interruptions_are_named() -> None:
    e = {"throughput_per_s": 10.0, "engine_claimed_throughput_per_s": 10.5, "engine_claimed_completed": 21,
         "completed": 20, "interrupted": True}
    text = " ".join(findings(e))
    assert "**The engine claims more than the ledger shows**: its store records 21" in text
    assert "20 have every step executed" in text and "Interrupted part-way" in text
    assert findings({"throughput_per_s": 10.0, "engine_claimed_throughput_per_s": 10.0}) == []
