"""exactly-once-events under deploy: containers (tests/e2e/test_events.py's dbos case, same checks): the Kafka
broker is a container of the stack (compose/extras.yaml) with one listener for the worker containers on the
stack's network and one published on loopback for the driver; worker:0's container is SIGKILLed during the
load and the broker's container is SIGKILLed and restarted after it. The checker's applied 0/1/>1 must equal a
direct count of the live table; the consumers read from kafka:9092, the driver from the published port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import dockerhost, ledger
from harness.run import kafka
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
