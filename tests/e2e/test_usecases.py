"""The program-based use cases (scenarios/usecases/ai-agent, data-pipeline, business-process) run
briefly, as one suite, on the in-memory reference engine: each use case's own program (stages, flaky
API, application table) with its sleeps and signal delays shortened, a few workflows, no faults. The
answer table of each then shows every figure it promises (none ``-``, but recovery: no fault), read
from the summary fields the run really wrote, and the figures agree with direct counts."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import results
from harness.analysis import gates
from harness.report import usecase
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.real]

USECASES = ("ai-agent", "data-pipeline", "business-process")


def _shorten(stages: list[dict[str, Any]]) -> None:
    for stage in stages:
        if stage["kind"] == "sleep":
            stage["duration"] = "1s"
        elif stage["kind"] == "wait_signal":
            stage["delay"] = {"dist": "uniform", "min": "100ms", "max": "400ms"}
        _shorten(stage.get("program", []))


def _brief(name: str, directory: Path) -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load((ROOT / "scenarios" / "usecases" / f"{name}.yaml").read_text()))
    _shorten(doc["workload"]["program"])
    if "api" in doc["workload"]:
        doc["workload"]["api"]["time_scale"] = 0.05  # the llm preset's p99 8 s -> 400 ms
    doc.update(engines=["memory"], faults=[], workers={"count": 2, "restart_delay": "200ms"},
               load={"rate": 2, "warmup": "0s", "duration": "2s", "drain_timeout": "60s", "drain_quiet": "15s"},
               resources={"interval": 0}, floors={"enabled": False})
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc


def test_use_case_programs_run_and_fill_their_answer_tables(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    docs = {name: _brief(name, scenarios) for name in USECASES}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "suite", str(scenarios), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == gates.EXIT_PASS, proc.stdout + proc.stderr[-3000:]
    (suite_dir,) = out.iterdir()
    runs = {p.name.split("-", 1)[1]: p for p in suite_dir.iterdir() if (p / "manifest.json").is_file()}
    assert set(runs) == set(USECASES)
    index_md = (suite_dir / "index.md").read_text()
    for name in USECASES:
        summary = results.load_summary(runs[name])
        e = summary["engines"]["memory"]
        assert e["verdict"] == "correct" and e["lost"] == 0, (name, e["verdict"])
        assert e["completed"] == e["acknowledged"] == e["submitted"] >= 4, name
        header, row = usecase.table(name, summary)
        cells = dict(zip(header, row, strict=True))
        missing = [h for h, v in cells.items() if v == "-" and h != "recovery s"]
        assert not missing, f"{name}: the answer table reads no figure for {missing}"
        assert f"### {docs[name]['name']}" in index_md and f"| memory | {row[1]} |" in index_md
        program = e["program"]
        n = e["submitted"]
        if name == "ai-agent":
            calls = program["calls"]
            assert calls["logical_calls"] == 6 * n  # every workflow made its 6 LLM calls
            assert calls["requests"] >= calls["logical_calls"] and calls["wasted_calls"] == 0
            assert cells["wasted calls /1000 wf"] == "0.0"
            assert float(cells["retry amplification"]) == pytest.approx(calls["retry_amplification"], abs=0.01)
        elif name == "data-pipeline":
            assert program["branches"]["branches_per_stage"] == [50]
            assert program["counts"]["branches_missing"] == program["counts"]["branches_duplicated"] == 0
            assert program["branches"]["branch_steps_reexecuted"] == 0
            assert cells["items re-executed"] == cells["steps re-executed"] == "0" and float(cells["steps/s"]) > 0
        else:
            assert program["effects"]["rows"] == 3 * n  # reserve, charge, ship: once each, per the table
            assert cells["double charges"] == "0" and cells["lost orders"] == "0"
            assert program["timers"]["lateness_ms"]["count"] == n and program["signals"]["sent"] == n
            assert float(cells["timer late p50 ms"]) >= -1.0  # never early beyond the stored resolution
