"""The saturation search's stopping logic, with fake engines instead of real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import scenario
from harness.cli import saturate
from harness.scenario import SaturateSpec

CFG = SaturateSpec(start_rate=10, factor=2, max_rate=1000, p99_target=1.0, min_throughput_ratio=0.95)


def fake_engine(capacity: float, base_p99_ms: float = 100.0, lost_above: float | None = None,
                driver_limit: float | None = None) -> saturate.RunStep:
    """An engine that completes min(rate, capacity) workflows/s; p99 explodes past 80% of capacity."""
    calls: list[float] = []

    def run_step(engine: str, rate: float, repetition: int) -> tuple[dict[str, Any], str | None]:
        calls.append(rate)
        p99 = base_p99_ms if rate <= 0.8 * capacity else base_p99_ms * 20
        summary = {
            "status": "ok", "throughput_per_s": min(rate, capacity), "achieved_rate_per_s": rate,
            "driver_fell_behind": driver_limit is not None and rate > driver_limit,
            "lost": 5 if lost_above is not None and rate > lost_above else 0,
            "e2e_latency_ms": {"p50": base_p99_ms / 2, "p99": p99},
        }
        return summary, f"/runs/{engine}-{rate:g}"

    run_step.calls = calls  # type: ignore[attr-defined]
    return run_step


def test_ladder_is_geometric_and_bounded() -> None:
    assert saturate.ladder(10, 2, 100) == [10, 20, 40, 80]
    assert saturate.ladder(10, 1.5, 30) == [10, 15, 22.5]
    assert saturate.ladder(10, 2, 80) == [10, 20, 40, 80]


def test_stops_at_the_first_rate_where_throughput_falls_behind() -> None:
    run = fake_engine(capacity=50, base_p99_ms=100)
    res = saturate.search("e", 1, CFG.model_copy(update={"p99_target": 100.0}), run)
    assert run.calls == [10, 20, 40, 80]  # type: ignore[attr-defined]
    assert res.best is not None and res.best.rate == 40 and res.best.throughput_per_s == 40
    assert res.steps[-1].reason.startswith("throughput 50")
    assert "at 80/s" in res.stopped_by


def test_stops_when_p99_exceeds_the_target() -> None:
    run = fake_engine(capacity=700, base_p99_ms=100)  # p99 2 s above 560/s, target 1 s
    res = saturate.search("e", 1, CFG, run)
    assert res.best is not None and res.best.rate == 320
    assert res.steps[-1].rate == 640 and res.steps[-1].reason.startswith("p99 2000")
    assert not res.steps[-1].sustained


def test_reaching_max_rate_is_reported() -> None:
    run = fake_engine(capacity=10_000, base_p99_ms=10)
    res = saturate.search("e", 1, CFG, run)
    assert res.best is not None and res.best.rate == 640  # ladder 10..640 (1280 > max 1000)
    assert res.stopped_by == "max_rate reached"


def test_lost_work_and_errors_fail_a_step() -> None:
    res = saturate.search("e", 1, CFG, fake_engine(capacity=10_000, base_p99_ms=10, lost_above=30))
    assert res.best is not None and res.best.rate == 20 and "lost" in res.steps[-1].reason

    def broken(engine: str, rate: float, repetition: int) -> tuple[dict[str, Any], str | None]:
        return {"status": "error", "error": "boom"}, None

    res = saturate.search("e", 1, CFG, broken)
    assert res.best is None and res.steps[0].reason == "error: boom" and len(res.steps) == 1
    agg = saturate.aggregate([res])["e"]
    assert agg["below_start_rate"] == 1 and agg["max_sustained_rate_per_s"]["median"] is None


def test_driver_limit_stops_and_is_flagged_without_refining() -> None:
    run = fake_engine(capacity=10_000, base_p99_ms=10, driver_limit=100)
    res = saturate.search("e", 1, CFG, run, refine=3)
    assert res.best is not None and res.best.rate == 80
    assert res.steps[-1].harness_limited and len(res.steps) == 5  # no bisection past a harness limit
    assert saturate.aggregate([res])["e"]["harness_limited"]


def test_refine_bisects_between_last_pass_and_first_fail() -> None:
    run = fake_engine(capacity=60, base_p99_ms=10)
    res = saturate.search("e", 1, CFG.model_copy(update={"p99_target": 100.0}), run, refine=3)
    assert run.calls[:4] == [10, 20, 40, 80]  # type: ignore[attr-defined]
    assert len(res.steps) == 7
    assert res.best is not None and 40 < res.best.rate <= 60 / 0.95  # 95% of offered counts as keeping up


def test_aggregate_gives_min_median_max_over_repetitions() -> None:
    searches = [saturate.search("e", i, CFG.model_copy(update={"p99_target": 100.0}), fake_engine(capacity=cap))
                for i, cap in enumerate((30, 50, 90), start=1)]
    agg = saturate.aggregate(searches)["e"]
    assert agg["max_sustained_rate_per_s"] == {"min": 20, "median": 40, "max": 80}
    assert agg["repetitions"] == 3 and len(agg["stopped_by"]) == 3


def test_saturate_writes_one_run_per_step_and_the_tables(tmp_path: Path) -> None:
    sc = scenario.parse({"name": "sat", "engines": ["memory"],
                         "faults": [{"kind": "kill-worker", "at": "1s"}],
                         "saturate": {"start_rate": 10, "factor": 2, "max_rate": 100, "repetitions": 2,
                                      "p99_target": "1s", "step_duration": "2s"}}, "sat.yaml")
    seen: list[scenario.Scenario] = []

    def fake_run(step_sc: scenario.Scenario, runs_dir: Path) -> Path:
        seen.append(step_sc)
        run_dir = runs_dir / step_sc.name
        run_dir.mkdir(parents=True)
        rate = step_sc.load.rate
        engine = {"status": "ok", "throughput_per_s": min(rate, 30.0), "achieved_rate_per_s": rate,
                  "driver_fell_behind": False, "lost": 0, "e2e_latency_ms": {"p50": 5.0, "p99": 9.0}}
        (run_dir / "summary.json").write_text(json.dumps({"engines": {"memory": engine}}))
        return run_dir

    parent = saturate.saturate(sc, sc.saturate, tmp_path, progress=False, run=fake_run)
    doc = json.loads((parent / saturate.SATURATE_JSON).read_text())
    assert [s.load.rate for s in seen] == [10, 20, 40] * 2
    assert all(not s.faults and not s.floors.enabled and s.load.duration == 2.0 for s in seen)
    assert doc["engines"]["memory"]["max_sustained_rate_per_s"] == {"min": 20, "median": 20, "max": 20}
    assert doc["engines"]["memory"]["max_sustainable_throughput_per_s"]["median"] == 20
    table = (parent / saturate.SATURATE_MD).read_text()
    assert "| memory | 20.0 | 20.0 | 5.0 | 9.0 | throughput 30/s < 0.95 x offered at 40/s; " in table


def test_cli_flags_override_the_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import cli

    captured: dict[str, Any] = {}

    def fake(sc: scenario.Scenario, cfg: SaturateSpec, out: Path, refine: int = 0, progress: bool = True) -> Path:
        captured.update(cfg=cfg, refine=refine, engines=sc.engines)
        (tmp_path / saturate.SATURATE_MD).write_text("# t\n")
        return tmp_path

    monkeypatch.setattr(saturate, "saturate", fake)
    code = cli.main(["saturate", "scenarios/smoke.yaml", "--start-rate", "5", "--factor", "3", "--max-rate", "50",
                     "--p99-target-ms", "250", "--repetitions", "2", "--step-duration", "4s", "--refine", "1",
                     "--quiet"])
    assert code == 0
    cfg = captured["cfg"]
    assert (cfg.start_rate, cfg.factor, cfg.max_rate, cfg.p99_target, cfg.repetitions, cfg.step_duration) == (
        5, 3, 50, 0.25, 2, 4.0)
    assert captured["refine"] == 1 and captured["engines"] == ["memory"]
    assert cli.main(["saturate", "scenarios/smoke.yaml", "--factor", "0.5"]) == 2


def test_variants_expand_into_engine_runs_and_saturate_steps() -> None:
    sc = scenario.parse({
        "name": "sweep", "engines": ["dbos", "memory"],
        "server_settings": {"postgres": {"wal_buffers": "16MB"}},
        "engine_settings": {"dbos": {"sys_db_pool_size": 10}},
        "variants": [{"name": "base"},
                     {"name": "async", "server_settings": {"postgres": {"synchronous_commit": False}},
                      "engine_settings": {"dbos": {"sys_db_pool_size": 4}}}],
    }, "sweep.yaml")
    assert [k for k, _, _ in sc.runs()] == ["dbos@base", "dbos@async", "memory@base", "memory@async"]
    _, _, variant = sc.runs()[1]
    assert sc.server_settings_for(variant) == {"postgres": {"wal_buffers": "16MB", "synchronous_commit": False}}
    assert sc.engine_settings_for("dbos", variant) == {"sys_db_pool_size": 4}
    assert sc.engine_settings_for("memory", variant) == {}
    sc._source_file = "scenarios/sweep.yaml"  # as scenario.load sets it
    step = saturate.step_scenario(sc, "dbos@async", 42.0, 1, sc.saturate)
    assert step.engines == ["dbos"] and [v.name for v in step.variants] == ["async"]
    assert step.source_file == "scenarios/sweep.yaml"  # each step's manifest names the searched file
    assert [k for k, _, _ in step.runs()] == ["dbos@async"] and step.load.rate == 42.0
    with pytest.raises(scenario.ScenarioError, match=r"server_settings\.temporal"):
        scenario.parse({"name": "x", "engines": ["memory"], "server_settings": {"temporal": {"a": 1}}}, "x.yaml")
    with pytest.raises(scenario.ScenarioError, match=r"variants\.1\.name"):
        scenario.parse({"name": "x", "engines": ["memory"], "variants": [{"name": "a"}, {"name": "a"}]}, "x.yaml")
