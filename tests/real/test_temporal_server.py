"""The production Temporal server service (harness/run/temporal_server.py) on the harness's PostgreSQL 18.

The first use builds the server from the Go module proxy (about 5 min on 2 cores, progress on
stderr); later uses find it cached (harness/temporalbuild.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import temporalbuild
from harness.run import services, temporal_server
from tests.conftest import ROOT
from tests.real.test_procs import _gone

pytestmark = pytest.mark.real
DEADLINE_S = 120.0


def _tree(svc: services.Service) -> list[int]:
    assert svc.proc is not None
    leader = psutil.Process(svc.proc.pid)
    return [leader.pid] + [c.pid for c in leader.children(recursive=True)]


async def _start_and_describe(frontend: str, wf_id: str) -> str:
    from temporalio.client import Client

    deadline = time.monotonic() + DEADLINE_S
    while True:  # a restarted store or server answers again after a while: retry until the deadline
        try:
            client = await Client.connect(frontend, namespace="default")
            await client.start_workflow("NoWorkerWorkflow", id=wf_id, task_queue="nobody-polls")
            desc = await client.get_workflow_handle(wf_id).describe()
            return str(desc.status.name if desc.status else None)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _describe(frontend: str, wf_id: str) -> str:
    from temporalio.client import Client

    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            client = await Client.connect(frontend, namespace="default")
            desc = await client.get_workflow_handle(wf_id).describe()
            return str(desc.status.name if desc.status else None)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def test_server_on_postgres_through_the_proxy_survives_store_and_server_restarts(tmp_path: Path) -> None:
    import psycopg

    with services.running(["postgres", "temporal-server"], tmp_path, "strict", proxied=True) as svc:
        pg, server = svc.services["postgres"], svc.services["temporal-server"]
        about = svc.describe()["temporal-server"]
        assert "13, 14, 15, 16" in about["about"]["tested_postgres"]
        assert about["settings"]["num_history_shards"] == temporal_server.DEFAULTS["num_history_shards"]
        # the server reaches PostgreSQL through the postgres proxy (link:postgres faults hit that link)
        assert about["settings"]["postgres_via"] == f"127.0.0.1:{svc.proxies['postgres'].port}"
        ports = set(about["settings"]["ports"].values())
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid in _tree(server)}
        assert listening and {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        assert ports <= {port for _, port in listening} | {about["settings"]["ports"]["frontend_http"]}
        with psycopg.connect(pg.url, autocommit=True) as conn:
            dbs = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            with psycopg.connect(pg.url.rsplit("/", 1)[0] + "/temporal") as tconn:
                shards = tconn.execute("SELECT count(*) FROM shards").fetchone()
        assert {"temporal", "temporal_visibility"} <= dbs
        # shards are acquired (rows written) lazily, up to the configured count
        assert shards is not None and 1 <= shards[0] <= temporal_server.DEFAULTS["num_history_shards"]
        frontend = svc.endpoints["temporal-server"]
        assert asyncio.run(_start_and_describe(frontend, "before")) == "RUNNING"
        pg.restart()  # SIGKILL of PostgreSQL under the running Temporal server
        assert asyncio.run(_start_and_describe(frontend, "after-store-restart")) == "RUNNING"
        server_pids = _tree(server)
        server.restart()  # SIGKILL of the Temporal server itself: its state is in PostgreSQL
        assert _gone(server_pids)
        assert asyncio.run(_describe(frontend, "before")) == "RUNNING"
        assert asyncio.run(_describe(frontend, "after-store-restart")) == "RUNNING"
        pids = _tree(server) + _tree(pg)
    assert _gone(pids)


def test_unknown_server_setting_is_refused() -> None:
    from harness.errors import UserError

    with pytest.raises(UserError, match="unknown setting 'shards'"):
        temporal_server.check_settings({"shards": 4})
    temporal_server.check_settings({"num_history_shards": 4, "dynamic.history.persistenceMaxQPS": 100},
                                   dynamic_check=True)
    with pytest.raises(UserError, match="refuses its dynamic config"):
        temporal_server.check_settings({"dynamic.history.noSuchKnob": 1}, dynamic_check=True)


HARNESS = """
import sys, time
from pathlib import Path
from harness.run import services
with services.running(["postgres", "temporal-server"], Path(sys.argv[1])) as svc:
    print(" ".join(str(s.proc.pid) for s in svc.services.values()), flush=True)
    time.sleep(600)
"""


def test_server_is_reaped_after_sigkill_of_the_harness(tmp_path: Path) -> None:
    temporalbuild.build()  # cached after the first test; builds with progress otherwise
    env = {**os.environ, "DURABENCH_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(tmp_path / "logs")], stdout=subprocess.PIPE,
                               text=True, env=env)
    assert harness.stdout is not None
    line = harness.stdout.readline()
    assert line, f"the harness did not start its servers; logs in {tmp_path / 'logs'}"
    leaders = [int(x) for x in line.split()]
    members = []
    for pid in leaders:
        leader = psutil.Process(pid)
        members += [pid] + [c.pid for c in leader.children(recursive=True)]
    assert len(members) > 3
    harness.send_signal(signal.SIGKILL)
    harness.wait(10)
    assert _gone(members, 30.0), "the Temporal server or PostgreSQL outlived a SIGKILLed harness"
