from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import scenario
from harness.errors import ScenarioError, UserError

BASE = {"name": "t", "engines": ["memory"]}


def parse(extra: dict, overrides: dict | None = None) -> scenario.Scenario:
    return scenario.parse({**BASE, **extra}, "f.yaml", overrides)


@pytest.mark.parametrize(
    ("value", "seconds"), [("250ms", 0.25), ("20s", 20.0), ("2m", 120.0), ("1.5s", 1.5), (3, 3.0), (0.5, 0.5)]
)
def test_durations(value: object, seconds: float) -> None:
    assert scenario.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 parsecs", "s", "", True, None, "-1s"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        scenario.parse_duration(value)


def test_defaults_are_documented_values() -> None:
    sc = parse({})
    assert (sc.durability, sc.load.mode, sc.workers.count, sc.workload.steps) == ("strict", "open", 2, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"wrkers": {}}, "f.yaml: wrkers is not a known field"),
        ({"load": {"rate": "fast"}}, "f.yaml: load.rate:"),
        ({"load": {"rate": -1}}, "f.yaml: load.rate:"),
        ({"load": {"duration": "0s"}}, "load.duration must be longer than 0s"),
        ({"workload": {"steps": 0}}, "f.yaml: workload.steps:"),
        ({"workload": {"step_duration": "fast"}}, "workload.step_duration: expected a duration"),
        ({"durability": "paranoid"}, "f.yaml: durability:"),
        ({"faults": [{"kind": "nuke", "at": "1s"}]}, "faults.0.kind"),
        ({"faults": [{"kind": "kill-worker", "target": "wrker:1", "at": "5s"}]},
         "faults.0.target: expected a known target for kill-worker (worker:0..1, worker:all), given 'wrker:1'"),
        ({"faults": [{"kind": "kill-worker", "target": "worker:2", "at": "5s"}]}, "faults.0.target"),
        ({"faults": [{"kind": "kill-worker", "at": "500s"}]}, "faults.0.at: expected a time before the load ends"),
        ({"faults": [{"kind": "kill-worker", "target": "worker:0"}]}, "faults.0.at is required"),
        ({"engine_settings": {"dbos": {}}}, "engine_settings.dbos: expected one of the scenario's engines"),
        ({"load": {"generator": "gatling"}}, "f.yaml: load.generator:"),
        ({"load": {"generator": "locust", "mode": "closed"}}, "load.mode: expected open with generator: locust"),
        ({"load": {"front_doors": 2}}, "load.front_doors: expected no value with generator: pacer"),
        ({"load": {"generator": "locust", "locust_workers": 0}}, "f.yaml: load.locust_workers:"),
        ({"workers": {"remote": 1}}, "workers.ledger: expected shipped when workers.remote > 0"),
        ({"workers": {"remote": 3, "ledger": "shipped"}}, "workers.remote: expected at most workers.count (2)"),
        ({"workers": {"remote": 1, "ledger": "shipped"}, "faults": [{"kind": "pause-worker", "target": "worker:1",
                                                                     "at": "1s", "duration": "1s"}]},
         "faults.0.target: expected a worker durabench runs itself (worker:0..0): worker:1..1 run on other hosts"),
        ({"workers": {"ledger": "carrier-pigeon"}}, "f.yaml: workers.ledger:"),
        ({"services": {"postgres": {"url": "postgresql://u:pw@db:5432/x"}}}, "services.postgres.url: expected a URL "
                                                                            "without a password"),
        ({"services": {"postgres": {"url": "mysql://db"}}}, "services.postgres.url: expected a URL starting with"),
        ({"services": {"mongo": {"url": "mongodb://db"}}}, "services.mongo: expected one of"),
        ({"services": {"restate": {"url": "http://127.0.0.1:8080"}}}, "services.restate: expected one of"),
        ({"services": {"postgres": {"url": "postgresql://db:5432/x"}},
          "server_settings": {"postgres": {"fsync": "on"}}},
         "server_settings.postgres: expected no settings for an external server"),
    ],
)
def test_invalid_scenarios_say_where_and_what(extra: dict, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse(extra)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_locust_load_round_trips_through_the_manifest() -> None:
    sc = parse({"load": {"generator": "locust", "locust_workers": 3, "front_doors": 2}})
    assert (sc.load.generator, sc.load.locust_workers, sc.load.front_doors) == ("locust", 3, 2)
    for dumped in (sc, parse({})):  # the manifest holds model_dump(); it must validate again
        assert scenario.Scenario.model_validate(dumped.model_dump()) == dumped


def test_overrides_are_applied_and_recorded() -> None:
    sc = parse({}, {"engines": ["memory"], "duration": "3s", "rate": 7.0, "workers": 3, "durability": "relaxed"})
    assert (sc.load.duration, sc.load.rate, sc.workers.count, sc.durability) == (3.0, 7.0, 3, "relaxed")
    assert sc.overrides == {"engines": ["memory"], "duration": "3s", "rate": 7.0, "workers": 3, "durability": "relaxed"}


def test_bad_override_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"load\.rate"):
        parse({}, {"rate": 0.0})


