"""Processes the harness starts never outlive it: SIGKILL of the harness included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import procs
from harness.run import services
from tests.conftest import ROOT

HARNESS = """
import sys, time
from harness import procs
child = procs.spawn(["sleep", "600"])
grandchild = procs.spawn(["sh", "-c", "sleep 600 & wait"])
scratch = procs.scratch_dir("durabench-data-")
(scratch / "postgres").mkdir()
(scratch / "postgres" / "PG_VERSION").write_text("18")
print(child.pid, grandchild.pid, scratch, flush=True)
time.sleep(600)
"""


def _gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    alive = []
    for pid in pids:
        try:
            alive.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, still = psutil.wait_procs(alive, timeout=timeout_s)
    return not [p for p in still if p.status() != psutil.STATUS_ZOMBIE]


def _group_members(pgid: int) -> list[int]:
    return [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_children_die_with_the_harness(sig: int, tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "DURABENCH_STATE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path / "tmp")}
    harness = subprocess.Popen([sys.executable, "-c", HARNESS], stdout=subprocess.PIPE, text=True, env=env)
    assert harness.stdout is not None
    pids, scratch = harness.stdout.readline().rsplit(maxsplit=1)
    child, grandchild = (int(x) for x in pids.split())
    assert Path(scratch).parent == tmp_path / "tmp" and (Path(scratch) / "postgres/PG_VERSION").is_file()
    deadline = time.monotonic() + 10
    while len(_group_members(grandchild)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # sh has not forked its background sleep yet
    members = _group_members(child) + _group_members(grandchild)
    assert len(members) >= 3  # sleep, sh and its background sleep
    harness.send_signal(sig)
    harness.wait(10)
    assert _gone(members), "a process the harness started outlived it"
    deadline = time.monotonic() + 10  # the reaper removes the scratch directory after killing the groups
    while Path(scratch).exists():
        assert time.monotonic() < deadline, f"the harness's scratch directory {scratch} outlived it"
        time.sleep(0.01)


def test_leftovers_of_a_dead_harness_are_cleaned_on_next_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    scratch = tmp_path / "durabench-data-dead"
    (scratch / "postgres").mkdir(parents=True)
    (tmp_path / f"{dead_owner.pid}.json").write_text(
        json.dumps({"owner": dead_owner.pid, "groups": {str(victim.pid): psutil.Process(victim.pid).create_time()},
                    "scratch": [str(scratch)]}))
    monkeypatch.setattr(procs, "STATE_DIR", tmp_path)
    assert procs.reap_leftovers() == [victim.pid]
    assert victim.wait(10) == -signal.SIGKILL
    assert not list(tmp_path.glob("*.json")) and not scratch.exists()


def test_the_next_start_leaves_its_own_process_s_live_groups_alone(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started in a process that already runs servers (a suite, a test module's fixture, a notebook)
    must not kill them, nor remove their data: the registry file of this very process is live."""
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        scratch = tmp_path / "durabench-data-mine"
        (scratch / "postgres").mkdir(parents=True)
        (tmp_path / f"{os.getpid()}.json").write_text(
            json.dumps({"owner": os.getpid(), "groups": {str(victim.pid): psutil.Process(victim.pid).create_time()},
                        "scratch": [str(scratch)]}))
        monkeypatch.setattr(procs, "STATE_DIR", tmp_path)
        assert procs.reap_leftovers() == []
        assert victim.poll() is None and scratch.exists() and (tmp_path / f"{os.getpid()}.json").exists()
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.real
def test_services_start_on_loopback_and_stop(tmp_path: Path) -> None:
    with services.running(["postgres", "redis", "temporal"], tmp_path) as svc:
        pids = []
        for s in svc.services.values():
            assert s.proc is not None
            leader = psutil.Process(s.proc.pid)  # postgres children setsid() themselves: walk the tree
            pids += [leader.pid] + [c.pid for c in leader.children(recursive=True)]
            listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == s.port
                         and c.status == psutil.CONN_LISTEN}
            assert listening == {"127.0.0.1"}, (s.name, listening)
        assert svc.describe()["postgres"]["settings"]["synchronous_commit"] == "on"
        assert svc.describe()["redis"]["settings"]["appendfsync"] == "always"
        assert svc.describe()["temporal"]["settings"]["sqlite_synchronous"] == "FULL"
        assert len(pids) > 3  # postgres has background processes
    assert _gone(pids)


LOCUST_RUN = """\
name: orphans
engines: [memory]
workload: {steps: 1, step_duration: 0s, payload_bytes: 8}
load: {rate: 5, warmup: 0s, duration: 120s, generator: locust, locust_workers: 2, front_doors: 2}
workers: {count: 1}
floors: {enabled: false}
resources: {interval: 0s}
"""


@pytest.mark.e2e
def test_locust_and_front_doors_die_with_a_sigkilled_durabench(tmp_path: Path) -> None:
    """SIGKILL of durabench mid-load: its Locust master and workers, front doors and engine workers all go."""
    (tmp_path / "orphans.yaml").write_text(LOCUST_RUN)
    out = tmp_path / "out"
    harness = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(tmp_path / "orphans.yaml"),
                                "--out", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        started = False
        while not started and time.monotonic() < deadline:
            assert harness.poll() is None, "durabench exited before the load started"
            started = any('"ev":"load_start"' in p.read_text()
                          for p in out.glob("*/engines/memory/history/locust.*"))
            time.sleep(0.1)
        assert started, "the Locust master never started the load"
        descendants = psutil.Process(harness.pid).children(recursive=True)
        cmdlines = [p.cmdline() for p in descendants]
        assert sum("locust" in c and "--master" in c for c in cmdlines) == 1, cmdlines
        assert sum("locust" in c and "--worker" in c for c in cmdlines) == 2, cmdlines
        assert sum("front" in c and "--config" in c for c in cmdlines) == 2, cmdlines
    finally:
        harness.kill()  # the SIGKILL under test (and, should an assertion fail, no stray run)
        harness.wait(10)
    assert _gone([p.pid for p in descendants]), "a process durabench started outlived its SIGKILL"
RESTATE_HARNESS = """
import sys, time
from pathlib import Path
from harness.run import services
with services.running(["restate"], Path(sys.argv[1]), "relaxed") as svc:
    print(svc.services["restate"].proc.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.real
def test_restate_server_listens_on_loopback_and_dies_with_a_killed_harness(tmp_path: Path) -> None:
    """The Restate server is the npm package's binary itself (not its Node wrapper), so a SIGKILL of
    durabench takes it down; every port it opens is on loopback; the profile sets its log's fsync."""
    env = {**os.environ, "DURABENCH_STATE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    harness = subprocess.Popen([sys.executable, "-c", RESTATE_HARNESS, str(tmp_path)], stdout=subprocess.PIPE,
                               text=True, env=env)
    assert harness.stdout is not None
    pid = int(harness.stdout.readline())
    server = psutil.Process(pid)
    assert Path(server.exe()).name == "restate-server"
    listening = {c.laddr.ip for c in server.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}
    argv = server.cmdline()
    config = Path(argv[argv.index("--config-file") + 1]).read_text()
    assert "[log-server]\nrocksdb-disable-wal-fsync = true" in config  # relaxed: no fsync per write batch
    harness.send_signal(signal.SIGKILL)
    harness.wait(10)
    assert _gone([pid]), "the Restate server outlived a SIGKILLed harness"
