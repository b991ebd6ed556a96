"""Locust as the load generator, through the HTTP front door: every intended arrival reaches the
engine exactly once with the pacer's id and intended time, and the front door's errors are recorded
as the driver records them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engines.memory import socket_path
from harness import ledger
from harness.contract import Workload
from harness.run.front import FrontConfig
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
DURABENCH = [sys.executable, "-m", "harness.cli"]
READY_TIMEOUT_S = 60.0


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{url}/workflows", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_ready(history: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the front door exited while starting"
        ready = [r for r in ledger.read_dir(history) if r["ev"] == "ready"]
        if ready:
            return str(ready[0]["url"])
        time.sleep(0.05)
    raise AssertionError("the front door wrote no ready record")


class _BrokenWorker:
    """A memory-engine worker socket that takes a request and hangs up without answering."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.path = path
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(1000)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def test_front_door_answers_4xx_for_bad_requests_and_5xx_for_engine_errors(tmp_path: Path) -> None:
    """A real front door (uvicorn, `durabench front`) on the memory engine's real client."""
    history = tmp_path / "history"
    history.mkdir()
    run_id = f"f{os.getpid():07d}"[-8:]
    config = FrontConfig("memory", run_id, 0, {}, Workload(1, 0.0, 8), 1, {}, str(tmp_path), str(history), 5.0)
    config.dump(tmp_path / "front.json")
    proc = subprocess.Popen([*DURABENCH, "front", "--config", str(tmp_path / "front.json")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = _BrokenWorker(socket_path(run_id, "memory", 0))
    try:
        url = _wait_ready(history, proc)
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        status, doc = _post(url, b'{"id": "wf-1"}')
        assert status == 400 and "intended_ns" in doc["error"]
        status, doc = _post(url, json.dumps({"id": "wf-2", "intended_ns": time.time_ns()}).encode())
        assert status == 502 and doc["outcome"] == "unknown", doc  # the worker hung up: outcome indeterminate
        worker.close()
        status, doc = _post(url, json.dumps({"id": "wf-3", "intended_ns": time.time_ns()}).encode())
        assert status == 503 and doc["outcome"] == "fail", doc  # no worker: the engine surely will not run it
    finally:
        worker.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    records = [r for r in ledger.read_dir(history) if r["ev"] in ("invoke", "ack")]
    assert [(r["ev"], r["wf"], r.get("outcome")) for r in records] == [
        ("invoke", "wf-2", None), ("ack", "wf-2", "unknown"), ("invoke", "wf-3", None), ("ack", "wf-3", "fail")]


@pytest.mark.real
def test_locust_drives_dbos_through_front_doors(tmp_path: Path) -> None:
    proc = subprocess.run([*DURABENCH, "run", "tests/e2e/locust.yaml", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    report = (run_dir / "report.md").read_text()
    assert "## Load generator: Locust" in report
    for name in ("dbos",):  # the memory engine through Locust: the remote Locust worker's test below
        e = summary["engines"][name]
        edir = run_dir / "engines" / name
        plan = json.loads((edir / "locust" / "plan.json").read_text())
        expected = [f"{plan['prefix']}-{i:07d}" for i in range(1, 25 * 4 + 1)]  # rate x (warmup + duration)
        history = ledger.read_dir(edir / "history")
        start = next(r for r in history if r["ev"] == "load_start")
        assert (start["src"], start["generator"], start["locust_workers"], start["front_doors"]) == (
            "locust", "locust", 2, 2)
        invokes = {r["wf"]: r for r in history if r["ev"] == "invoke"}
        acks = {r["wf"]: r["outcome"] for r in history if r["ev"] == "ack"}
        assert sorted(invokes) == expected  # every arrival of the schedule, once, with the pacer's id
        assert {invokes[wf]["src"] for wf in expected} == {"front:0", "front:1"}
        for i, wf in enumerate(expected):  # the pacer's intended times: uniform at 25/s from the load start
            assert invokes[wf]["intended_ns"] == start["ns"] + int(i / 25 * 1e9)
        assert set(acks.values()) == {"ok"} and sorted(acks) == expected
        ids = json.loads((edir / "checker.json").read_text())["ids"]
        assert ids["completed"] == expected and ids["acknowledged"] == expected
        assert e["verdict"] == "correct" and e["lost"] == 0 and e["unknown"] == 0
        assert e["load_generator"] == "locust"
        assert e["locust"]["requests"] == len(expected) and e["locust"]["failures"] == 0
        assert (edir / "locust" / "report.html").stat().st_size > 0
        assert e["e2e_latency_ms"]["count"] == 75  # the measured window: arrivals 25..99
        assert e["e2e_latency_ms"]["p50"] >= e["submit_latency_ms"]["p50"]
        assert summary["engines"][name]["achieved_rate_per_s"] > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "locust" in manifest["engines"]["dbos"]["versions"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "scenarios/quick.yaml", "--locust-ui"], "--locust-ui needs load.generator: locust"),
        (["run", "scenarios/quick.yaml", "--generator", "gatling"], "load.generator"),
        (["front", "--config", "/nonexistent.json"], "not a front-door config"),
        (["worker", "--config", "/nonexistent.json", "--collector", "http://127.0.0.1:1"], "not a worker config"),
        (["collect", "--dir", "/nonexistent"], "not a directory"),
    ],
)
def test_scale_out_user_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run([*DURABENCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("durabench: error: ") and message in line, line


def test_a_front_door_that_cannot_start_fails_the_load_quickly(tmp_path: Path) -> None:
    """The front door exits (unknown engine): the load fails with the reason instead of waiting forever."""
    import asyncio

    from harness.contract import EngineContext
    from harness.errors import ServiceError
    from harness.ledger import Follower, Ledger
    from harness.run.driver import LiveView
    from harness.run.locustload import LocustLoad
    from harness.scenario import LoadSpec

    history = tmp_path / "history"
    history.mkdir()
    (tmp_path / "logs").mkdir()
    ctx = EngineContext("nosuch", "abcd1234", {}, Workload(1, 0.0, 8), 1, {}, tmp_path, history)
    view = LiveView(1, Follower(history))
    load = LocustLoad(ctx, None, LoadSpec(generator="locust"), 1, Ledger(history, "driver"), view)  # type: ignore[arg-type]
    with pytest.raises(ServiceError, match="died while waiting for the front doors"):
        asyncio.run(load.run())
    assert "unknown engine" in (tmp_path / "logs" / "front-0.log").read_text()
    assert not load._procs  # every process it started was stopped


REMOTE_LOCUST = """\
name: remote-locust
engines: [memory]
workload: {steps: 1, step_duration: 10ms, payload_bytes: 8}
load: {rate: 20, warmup: 0.5s, duration: 2s, generator: locust, locust_workers: 1, locust_remote_workers: 1}
workers: {count: 1}
floors: {enabled: false}
resources: {interval: 0s}
"""


def test_a_locust_worker_from_another_host_takes_its_share(tmp_path: Path) -> None:
    """`durabench locust-worker --master HOST:PORT` (here from its own directory) joins the run: the plan
    comes from the master, and every arrival is sent once (each worker sends only its own share, so both
    sent theirs)."""
    import re
    import threading

    (tmp_path / "remote.yaml").write_text(REMOTE_LOCUST)
    run = subprocess.Popen([*DURABENCH, "run", str(tmp_path / "remote.yaml"), "--out", str(tmp_path / "out")],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert run.stderr is not None
    threading.Thread(target=lambda: lines.extend(run.stderr), daemon=True).start()  # type: ignore[arg-type]
    joiner = None
    try:
        deadline = time.monotonic() + 120
        master = None
        while master is None and time.monotonic() < deadline and run.poll() is None:
            found = [re.search(r"durabench locust-worker --master (\S+)", line) for line in list(lines)]
            master = next((m.group(1) for m in found if m), None)
            time.sleep(0.1)
        assert master is not None, "".join(lines)
        elsewhere = tmp_path / "host-b"
        elsewhere.mkdir()
        joiner = subprocess.Popen([*DURABENCH, "locust-worker", "--master", master], cwd=elsewhere,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert run.wait(timeout=300) == 0, "".join(lines)[-3000:]
        assert joiner.wait(60) == 0
    finally:
        for proc in (run, joiner):
            if proc is not None and proc.poll() is None:
                proc.kill()
    (run_dir,) = list((tmp_path / "out").iterdir())
    history = ledger.read_dir(run_dir / "engines" / "memory" / "history")
    start = next(r for r in history if r["ev"] == "load_start")
    assert start["locust_workers"] == 2
    plan = json.loads((run_dir / "engines" / "memory" / "locust" / "plan.json").read_text())
    expected = [f"{plan['prefix']}-{i:07d}" for i in range(1, 51)]  # 20/s x 2.5 s
    acks = {r["wf"]: r["outcome"] for r in history if r["ev"] == "ack"}
    assert sorted(acks) == expected and set(acks.values()) == {"ok"}
