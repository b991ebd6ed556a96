"""exactly-once-events end to end (scenarios/usecases/exactly-once-events.yaml, shrunk): real Kafka, the
engine's own consumer, worker:0 SIGKILLed during the load. The checker's applied 0 / 1 / >1 counts must
equal a direct ``SELECT`` of the application table made on the live server before teardown (a count
independent of the effects.json dump the checker reads), every acknowledged event is accounted for,
and the consumer lag was sampled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import program, scenario
from harness.analysis import summary as analysis
from harness.report import usecase
from harness.run import appdb, kafka, runner
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.real,
              pytest.mark.skipif(kafka.unavailable_reason() is not None, reason=str(kafka.unavailable_reason()))]


def _scenario(engine: str, **more: Any) -> scenario.Scenario:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "scenarios" / "usecases" / "exactly-once-events.yaml").read_text())
    doc.update(engines=[engine], faults=[{"kind": "kill-worker", "target": "worker:0", "at": "3s"}],
               load={"source": "kafka", "partitions": 4, "rate": 10, "warmup": "0s", "duration": "8s",
                     "drain_timeout": "90s", "drain_quiet": "60s"},
               workers={"count": 2, "restart_delay": "500ms"}, resources={"interval": 0})
    doc.update(more)
    return scenario.parse(doc, "exactly-once-events.yaml")


@pytest.mark.parametrize("engine", ["dbos", "temporal"])
def test_a_consumer_kill_keeps_the_counts_equal_to_the_table(engine: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run_and_check(_scenario(engine), engine, tmp_path, monkeypatch)


def run_and_check(sc: scenario.Scenario, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run ``sc`` (one engine, worker:0 killed), then check its event figures against the live table; returns
    the run directory (tests/real/test_containers_events.py runs it under deploy: containers)."""
    direct: list[Counter[str]] = []
    dump = appdb.dump

    def select_then_dump(server_url: str, path: Path) -> None:
        import psycopg

        with psycopg.connect(appdb.database_url(server_url)) as conn:  # the live table, before teardown
            rows = conn.execute(f"SELECT wf, count(*) FROM {program.EFFECTS_TABLE} GROUP BY wf").fetchall()
        direct.append(Counter({wf: n for wf, n in rows}))
        dump(server_url, path)

    monkeypatch.setattr(appdb, "dump", select_then_dump)
    run_dir = runner.run(sc, tmp_path / "out", progress=False)
    summary = analysis.analyze(run_dir)
    e = summary["engines"][engine]
    assert e["status"] == "ok", e.get("error")
    assert e["worker_restarts"] >= 1, "worker:0 was killed and restarted"
    (table,) = direct
    figs = e["events"]
    acked = figs["events_acknowledged"]
    assert acked == e["acknowledged"] >= 60
    counts = Counter("0" if table[wf] == 0 else "1" if table[wf] == 1 else "more" for wf in _acknowledged(run_dir,
                                                                                                           engine))
    assert (figs["applied_0"], figs["applied_1"], figs["applied_more"]) == (counts["0"], counts["1"], counts["more"])
    assert figs["rows"] == sum(table.values())
    assert figs["applied_0"] == e["lost"] + e["unfinished"], "never applied: an accepted workflow not completed"
    # the driver's lookup found the engine's own workflow of every event (DBOS: kafka-unique-id-..., by offset)
    assert e["engine_claimed_completed"] == e["completed"]
    assert figs["lag"]["samples"] >= 5 and figs["lag"]["peak"] is not None
    assert figs["produce_to_effect_ms"]["count"] > 0 and figs["source"]["producer"]["acks"] == "all"
    header, row = usecase.table("exactly-once-events", summary)
    cells = dict(zip(header, row, strict=True))
    assert cells["applied >1"] == str(counts["more"]) and cells["lag peak"] != "-"
    if engine == "dbos":  # the effect commits with DBOS's checkpoint: exactly once, whatever the kill hit
        assert counts["more"] == 0 and counts["0"] == 0 and e["verdict"] == "correct"
        from harness import results
        from harness.report import html

        report = html.write_run(run_dir, results.load_manifest(run_dir), summary).read_text()
        assert "## Use case" in report and f"| {engine} | {acked} |" in report
        assert (run_dir / "charts" / "use-case.png").stat().st_size > 10_000  # bars and the lag over time
    return run_dir


def _acknowledged(run_dir: Path, engine: str) -> list[str]:
    from harness import results

    return list(results.read_json(results.engine_dir(run_dir, engine) / "checker.json")["ids"]["acknowledged"])
