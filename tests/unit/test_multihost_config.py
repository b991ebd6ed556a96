"""Multi-host deploy: containers without a daemon: the scenario's ``containers`` keys and flags, the
advertised address, the reaper's protocol and the wider port binding only when asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import dockerhost, scenario
from harness.errors import ScenarioError, UserError
from harness.run import containers
from tests.conftest import ROOT

BASE = {"name": "x", "engines": ["dbos"], "load": {"warmup": "1s", "duration": "10s"}}
MULTI = {"workers_daemon": "ssh://bench@worker-host", "advertise": "192.0.2.10"}


def test_containers_keys() -> None:
    sc = scenario.parse({**BASE, "deploy": "containers", "containers": MULTI}, "s.yaml")
    assert sc.containers.workers_daemon == "ssh://bench@worker-host" and sc.containers.advertise == "192.0.2.10"
    assert scenario.parse(BASE, "s.yaml").containers.workers_daemon is None
    with pytest.raises(ScenarioError, match=r"containers\.advertize is not a known field"):
        scenario.parse({**BASE, "deploy": "containers", "containers": {**MULTI, "advertize": "x"}}, "s.yaml")
    with pytest.raises(ScenarioError, match=r"containers\.workers_daemon: expected deploy: containers"):
        scenario.parse({**BASE, "containers": MULTI}, "s.yaml")
    with pytest.raises(ScenarioError, match=r"containers\.advertise: expected a value: workers_daemon and advertise"):
        scenario.parse({**BASE, "deploy": "containers", "containers": {"workers_daemon": "ctx"}}, "s.yaml")
    with pytest.raises(ScenarioError, match=r"containers\.workers_daemon: expected a value"):
        scenario.parse({**BASE, "deploy": "containers", "containers": {"advertise": "192.0.2.10"}}, "s.yaml")
    for bad in ("127.0.0.1", "0.0.0.0", "worker-host"):
        with pytest.raises(ScenarioError, match=r"containers\.advertise"):
            scenario.parse({**BASE, "deploy": "containers", "containers": {**MULTI, "advertise": bad}}, "s.yaml")


def test_flags_override_the_scenario() -> None:
    sc = scenario.parse(BASE, "s.yaml", {"deploy": "containers", "workers_daemon": "bench-2",
                                         "advertise": "192.0.2.10"})
    assert sc.containers.workers_daemon == "bench-2" and sc.overrides["advertise"] == "192.0.2.10"


def test_flags_without_containers_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "scenarios/quick.yaml", "--out", str(tmp_path),
                           "--workers-docker-host", "bench-2", "--advertise", "192.0.2.10"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "durabench: error: scenarios/quick.yaml: containers.workers_daemon: expected deploy: containers (the "
        "workers' daemon places worker containers), given 'bench-2'"]


def test_servers_are_published_beyond_loopback_only_on_the_advertised_address() -> None:
    ((key, bindings),) = containers._ports(["127.0.0.1::5432"], "127.0.0.1").items()
    assert key == "5432/tcp" and [host for host, _ in bindings] == ["127.0.0.1", "127.0.0.1"]
    assert all(port > 0 for _, port in bindings)
    ((_, bindings),) = containers._ports(["127.0.0.1::5432"]).items()
    assert [host for host, _ in bindings] == ["127.0.0.1"]


def test_the_advertised_address_must_be_this_machine_s() -> None:
    with pytest.raises(UserError, match=r"containers.advertise '203.0.113.9' is not an address of this machine"):
        containers.workers_daemon("unix:///nonexistent.sock", "203.0.113.9")


def test_the_workers_daemon_by_url_or_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_containers_config import _docker_config

    assert dockerhost.endpoint_named("tcp://10.9.8.7:2376") == dockerhost.Endpoint("tcp://10.9.8.7:2376")
    _docker_config(tmp_path, monkeypatch, "bench-2", "ssh://bench@worker-host")
    assert dockerhost.endpoint_named("bench-2") == dockerhost.Endpoint("ssh://bench@worker-host", "bench-2", None)
    with pytest.raises(UserError, match="'nope' is neither a daemon URL"):
        dockerhost.endpoint_named("nope")
    with pytest.raises(UserError, match=r"no Docker daemon answers at unix:///nonexistent\.sock"):
        dockerhost.connect(1, dockerhost.endpoint_named("unix:///nonexistent.sock"))


def test_owners_of_another_host_are_never_judged_dead_here() -> None:
    import socket

    dead = {dockerhost.OWNER: "1", dockerhost.OWNER_START: "1.0"}
    assert not dockerhost._owner_alive(dead)
    assert not dockerhost._owner_alive({**dead, dockerhost.OWNER_HOST: socket.gethostname()})
    assert dockerhost._owner_alive({**dead, dockerhost.OWNER_HOST: "another-host"})
    assert dockerhost.owner_labels("r")[dockerhost.OWNER_HOST] == socket.gethostname()


def test_the_reaper_is_told_of_each_daemon() -> None:
    """``D<pid>`` for the docker CLI's daemon, ``D<pid> <daemon>`` for the workers' one: a reaper told of
    daemons that do not answer exits cleanly (nothing of ours can run there)."""
    proc = subprocess.run([sys.executable, "-m", "harness.reaper"], input=b"D1\nD1 unix:///nonexistent.sock\n",
                          capture_output=True, timeout=60, check=False, env={"DOCKER_HOST": "unix:///nonexistent.sock",
                                                                              "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
