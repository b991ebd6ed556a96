"""deploy: containers for the engines whose servers come from outside PyPI: the Restate server (npm) and the
production Temporal server on PostgreSQL (built from the Go module proxy), both in the runtime image. One run
of tests/e2e/containers-engines.yaml (quick.yaml's workload at 5/s, worker:0 SIGKILLed 5 s into the load) on
restate and temporal-pg as containers; the checker must find every workflow completed. Then the front doors
and Locust as containers. Skipped with the reason on a machine without a Docker daemon; required in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import dockerhost, ledger
from harness.run import image, temporal_server
from tests.conftest import ROOT

pytestmark = [pytest.mark.real, pytest.mark.e2e,
              pytest.mark.timeout(2400)]  # the first test builds the image when not cached (minutes)
ENGINES = ("restate", "temporal-pg")


def test_the_image_holds_every_server(client: Any, runtime_image: str) -> None:
    """The Restate server, the Temporal server and its SQL tool, Java 17 and Kafka's jars, the absurd plugin:
    each runs (or imports) inside the image, with no network."""
    script = ("set -e; \"$DURABENCH_CACHE\"/restate-server-*/node_modules/@restatedev/restate-server-linux-x64/bin/"
              "restate-server --version; \"$DURABENCH_TEMPORAL_SERVER_DIR\"/temporal-server --version; "
              "\"$DURABENCH_TEMPORAL_SERVER_DIR\"/temporal-sql-tool --version; java -version 2>&1; "
              "ls \"$DURABENCH_CACHE\"/kafka-*/libs | grep -c '^kafka'; "
              "python -c 'import durabench_absurd, absurd_sdk; from harness.run import kafka, services; "
              "print(kafka.jars_cached(), services.restate_binary().name)'")
    out = client.containers.run(runtime_image, ["sh", "-c", script], remove=True, network_mode="none").decode()
    assert "restate-server 1.7" in out, out
    assert "1.32.0" in out and 'openjdk version "17' in out, out
    assert out.strip().endswith("True restate-server"), out
    info = image.describe(client, runtime_image)
    assert info["servers"] == ["kafka-4.4.0", "restate-server-1.7.12", "temporal-server"]


@pytest.fixture(scope="module")
def engines_run(runtime_image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("containers-engines")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "tests/e2e/containers-engines.yaml", "--out",
                           str(out), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("engine", ENGINES)
def test_engines_as_containers_with_a_worker_kill(client: Any, engines_run: tuple[Path, dict[str, Any]],
                                                  engine: str) -> None:
    run_dir, summary = engines_run
    e = summary["engines"][engine]
    checker = json.loads((run_dir / f"engines/{engine}/checker.json").read_text())
    assert e["status"] == "ok" and e["verdict"] == "correct", e
    for kind in ("lost", "unknown", "unexpected", "missing_steps", "replayed_completed_steps"):
        assert checker["ids"][kind] == [], kind
    assert set(checker["ids"]["completed"]) == set(checker["ids"]["submitted"])
    assert e["completed"] == e["submitted"] == len(checker["ids"]["submitted"]) == 55  # 5/s for 11 s
    history = list(ledger.read_dir(run_dir / "engines" / engine / "history"))
    kill = next(r for r in history if r["ev"] == "fault_start" and r["kind"] == "kill-worker")
    assert kill["api_ms"] > 0 and kill["pids"]["worker:0"].endswith("-worker-0")
    starts = [r for r in history if r["ev"] == "worker_start" and r["worker"] == "worker:0"]
    assert len(starts) == 2  # the container started again by the supervisor after the kill
    assert all(r["container"].endswith(f"-worker-{r['worker'][-1]}") for r in starts)
    assert {r["src"] for r in history if r["ev"] == "step_start"} == {"worker:0", "worker:1"}
    assert e["recovery"][0]["kind"] == "kill-worker" and e["recovery"][0]["end_s"] is not None
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["deploy"]["mode"] == "containers"
    svc = manifest["engines"][engine]["services"]
    if engine == "restate":
        assert svc["restate"]["inner_url"] == "http://restate:8080"
        assert svc["restate"]["version"].startswith("1.7"), svc["restate"]
    else:
        server = svc[temporal_server.NAME]
        assert server["inner_url"] == "temporal-server:7233"
        assert server["settings"]["postgres_via"] == "postgres:5432"
        assert server["version"].startswith("Temporal Server 1.32.0"), server
        assert (run_dir / f"engines/{engine}/logs/{temporal_server.NAME}-setup.log").read_text().count(
            "namespace") >= 1
    assert not client.containers.list(all=True, filters={"label": f"{dockerhost.RUN}={manifest['short_id']}"})


def test_front_doors_and_locust_as_containers(client: Any, runtime_image: str, tmp_path: Path) -> None:
    """load.generator: locust under deploy: containers: the front doors, the Locust master and its workers
    are containers of compose/front.yaml on the engine's network; every arrival of the schedule goes through
    them, and the checker finds every workflow completed."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "tests/e2e/containers-locust.yaml", "--out",
                           str(tmp_path), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    e = json.loads((run_dir / "summary.json").read_text())["engines"]["dbos"]
    edir = run_dir / "engines" / "dbos"
    plan = json.loads((edir / "locust" / "plan.json").read_text())
    expected = [f"{plan['prefix']}-{i:07d}" for i in range(1, 25 * 4 + 1)]  # rate x (warmup + duration)
    history = list(ledger.read_dir(edir / "history"))
    ready = {r["src"]: r["url"] for r in history if r["ev"] == "ready" and r["src"].startswith("front:")}
    assert sorted(ready) == ["front:0", "front:1"]
    assert all(not url.startswith("http://127.") for url in ready.values()), ready  # named on the stack's network
    assert sorted(plan["fronts"]) == sorted(ready.values())
    invokes = {r["wf"]: r for r in history if r["ev"] == "invoke"}
    acks = {r["wf"]: r["outcome"] for r in history if r["ev"] == "ack"}
    assert sorted(invokes) == expected and {invokes[wf]["src"] for wf in expected} == {"front:0", "front:1"}
    assert set(acks.values()) == {"ok"} and sorted(acks) == expected
    ids = json.loads((edir / "checker.json").read_text())["ids"]
    assert ids["completed"] == expected and e["verdict"] == "correct" and e["lost"] == 0
    assert e["locust"]["requests"] == len(expected) and e["locust"]["failures"] == 0
    for log in ("front-0.log", "front-1.log", "locust-master.log", "locust-worker-0.log", "locust-worker-1.log"):
        assert (edir / "logs" / log).stat().st_size > 0, log  # collected from the containers
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert not client.containers.list(all=True, filters={"label": f"{dockerhost.RUN}={manifest['short_id']}"})
