"""Multi-host deploy: containers, the local case: a second dockerd on this machine, with its own socket,
data root, exec root and pid file under a temporary directory (and the no-iptables flags of .ci/run),
acts as the workers' daemon (``containers.workers_daemon``) while PostgreSQL and the driver stay with
the first one. Nothing is bind-mounted into the worker containers: the image is copied through the API,
the config goes in with put_archive, the ledgers are shipped to a collector on the advertised address
and fetched back with get_archive. The fixture starts the daemon and stops it, and leaves the host's
network as it found it. Skipped with the reason where no daemon or no dockerd is available; required
in CI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness import dockerhost, ledger, procs
from harness.run import resources
from tests import docker_support
from tests.conftest import ROOT

pytestmark = [pytest.mark.real, pytest.mark.e2e, pytest.mark.timeout(1800)]
DAEMON_START_S = 60.0
ADDRESS_POOL = "base=10.213.0.0/16,size=24"  # away from the first daemon's 172.17-31 networks


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the multi-host container tests, but: {reason}")
    pytest.skip(reason)


def _advertise() -> str:
    """The IPv4 address of the interface of the default route: what another host would reach this one at
    (a container of the second daemon reaches it through its network's gateway, the host)."""
    with open("/proc/net/route") as fh:
        default = [line.split()[0] for line in fh.read().splitlines()[1:] if line.split()[1] == "00000000"]
    addresses = psutil.net_if_addrs()
    for iface in default:
        for addr in addresses.get(iface, []):
            if addr.family.name == "AF_INET":
                return str(addr.address)
    _skip_or_fail("no interface with a default route: no address to advertise to the second daemon")
    return ""


def _links() -> set[str]:
    return set(psutil.net_if_addrs())


def _bridges_of(url: str) -> set[str]:
    """The host bridges of the daemon's user-defined networks (``br-<id>``), after removing those networks."""
    try:
        c = dockerhost.connect(dockerhost.PING_TIMEOUT_S, dockerhost.Endpoint(url))
    except dockerhost.UserError:
        return set()
    try:
        networks = [n for n in c.networks.list() if n.name not in ("bridge", "host", "none")]
        for n in networks:
            try:
                n.remove()
            except Exception:  # a container still on it: dockerd's stop removes that container
                pass
        return {f"br-{n.id[:12]}" for n in networks}
    finally:
        c.close()


@pytest.fixture(scope="module")
def second_daemon(client: Any) -> Iterator[str]:
    """A second dockerd on this machine (unix socket under a temporary directory), started through
    harness.procs (nothing outlives the tests), stopped at the end; yields its URL."""
    if shutil.which("dockerd") is None:
        _skip_or_fail("no dockerd on PATH to start a second daemon (Debian: apt-get install docker.io)")
    root = Path(tempfile.mkdtemp(prefix="durabench-d2-", dir="/tmp"))  # short: unix socket paths are limited
    url = f"unix://{root}/docker.sock"
    with open("/proc/sys/net/ipv4/ip_forward") as fh:
        forward = fh.read()
    proc = procs.spawn(["dockerd", "--host", url, "--data-root", str(root / "data"), "--exec-root",
                        str(root / "exec"), "--pidfile", str(root / "docker.pid"), "--iptables=false",
                        "--ip-forward=false", "--bridge=none", "--default-address-pool", ADDRESS_POOL],
                       log=root / "dockerd.log")
    try:
        deadline = time.monotonic() + DAEMON_START_S
        while dockerhost.available(dockerhost.Endpoint(url)) is not None:
            assert proc.poll() is None, (root / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"the second dockerd did not answer within {DAEMON_START_S:g}s"
            time.sleep(0.1)
        yield url
    finally:
        bridges = _bridges_of(url)  # none if every run cleaned up; the first daemon's are left alone
        procs.stop(proc, timeout_s=30)
        for link in bridges & _links():  # a network's bridge that dockerd left behind
            subprocess.run(["ip", "link", "delete", link], check=False)
        with open("/proc/sys/net/ipv4/ip_forward") as fh:
            assert fh.read() == forward
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def workers_client(second_daemon: str) -> Iterator[Any]:
    c = dockerhost.connect(where=dockerhost.Endpoint(second_daemon))
    yield c
    c.close()


@pytest.fixture(scope="module")
def quick_run(client: Any, runtime_image: str, second_daemon: str, workers_client: Any,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """scenarios/quick.yaml on dbos (worker:0 SIGKILLed at 10 s), the workers on the second daemon."""
    out = tmp_path_factory.mktemp("multihost")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "scenarios/quick.yaml", "--engines", "dbos",
                           "--deploy", "containers", "--workers-docker-host", second_daemon, "--advertise",
                           _advertise(), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    if "copying" in proc.stdout:  # the image went to the second daemon, with progress lines
        assert "MB sent" in proc.stdout and "on the workers' daemon" in proc.stdout, proc.stdout[:3000]
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_quick_with_workers_on_a_second_daemon(client: Any, workers_client: Any, second_daemon: str,
                                               quick_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = quick_run
    e = summary["engines"]["dbos"]
    checker = json.loads((run_dir / "engines/dbos/checker.json").read_text())
    assert e["status"] == "ok" and e["verdict"] == "correct", e
    assert e["completed"] == e["submitted"] == len(checker["ids"]["submitted"]) > 400
    for kind in ("lost", "unknown", "unexpected", "missing_steps", "replayed_completed_steps"):
        assert checker["ids"][kind] == [], kind
    manifest = json.loads((run_dir / "manifest.json").read_text())
    deploy = manifest["deploy"]
    assert deploy["daemon"]["docker_host"] != second_daemon
    assert deploy["workers_daemon"]["docker_host"] == second_daemon and deploy["workers_daemon"]["id"]
    assert deploy["workers_daemon"]["image_transfer"]["id"] == deploy["image"]["id"]
    assert deploy["advertise"] == _advertise()
    postgres = manifest["engines"]["dbos"]["services"]["postgres"]
    assert postgres["url"].startswith("postgresql://postgres@127.0.0.1:")
    assert postgres["inner_url"].startswith(f"postgresql://postgres@{_advertise()}:")  # the workers' way in
    history = list(ledger.read_dir(run_dir / "engines/dbos/history"))
    kill = next(r for r in history if r["ev"] == "fault_start" and r["kind"] == "kill-worker")
    assert kill["api_ms"] > 0 and kill["pids"]["worker:0"].endswith("-worker-0")
    starts = [r for r in history if r["ev"] == "worker_start" and r["worker"] == "worker:0"]
    assert len(starts) == 2  # the container on the second daemon started again after the kill
    assert {r["src"] for r in history if r["ev"] == "step_start"} == {"worker:0", "worker:1"}
    assert [r for r in history if r["ev"] == "step_start" and r["src"] == "worker:0" and r["ns"] > kill["ns"]]
    # every worker's spool fetched back (get_archive, after its container stopped) holds what was shipped
    for i in (0, 1):
        spool = run_dir / f"engines/dbos/hosts/worker-{i}/spool"
        files = sorted(spool.glob(f"worker-{i}.*.jsonl"))  # one per worker pid (a restart may reuse it)
        assert files
        for mine in files:
            assert (run_dir / "engines/dbos/history" / mine.name).read_bytes() == mine.read_bytes()
        assert (spool / "worker.log").stat().st_size > 0
    # the workers' cost from the second daemon's stats (no /proc reading: another machine's processes)
    records = resources.read_series(run_dir / "engines/dbos" / resources.RESOURCES_FILE)
    for name in ("worker:0", "worker:1"):
        series = [r for r in records if r["component"] == name]
        assert series and all(r["source"] == "docker" and r["proc_cpu_s"] is None for r in series)
        assert series[-1]["cpu_s"] > 0.5 and max(r["rss_bytes"] for r in series) > 10e6
    run_label = f"{dockerhost.RUN}={manifest['short_id']}"
    assert docker_support.owned(client, run_label) == [] and docker_support.owned(workers_client, run_label) == []


LONG_RUN = """
name: leftover-multihost
engines: [dbos]
deploy: containers
load: {rate: 5, warmup: 1s, duration: 120s}
workers: {count: 2}
floors: {enabled: false}
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_no_container_outlives_durabench_on_either_daemon(
        sig: int, client: Any, workers_client: Any, second_daemon: str, quick_run: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    """SIGKILL: the reaper cleans both daemons; SIGINT (Ctrl-C): the run's own cleanup does (the image is
    already on the second daemon: quick_run put it there)."""
    scenario = tmp_path / "long.yaml"
    scenario.write_text(LONG_RUN)
    proc = docker_support.start_run(scenario, tmp_path, "--workers-docker-host", second_daemon,
                                    "--advertise", _advertise())
    label = f"{dockerhost.OWNER}={proc.pid}"
    docker_support.wait_until(  # both workers running there
        proc, lambda: len(docker_support.labelled(workers_client, label)) >= 2,
        "the workers came up on the second daemon")
    assert docker_support.labelled(client, label)  # and PostgreSQL on the first
    docker_support.signal_and_expect_nothing_left(proc, sig, [client, workers_client], [label], tmp_path)


def test_leftovers_on_the_workers_daemon(workers_client: Any, second_daemon: str, runtime_image: str,
                                         quick_run: tuple[Path, dict[str, Any]]) -> None:
    """At the next start: a dead owner's container is removed there; one whose owner is another host's
    is left alone (only that host can tell whether its owner lives)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    labels = {dockerhost.LABEL: "1", dockerhost.OWNER: str(dead.pid), dockerhost.OWNER_START: "1.0",
              dockerhost.RUN: "leftover-mh"}
    orphan = workers_client.containers.create(runtime_image, ["sleep", "600"], labels=labels, network_mode="none")
    elsewhere = workers_client.containers.create(runtime_image, ["sleep", "600"], network_mode="none",
                                                 labels={**labels, dockerhost.OWNER_HOST: "another-host"})
    try:
        removed = dockerhost.remove_leftovers(dockerhost.Endpoint(second_daemon))
        assert orphan.name in removed and elsewhere.name not in removed
    finally:
        for c in (orphan, elsewhere):
            try:
                c.remove(force=True)
            except Exception:  # removed by the test already
                pass
