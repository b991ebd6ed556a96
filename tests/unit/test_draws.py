"""Drawn durations: a pure function of (seed, workflow, step), the same rule in Python and Go."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from harness import program
from harness.contract import WorkerConfig, Workload
from harness.workload import StepRunner

UNIFORM = {"dist": "uniform", "min_s": 60.0, "max_s": 120.0}
LOGNORMAL = {"dist": "lognormal", "p50_s": 0.1, "p99_s": 2.0}
FIXED = {"dist": "fixed", "value_s": 0.25}
GOCOMMON = Path(__file__).resolve().parents[2] / "engines" / "gocommon" / "durabench"


def test_a_draw_is_a_function_of_seed_workflow_and_step() -> None:
    a = program.step_draw_s(UNIFORM, 1, "dbos-r1-0000042", 3)
    assert a == program.step_draw_s(UNIFORM, 1, "dbos-r1-0000042", 3)  # a re-execution: the same duration
    assert a == program.step_draw_s(UNIFORM, 1, "temporal-local-r1-0000042", 3)  # another engine, same workflow
    assert a != program.step_draw_s(UNIFORM, 1, "dbos-r1-0000043", 3)
    assert a != program.step_draw_s(UNIFORM, 1, "dbos-r1-0000042", 4)
    assert a != program.step_draw_s(UNIFORM, 2, "dbos-r1-0000042", 3)


def test_the_key_is_the_ids_sequence_number_or_the_whole_id() -> None:
    assert program.draw_key(7, "dbos-go-abcd1234-0000042", 3) == "7:42:3"
    assert program.draw_key(7, "celery-r-0000000", 0) == "7:0:0"
    assert program.draw_key(7, "kafka-unique-id-t-0-g-x", 1) == "7:kafka-unique-id-t-0-g-x:1"  # no numeric suffix
    assert program.draw_key(7, "order", 1) == "7:order:1"
    u = program.draw_u(7, "order", 1)
    assert u == program.draw_u(7, "order", 1) and 0 < u < 1


def test_uniform_draws_stay_in_range_and_spread_over_it() -> None:
    draws = [program.step_draw_s(UNIFORM, 1, f"e-r-{i:07d}", 0) for i in range(1, 2001)]
    assert all(60.0 <= d <= 120.0 for d in draws)
    assert min(draws) < 61.0 and max(draws) > 119.0
    assert 85.0 < statistics.mean(draws) < 95.0


def test_lognormal_draws_have_the_scenarios_median_and_p99() -> None:
    draws = sorted(program.step_draw_s(LOGNORMAL, 1, f"e-r-{i:07d}", 2) for i in range(1, 2001))
    median, p99 = draws[1000], draws[1980]
    assert 0.09 < median < 0.11
    assert 1.5 < p99 < 2.7
    assert all(d > 0 for d in draws)


def test_fixed_is_its_value_and_quantiles_are_monotonic() -> None:
    assert program.step_draw_s(FIXED, 9, "x-0000001", 0) == 0.25
    us = [program.U_MIN, 1e-9, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-9, program.U_MAX]
    for dist in (UNIFORM, LOGNORMAL):
        values = [program.quantile_s(dist, u) for u in us]
        assert values == sorted(values) and all(math.isfinite(v) for v in values)
    assert program.quantile_s(LOGNORMAL, 0.5) == pytest.approx(0.1)
    assert program.quantile_s(LOGNORMAL, 0.99) == pytest.approx(2.0, rel=1e-6)


def test_python_workers_sleep_the_drawn_duration(tmp_path: Path) -> None:
    stage = {"kind": "work", "step": 0, "duration": UNIFORM, "payload_bytes": 4}
    workload = Workload(1, 120.0, 4, [stage], seed=5)
    config = WorkerConfig.load_dict(json.loads(json.dumps({  # through JSON, as workers receive it
        "engine": "memory", "run_id": "r", "worker_id": "worker:0", "worker_index": 0, "endpoints": {},
        "workload": asdict(workload), "settings": {}, "ledger_dir": str(tmp_path)})))
    assert config.workload.seed == 5
    runner = StepRunner(config)
    assert runner._work_s("memory-r-0000007", 0) == (program.step_draw_s(UNIFORM, 5, "x-7", 0), "xxxx")


def _python_table() -> dict[str, list[dict[str, object]]]:
    dists = [UNIFORM, LOGNORMAL, FIXED, {"dist": "lognormal", "p50_s": 30.0, "p99_s": 30.0},
             {"dist": "lognormal", "p50_s": 0.001, "p99_s": 0.5}]
    ids = ["dbos-go-abcd1234-0000001", "temporal-go-abcd1234-0012345", "celery-r-0000000", "order-7",
           "kafka-unique-id-t-0-g-x", "naïve-id", "x-000000000000000000000000123"]
    draws = [{"seed": seed, "wf": wf, "step": step, "dist": dist, "key": program.draw_key(seed, wf, step),
              "u": program.draw_u(seed, wf, step), "s": program.step_draw_s(dist, seed, wf, step)}
             for seed in (1, 0, -3, 2**62) for wf in ids for step in (0, 7, 41) for dist in dists]
    ps = [program.U_MIN, 1e-300, 1e-12, 1e-6, 0.001, 0.02425, 0.075, 0.3, 0.5, 0.5 + 1e-12, 0.925, 0.99,
          1 - 1e-6, 1 - 1e-12, program.U_MAX]
    quantiles = [{"p": p, "z": statistics.NormalDist().inv_cdf(p)} for p in ps]
    return {"draws": draws, "quantiles": quantiles}


def test_go_draws_equal_pythons(tmp_path: Path) -> None:
    if shutil.which("go") is None:  # the only cross-language check: CI must run it
        reason = "needs the go toolchain on PATH (the Go workers' draws)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Go draws check, but it {reason}")
        pytest.skip(reason)
    table = tmp_path / "draws.json"
    table.write_text(json.dumps(_python_table()))
    env = {**os.environ, "DURABENCH_DRAWS_TABLE": str(table)}
    out = subprocess.run(["go", "test", "-count=1", "-run", "^TestDrawsMatchPython$", "-v", "."], cwd=GOCOMMON,
                         env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--- PASS: TestDrawsMatchPython" in out.stdout  # ran, not skipped
    assert "420 draws and 15 quantiles equal Python's" in out.stdout


def test_the_driver_sends_each_signal_the_delay_drawn_for_its_workflow(tmp_path: Path) -> None:
    """Two engines' drivers schedule the i-th workflow's signal the same delay after its wait, whatever
    order the waits arrive in (the delay is drawn per (seed, workflow, step), not from a stream)."""
    from harness.ledger import Ledger
    from harness.run.driver import Driver
    from harness.scenario import LoadSpec

    delay = {"dist": "uniform", "min_s": 1.0, "max_s": 10.0}
    stage = {"kind": "wait_signal", "step": 2, "signal": "approve", "delay": delay}

    class Client:
        async def signal(self, workflow_id: str, name: str, payload: str) -> None:
            raise AssertionError("not sent in this test")

    def scheduled(engine: str, order: list[int]) -> dict[int, float]:
        view = type("View", (), {})()
        view.new_waits = [(f"{engine}-r-{i:07d}", 2, 1_000_000_000 * i) for i in order]
        driver = Driver(engine, Client(), LoadSpec(), 3, Ledger(tmp_path, engine), view, "r", {2: stage})  # type: ignore[arg-type]
        out: dict[int, float] = {}

        async def record(sender: object, wf: str, step: int, at_ns: int) -> None:
            i = int(wf.rsplit("-", 1)[1])
            out[i] = (at_ns - 1_000_000_000 * i) / 1e9
            if len(out) == len(order):
                driver.signals_stopped.set()

        driver._send_signal = record  # type: ignore[method-assign]
        asyncio.run(driver.signals())
        return out

    a = scheduled("dbos", [1, 2, 3, 4])
    b = scheduled("temporal", [4, 2, 3, 1])
    assert a == pytest.approx(b, abs=1e-6)  # at_ns is whole nanoseconds
    assert all(1.0 <= d <= 10.0 for d in a.values()) and len(set(round(d, 6) for d in a.values())) == 4
    assert a[1] == pytest.approx(program.step_draw_s(delay, 3, "x-1", 2), abs=1e-6)
