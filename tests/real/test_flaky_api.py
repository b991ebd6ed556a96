"""The flaky API (harness/run/flaky_api.py) as a real server: behaviour, its log, no orphan."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from harness import ledger, program
from harness.run.flaky_api import FlakyApi
from tests.conftest import ROOT
from tests.real.test_procs import _gone

pytestmark = pytest.mark.real

BASE = {"latency": {"dist": "fixed", "value_s": 0.0}, "error_rate": 0.0, "hang_rate": 0.0, "rate_limit": 0.0,
        "burst": 0, "seed": 3}


def _records(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [r for r in ledger.read_dir(path) if r["ev"] == "api_request"]


def test_errors_rate_limit_and_hangs_are_answered_and_logged(tmp_path: Path) -> None:
    api = FlakyApi({**BASE, "error_rate": 0.5, "hang_rate": 0.1}, tmp_path, tmp_path)
    api.start()
    try:
        outs = [program.call_sync(api.url, f"wf{i}", 2, 1, "worker:0", 0.3) for i in range(60)]
    finally:
        api.stop()
    statuses = Counter(str(o.status) for o in outs)
    assert statuses["200"] and statuses["500"] and statuses["503"] and statuses["timeout"]
    records = _records(tmp_path)
    assert len(records) == 60  # every request that reached the server, once it was settled
    logged = Counter(str(r["status"]) for r in records)
    assert logged["hang"] == statuses["timeout"]  # a hang is logged when the client gives up
    assert logged["200"] == statuses["200"]
    assert {r["wf"] for r in records} == {f"wf{i}" for i in range(60)} and {r["step"] for r in records} == {2}


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    api = FlakyApi({**BASE, "rate_limit": 2.0, "burst": 2}, tmp_path, tmp_path)
    api.start()

    async def burst() -> list[program.CallOutcome]:
        return await asyncio.gather(*(program.call_async(api.url, "wf", 0, n, "worker:0", 2.0) for n in range(6)))

    try:
        outs = asyncio.run(burst())
    finally:
        api.stop()
    limited = [o for o in outs if o.status == 429]
    assert sum(1 for o in outs if o.ok) == 2 and len(limited) == 4
    assert all(o.retry_after_s is not None and 0 < o.retry_after_s <= 2.0 for o in limited)


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    api = FlakyApi(BASE, tmp_path, tmp_path)
    api.start()
    try:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        conn.request("POST", program.API_PATH)  # no workflow / stage headers
        assert conn.getresponse().status == 400
        conn.close()
    finally:
        api.stop()
    assert _records(tmp_path) == []


HARNESS = """
import sys, time
from pathlib import Path
from harness.run.flaky_api import FlakyApi
d = Path(sys.argv[1])
api = FlakyApi({"latency": {"dist": "fixed", "value_s": 0.0}, "error_rate": 0, "hang_rate": 0, "rate_limit": 0,
                "burst": 0, "seed": 1}, d, d)
api.start()
print(api.proc.pid, flush=True)
time.sleep(600)
"""


def test_the_flaky_api_dies_with_the_harness(tmp_path: Path) -> None:
    env = {**os.environ, "DURABENCH_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                               env=env)
    assert harness.stdout is not None
    pid = int(harness.stdout.readline())
    assert psutil.pid_exists(pid)
    harness.send_signal(signal.SIGKILL)
    harness.wait(10)
    assert _gone([pid]), "the flaky API outlived the harness"