def test_fault_targets() -> None:
    assert scenario.fault_targets("worker:all", 3) == [0, 1, 2]
    assert scenario.fault_targets("worker:0,2", 3) == [0, 2]
    assert scenario.fault_targets("worker:3", 3) is None
    assert scenario.fault_targets("service:postgres", 3) is None


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such scenario file"):
        scenario.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        scenario.load(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        scenario.load(top)


def test_shipped_scenarios_are_valid(root: Path) -> None:
    files = sorted((root / "scenarios").glob("*.yaml"))
    assert files
    for path in files:
        scenario.load(path)


PROGRAM = [{"kind": "work", "duration": "20ms"}, {"kind": "call"},
           {"kind": "parallel", "branches": 2, "program": [{"kind": "work"}, {"kind": "sleep", "duration": "1s"}]},
           {"kind": "wait_signal", "delay": {"dist": "uniform", "min": "1s", "max": "2s"}, "timeout": "10s"},
           {"kind": "effect", "idempotency": "key"}]


def test_program_compiles_to_depth_first_step_indices() -> None:
    w = parse({"workload": {"program": PROGRAM, "api": {"latency": "llm", "time_scale": 0.1}}}).workload.to_workload(1)
    assert w.steps == 9  # 5 stages + 2 branches x 2 stages
    par = w.program[2]
    assert [[s["step"] for s in b] for b in par["branches"]] == [[3, 4], [5, 6]]
    assert [s["step"] for s in w.program] == [0, 1, 2, 7, 8]
    assert w.kinds() == {"work", "call", "parallel", "sleep", "wait_signal", "effect"}


def test_shorthand_is_a_chain_of_work_stages() -> None:
    w = parse({"workload": {"steps": 2, "step_duration": "10ms", "payload_bytes": 8}}).workload.to_workload(1)
    assert w.is_chain and w.program[1] == {"kind": "work", "step": 1, "duration": {"dist": "fixed", "value_s": 0.01},
                                           "payload_bytes": 8}


def test_a_dumped_program_validates_again() -> None:
    sc = parse({"workload": {"program": PROGRAM, "api": {"error_rate": 0.1}}})
    again = scenario.workload_from_dump(sc.model_dump()["workload"])
    assert again.to_workload(1).program == sc.workload.to_workload(1).program


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        ({"program": [{"kind": "work"}], "step_duration": "1s"}, "workload.step_duration: expected either a program"),
        ({"program": [{"kind": "wrk"}]}, "workload.program.0"),
        ({"program": [{"kind": "sleep"}]}, "workload.program.0.sleep.duration is required"),
        ({"program": [{"kind": "parallel", "program": [{"kind": "parallel", "program": [{"kind": "work"}]}]}]},
         "workload.program.0.parallel.program.0"),
        ({"program": [{"kind": "call"}], "api": {"latency": {"dist": "lognormal", "p50": "2s", "p99": "1s"}}},
         "p99 (1s) must not be below p50 (2s)"),
        ({"program": [{"kind": "call"}], "api": {"rate_limit": -1}}, "workload.api.rate_limit"),
        ({"program": [{"kind": "call"}], "api": {"error_rate": 0.7, "hang_rate": 0.5}}, "error_rate + hang_rate"),
        ({"program": [{"kind": "call", "retry": {"initial_backoff": "5s", "max_backoff": "1s"}}]}, "max_backoff"),
        ({"program": [{"kind": "wait_signal", "delay": "5s", "timeout": "2s"}]}, "must exceed the signal delay"),
        ({"program": [{"kind": "work", "duration": {"dist": "uniform", "min": "1s"}}]}, "needs min and max"),
        ({"program": [{"kind": "work"}], "api": {"error_rate": 0.1}}, "no api without a call stage"),
    ],
)
def test_bad_programs_are_refused(workload: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScenarioError, match=re.escape(message)):
        parse({"workload": workload})
