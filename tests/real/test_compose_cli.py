"""The compose stacks run with a compose CLI, not only through durabench's Docker API driver.

Every file of compose/ is validated by the installed CLI (`docker compose` v2, else Debian's
`docker-compose` 1.29), and the dbos stack's PostgreSQL is brought up with it, found healthy, and
brought down again. Without a compose CLI the tests are skipped with the reason (CI installs
`docker-compose`, .ci/run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests import docker_support
from tests.conftest import ROOT

pytestmark = [pytest.mark.real, pytest.mark.e2e, pytest.mark.timeout(1800)]
STACKS = sorted((ROOT / "compose").glob("*.yaml"))
HEALTHY_TIMEOUT_S = 120.0
DOWN_TIMEOUT_S = 120.0


def _cli() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    if os.environ.get("CI") == "true":
        pytest.fail("CI must run the compose CLI tests, but neither `docker compose` nor `docker-compose` is installed")
    pytest.skip("no compose CLI here (`docker compose` or `docker-compose`): apt-get install docker-compose")


@pytest.fixture(scope="module")
def cli() -> list[str]:
    return _cli()


@pytest.mark.parametrize("path", STACKS, ids=[p.stem for p in STACKS])
def test_the_compose_cli_accepts_the_stack(cli: list[str], path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DURABENCH_WORK_DIR": str(tmp_path), "DURABENCH_WORKERS": "3"}
    on = {"front": "dbos", "extras": "celery"}.get(path.stem)  # parts joined to an engine's stack
    files = ["-f", str(path)] if on is None else ["-f", str(ROOT / f"compose/{on}.yaml"), "-f", str(path)]
    out = subprocess.run([*cli, "-p", f"durabench-{path.stem}", *files, "config"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "worker:" in out.stdout
    if path.stem == "extras":
        assert "kafka:" in out.stdout and "postgres:" in out.stdout
    assert "replicas: 3" in out.stdout  # the workers' count comes from the environment


def test_the_compose_cli_runs_a_stack_s_server(cli: list[str], client: Any, runtime_image: str, tmp_path: Path) -> None:
    tag = runtime_image
    project = f"durabench-cli-test-{os.getpid()}"
    env = {**os.environ, "DURABENCH_IMAGE": tag, "DURABENCH_WORK_DIR": str(tmp_path)}
    base = [*cli, "-p", project, "-f", str(ROOT / "compose/dbos.yaml")]
    try:
        up = subprocess.run([*base, "up", "-d", "postgres"], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
        assert up.returncode == 0, up.stderr
        (container,) = client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        # the daemon's own health check says so: its events from the container's start on (no race)
        since = int(time.time()) - 60
        events = client.events(since=since, until=int(time.time() + HEALTHY_TIMEOUT_S), decode=True,
                               filters={"container": container.id, "event": "health_status"})
        statuses: list[str] = []
        for event in events:  # ends at `until` at the latest
            statuses.append(event.get("status", ""))
            if statuses[-1] in ("health_status: healthy", "health_status: unhealthy"):
                break
        events.close()
        assert statuses[-1:] == ["health_status: healthy"], (statuses, container.logs()[-2000:])
        ran = container.exec_run(["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 5432), 1)"])
        assert ran.exit_code == 0
    finally:
        left, down = _down(base, env, client, project)
    assert not left, f"`down` left {left} behind (removed through the Docker API since): {down}"


def _down(base: list[str], env: dict[str, str], client: Any, project: str) -> tuple[list[str], str]:
    """``down`` of the compose project; then whatever it left (it failed, timed out or missed something) is
    removed through the Docker API. Returns the names of what was left, and how ``down`` ended."""
    try:
        ran = subprocess.run([*base, "down", "--volumes", "--timeout", "5"], env=env, capture_output=True, text=True,
                             timeout=DOWN_TIMEOUT_S, check=False)
        how = f"exit {ran.returncode}: {ran.stderr[-1000:]}"
    except subprocess.TimeoutExpired:
        how = f"timed out after {DOWN_TIMEOUT_S:g}s"
    return docker_support.remove_labelled(client, f"com.docker.compose.project={project}"), how
