"""Events (``load.source: kafka``): the scenario keys, the refusal of engines without an event consumer,
the message format, the event figures on synthetic histories (applied 0 / 1 / >1 from the application
table, produce-to-effect latency, consumer lag) and the use case's answer table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import events, scenario
from harness.analysis import checker
from harness.analysis import events as event_figures
from harness.contract import EventRef, event_consumer, event_workflow_id
from harness.errors import ScenarioError, UserError
from harness.report import usecase
from harness.run import eventsource, runner
from tests.unit.history import MS, T0, History

BASE = {"name": "t", "engines": ["memory"]}
PROGRAM = [{"kind": "work", "duration": "10ms"}, {"kind": "effect", "idempotency": "none"}]


def parse(load: dict) -> scenario.Scenario:
    return scenario.parse({**BASE, "workload": {"program": PROGRAM}, "load": load}, "f.yaml")


def test_source_kafka_is_an_explicit_key_with_its_partitions() -> None:
    sc = parse({"source": "kafka", "partitions": 8})
    assert (sc.load.source, sc.load.partitions) == ("kafka", 8)
    assert parse({}).load.source == "submit"
    for load, message in (({"source": "kafka", "mode": "closed"}, "load.mode"),
                          ({"partitions": 8}, "load.partitions"),
                          ({"source": "rabbitmq"}, "load.source"),
                          ({"source": "kafka", "partitions": 0}, "load.partitions"),
                          ({"source": "kafka", "topic": "x"}, "topic")):
        with pytest.raises(ScenarioError, match=message):
            parse(load)


def test_check_refuses_an_engine_without_an_event_consumer_in_one_line() -> None:
    sc = parse({"source": "kafka"})
    with pytest.raises(UserError, match=r"engine 'memory' does not consume events .*dbos") as exc:
        runner.validate(sc)
    assert "\n" not in str(exc.value)


def test_engines_declare_their_consumer_and_dbos_maps_an_event_to_its_workflow_id() -> None:
    from engines.celery import CeleryEngine
    from engines.dbos import DbosEngine
    from engines.memory import MemoryEngine
    from engines.temporal import TemporalEngine

    assert event_consumer(MemoryEngine()) is None
    assert all(event_consumer(e) for e in (DbosEngine(), TemporalEngine(), CeleryEngine()))
    ref = EventRef("ev-1", "topic-a", 3, 41, "group-g")
    # DBOS 3.4 dbos/_kafka.py _build_status: the dedup key of a redelivered message
    assert event_workflow_id(DbosEngine(), ref) == "kafka-unique-id-topic-a-3-group-g-41"
    assert event_workflow_id(TemporalEngine(), ref) == "ev-1"  # the event id is the workflow id


def test_message_format_round_trips() -> None:
    key, value = events.encode("dbos-run-0000001", 123)
    assert events.decode_id(key, value) == "dbos-run-0000001"
    assert events.decode_id(None, value) == "dbos-run-0000001"
    assert json.loads(value) == {"id": "dbos-run-0000001", "produced_ns": 123}
    with pytest.raises(ValueError, match="key"):
        events.decode_id(None, None)


def _run(tmp_path: Path, lag: list[dict]) -> tuple[dict, History]:
    h = History()
    for wf, at in (("a", 0), ("b", 100), ("c", 200), ("d", 300)):
        h.submit(wf, at, ack_ms=5)
    h.submit("lost-produce", 400, outcome="unknown")  # never delivered: not an event of the table
    (tmp_path / eventsource.LAG_FILE).write_text("".join(json.dumps(s) + "\n" for s in lag))
    rows = [{"wf": "a", "step": 1, "applied_ns": T0 + 55 * MS},  # once, 50 ms after its ack at 5 ms
            {"wf": "b", "step": 1, "applied_ns": T0 + 205 * MS},  # twice: the second application is extra
            {"wf": "b", "step": 1, "applied_ns": T0 + 900 * MS},
            {"wf": "c", "step": 1, "applied_ns": T0 + 405 * MS}]  # d: never applied
    trs = checker.traces(h.sorted())
    acked = ["a", "b", "c", "d"]
    compiled = [{"kind": "work", "step": 0}, {"kind": "effect", "step": 1, "idempotency": "none"}]
    return event_figures.figures(trs, acked, compiled, rows, tmp_path, T0), h


def test_figures_count_applications_per_event_from_the_table(tmp_path: Path) -> None:
    lag = [{"ns": T0, "lag": 0}, {"ns": T0 + 1000 * MS, "error": "broker down"},
           {"ns": T0 + 2000 * MS, "lag": 7}, {"ns": T0 + 3000 * MS, "lag": 2}]
    figs, _ = _run(tmp_path, lag)
    assert (figs["applied_0"], figs["applied_1"], figs["applied_more"]) == (1, 2, 1)
    assert figs["rows"] == 4 and figs["rows_unknown_events"] == 0
    # produce ack (invoke + 5 ms) to the first row: a 50, b 100, c 200 ms
    assert figs["produce_to_effect_ms"]["count"] == 3
    assert figs["produce_to_effect_ms"]["p50"] == pytest.approx(100.0)
    assert figs["produce_to_effect_ms"]["max"] == pytest.approx(200.0)
    assert figs["lag"] == {"samples": 4, "failed_samples": 1, "peak": 7, "last": 2,
                           "series": [[0.0, 0], [1.0, None], [2.0, 7], [3.0, 2]]}


def test_figures_without_the_table_measure_nothing(tmp_path: Path) -> None:
    h = History()
    h.submit("a", 0)
    figs = event_figures.figures(checker.traces(h.sorted()), ["a"], [{"kind": "effect", "step": 0}], None,
                                 tmp_path, T0)
    assert figs["measured"] is False and figs["applied_0"] is None and figs["lag"]["peak"] is None


def test_the_answer_table_reads_the_event_figures(tmp_path: Path) -> None:
    figs, _ = _run(tmp_path, [{"ns": T0, "lag": 12}])
    summary = {"engines": {"dbos": {"e2e_latency_ms": {}, "events": figs},
                           "celery": {"status": "error", "error": "x"}}}
    header, row, failed = usecase.table("exactly-once-events", summary)
    cells = dict(zip(header, row, strict=True))
    assert cells == {"engine": "dbos", "events": "4", "applied 0": "1", "applied 1": "2", "applied >1": "1",
                     "p50 ms": "100", "p99 ms": "200", "lag peak": "12"}
    assert failed[1] == "ERROR"
    assert "exactly-once-events" in scenario.USE_CASES


def test_engines_lists_the_event_consumers(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["engines"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("event consumers")]
    named = line.split("kafka): ", 1)[1].split(", ")
    assert {"dbos", "temporal", "celery"} <= set(named) and "memory" not in named
