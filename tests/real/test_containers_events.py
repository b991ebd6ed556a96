"""exactly-once-events under deploy: containers (tests/e2e/test_events.py's dbos case, same checks): the Kafka
broker is a container of the stack (compose/extras.yaml) with one listener for the worker containers on the
stack's network and one published on loopback for the driver; worker:0's container is SIGKILLed during the
load and the broker's container is SIGKILLed and restarted after it. The checker's applied 0/1/>1 must equal a
direct count of the live table; the consumers read from kafka:9092, the driver from the published port. And no
container of such a run outlives a SIGKILLed or interrupted durabench: the broker added from compose/extras.yaml
carries the run's labels like the engine's own stack."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import dockerhost, ledger
from harness.run import kafka
from tests import docker_support
from tests.conftest import ROOT
from tests.e2e.test_events import _scenario, run_and_check

pytestmark = [pytest.mark.real, pytest.mark.e2e,
              pytest.mark.timeout(2400)]  # builds the image when not cached (minutes)


def test_events_as_containers_with_a_consumer_kill_and_a_broker_restart(client: Any, runtime_image: str,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    faults = [{"kind": "kill-worker", "target": "worker:0", "at": "3s"},
              {"kind": "restart-store", "target": "service:kafka", "at": "6s"}]
    run_dir = run_and_check(_scenario("dbos", deploy="containers", faults=faults), "dbos", tmp_path, monkeypatch)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["deploy"]["mode"] == "containers"
    info = manifest["engines"]["dbos"]
    broker = info["services"]["kafka"]
    assert broker["inner_url"] == f"kafka:{kafka.CONTAINER_PORT}" and broker["container"].endswith("-kafka")
    host = broker["url"]
    assert host.startswith("127.0.0.1:") and info["events"]["bootstrap"] == host  # the driver: the published port
    assert info["events"]["consumer_bootstrap"] == broker["inner_url"]
    assert broker["settings"]["advertised.listeners"] == f"PLAINTEXT://kafka:{kafka.CONTAINER_PORT},HOST://{host}"
    assert broker["settings"]["log.flush.interval.messages"] == "1"  # strict, as for the process
    assert broker["version"].startswith(f"Apache Kafka {kafka.KAFKA_VERSION}")
    config = json.loads((run_dir / "engines/dbos/workers/worker-0.json").read_text())
    assert config["events"]["bootstrap"] == f"kafka:{kafka.CONTAINER_PORT}"  # the consumers: the stack's network
    history = list(ledger.read_dir(run_dir / "engines/dbos/history"))
    restart = [r for r in history if r["ev"] == "fault_end" and r.get("kind") == "restart-store"]
    start = next(r for r in history if r["ev"] == "fault_start" and r.get("kind") == "restart-store")
    assert start["service"] == "kafka" and start["container"] == broker["container"]
    assert len(restart) == 1 and restart[0]["restart_ms"] > 0
    kills = [r for r in history if r["ev"] == "fault_start" and r.get("kind") == "kill-worker"]
    assert kills and kills[0]["pids"]["worker:0"].endswith("-worker-0")
    assert not client.containers.list(all=True, filters={"label": f"{dockerhost.RUN}={manifest['short_id']}"})


def _long_events_run(engine: str) -> str:
    """exactly-once-events's program on ``engine`` under deploy: containers, one worker, a load far longer than
    the test waits, no fault (nothing but the signal ends it)."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "scenarios" / "usecases" / "exactly-once-events.yaml").read_text())
    doc.pop("description")
    doc.update(name="leftover-check-events", engines=[engine], deploy="containers", faults=[],
               load={"source": "kafka", "partitions": 2, "rate": 5, "warmup": "0s", "duration": "300s"},
               workers={"count": 1}, resources={"interval": 0, "baseline": 0})
    return yaml.safe_dump(doc)


# the containers of the run, by role: the broker (compose/extras.yaml), the engine's store (dbos: its own
# PostgreSQL; celery: Valkey, and the application database from compose/extras.yaml) and the consumer
EVENTS_ROLES = {"dbos": ("kafka", "postgres", "worker-0"), "celery": ("kafka", "postgres", "redis", "worker-0")}


# dbos SIGKILLed (the reaper cleans up); celery, whose stack gets both servers of compose/extras.yaml, interrupted
# (durabench's own cleanup): each engine with the other signal would add a minute and a half of suite time
@pytest.mark.parametrize(("engine", "sig"), [("dbos", signal.SIGKILL), ("celery", signal.SIGINT)],
                         ids=["dbos-SIGKILL", "celery-SIGINT"])
def test_no_container_outlives_an_events_run(engine: str, sig: int, client: Any, runtime_image: str,
                                             tmp_path: Path) -> None:
    """load.source: kafka under deploy: containers: signalled once the broker, the stores and the worker run as
    containers (each with the run's labels; celery's stack gets both servers of compose/extras.yaml) and the
    worker has consumed an event (the driver's producer at work), durabench leaves no container and no network
    of its run behind (by label or by name), no process and no scratch data."""
    scenario = tmp_path / "events.yaml"
    scenario.write_text(_long_events_run(engine))
    prefix: list[str] = []  # durabench-<short id>-<engine>-: the run's containers by name, labelled or not
    running: dict[str, Any] = {}

    def roles_run() -> bool:
        if not prefix:  # the manifest (written atomically before the engine starts) names the run
            prefix.extend(f"durabench-{json.loads(m.read_text())['short_id']}-{engine}-"
                          for m in tmp_path.glob("*/manifest.json"))
            return False
        running.clear()
        running.update({c.name.removeprefix(prefix[0]): c for c in client.containers.list(
            filters={"name": f"^/?{prefix[0]}"}, ignore_removed=True)})
        return set(EVENTS_ROLES[engine]) <= set(running)

    def consumed() -> bool:  # a step of an event's workflow in the worker's ledger
        return any(r["ev"] == "step_start" for d in tmp_path.glob(f"*/engines/{engine}/history")
                   for r in ledger.read_dir(d))

    with docker_support.running_run(scenario, tmp_path) as proc:
        docker_support.wait_until(proc, roles_run, f"{', '.join(EVENTS_ROLES[engine])} ran as containers")
        run_id = prefix[0].split("-")[1]
        owner = {dockerhost.LABEL: "1", dockerhost.OWNER: str(proc.pid), dockerhost.RUN: run_id}
        assert {role: c.labels for role, c in running.items() if owner.items() - c.labels.items()} == {}, \
            "every container of the run carries durabench's, its owner's and its run's labels"
        docker_support.wait_until(proc, consumed, "the worker consumed an event")
        docker_support.signal_and_expect_nothing_left(proc, sig, [client], [f"{dockerhost.OWNER}={proc.pid}",
                                                                            f"{dockerhost.RUN}={run_id}"],
                                                      tmp_path, prefixes=(f"durabench-{run_id}-",))
