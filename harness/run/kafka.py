"""Apache Kafka 4.4.0 as a server the harness starts: one KRaft process (broker and controller) on
loopback, from the jars on Maven Central.

The jars (``org.apache.kafka:kafka_2.13:4.4.0`` and ``org.apache.logging.log4j:log4j-slf4j-impl``,
the SLF4J binding without which Kafka logs nothing) are fetched once with
``mvn dependency:copy-dependencies -DincludeScope=runtime`` into ``$DURABENCH_CACHE/kafka-4.4.0``
(default ``~/.cache/durabench``), with a progress line; about 45 jars, 45 MB. It needs Java 17+
(:func:`unavailable_reason` says what is missing in one line).

Settings that matter, recorded in the manifest with the rest:

- durability profile: Kafka never fsyncs on the produce path by default (it relies on replication,
  of which a single node has none). ``strict`` sets ``log.flush.interval.messages=1``, the broker
  default of the topic setting ``flush.messages`` (every topic, the consumer-offsets topic too,
  fsyncs every message); ``relaxed`` ``log.flush.interval.ms=1000`` (like Redis ``everysec``);
  ``volatile`` Kafka's defaults (the page cache only).
- ``broker.session.timeout.ms=3000`` and ``broker.heartbeat.interval.ms=1000``: after a SIGKILL the
  restarted broker is refused (``DUPLICATE_BROKER_REGISTRATION``) until its old session expires;
  with Kafka's defaults (9 s / 2 s) a restart took 12-19 s here, with these 5.4 s.

As a container (``durabench serve kafka``, compose/extras.yaml) the same properties get two client
listeners, since a Kafka client connects to the address the broker advertises, not the one it
bootstrapped from: ``PLAINTEXT`` on :data:`CONTAINER_PORT` advertised as ``kafka:9092`` (the service
name, for the worker containers on the stack's network) and ``HOST`` on :data:`CONTAINER_HOST_PORT`
advertised as the loopback address its port is published on (the driver's producer and lag sampler).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import procs
from harness.errors import ServiceError

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
LOG4J_SLF4J_VERSION = "2.25.5"
JAVA_MIN = 17
HEAP = "-Xmx512m"
FETCH_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.2
CONTAINER_PORT = 9092  # in a container: the listener of the stack's network (advertised as kafka:9092)
CONTAINER_HOST_PORT = 19092  # in a container: the listener published on the host's loopback
CONTAINER_CONTROLLER_PORT = 9093

PROFILE_SETTINGS: dict[str, dict[str, str]] = {
    "strict": {"log.flush.interval.messages": "1"},  # = flush.messages=1 on every topic
    "relaxed": {"log.flush.interval.ms": "1000"},
    "volatile": {},
}

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>durabench</groupId><artifactId>kafka-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_SLF4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.clients.name = org.apache.kafka
logger.clients.level = WARN
"""


def cache_dir() -> Path:
    base = os.environ.get("DURABENCH_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "durabench"
    return root / f"kafka-{KAFKA_VERSION}"


def libs_dir() -> Path:
    return cache_dir() / "libs"


def jars_cached() -> bool:
    return (libs_dir() / ".complete").is_file()


def java_version() -> int | None:
    """The major version of ``java`` on PATH, None when there is none."""
    java = shutil.which("java")
    if java is None:
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def unavailable_reason() -> str | None:
    """Why Kafka cannot run here (one line), or None."""
    version = java_version()
    if version is None:
        return f"Kafka needs Java {JAVA_MIN}+ and no java is on PATH (e.g. apt-get install openjdk-17-jre-headless)"
    if version < JAVA_MIN:
        return f"Kafka needs Java {JAVA_MIN}+ and java on PATH is Java {version}"
    if not jars_cached() and shutil.which("mvn") is None:
        return (f"Kafka's jars are not cached in {libs_dir()} and mvn is not on PATH to fetch them from Maven "
                "Central (e.g. apt-get install maven)")
    return None


def ensure_jars(say: Any = None) -> Path:
    """The directory of Kafka's jars, fetched from Maven Central on first use (a progress line via
    ``say(str)``, default stderr). Safe against a fetch interrupted halfway: it starts over."""
    libs = libs_dir()
    if jars_cached():
        return libs
    reason = unavailable_reason()
    if reason:
        raise ServiceError(reason)
    mvn = shutil.which("mvn")
    assert mvn is not None
    (say or (lambda line: print(line, file=sys.stderr, flush=True)))(
        f"kafka: first use, fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} "
        "(about 45 MB, once)")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    work = root / f"fetch-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "pom.xml").write_text(_POM)
    log = work / "mvn.log"
    proc = procs.spawn([mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
                        f"-DoutputDirectory={work / 'libs'}"], log=log, cwd=work)
    try:
        code = proc.wait(FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    procs.stop(proc)
    if code != 0:
        tail = " ".join(log.read_text(errors="replace").split()[-30:])
        raise ServiceError(f"fetching Kafka's jars with mvn failed ({'timeout' if code is None else code}): {tail}")
    (work / "libs" / ".complete").write_text(f"kafka_{SCALA_VERSION}:{KAFKA_VERSION}\n")
    shutil.rmtree(libs, ignore_errors=True)
    (work / "libs").rename(libs)
    shutil.rmtree(work, ignore_errors=True)
    return libs


def cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding (Kafka's Uuid form), drawn again
    while it starts with "-" as Kafka's own ``Uuid.randomUuid`` does: the storage tool's argument parser
    would read such an id as an option (``--cluster-id/-t: expected one argument``; 1 start in 64)."""
    while (text := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return text


def _listeners(port: int, controller_port: int, published: str | None) -> dict[str, str]:
    if published is None:  # a process on loopback: one client listener
        return {"listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"}
    # a container: the stack's network under the service name, and the host through the published port
    return {"listeners": (f"PLAINTEXT://0.0.0.0:{port},HOST://0.0.0.0:{CONTAINER_HOST_PORT},"
                          f"CONTROLLER://127.0.0.1:{controller_port}"),
            "advertised.listeners": f"PLAINTEXT://kafka:{port},HOST://{published}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,HOST:PLAINTEXT,CONTROLLER:PLAINTEXT"}


def properties(data_dir: Path, port: int, controller_port: int, profile: str,
               overrides: dict[str, Any] | None = None, published: str | None = None) -> dict[str, str]:
    """server.properties of a single-node KRaft broker+controller on loopback; ``published`` (in a
    container): the host's address of the ``HOST`` listener (``127.0.0.1:PORT``), see the module's doc."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        **_listeners(port, controller_port, published),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "metadata.log.dir": str(data_dir / "metadata"),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "1000",
        **PROFILE_SETTINGS[profile],
        **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (overrides or {}).items()},
    }


def java_argv(libs: Path, main: str, *args: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(unavailable_reason() or "java not found")
    return [java, HEAP, "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={libs.parent / 'log4j2.properties'}",
            "-cp", f"{libs}/*", main, *args]


def prepare(data_dir: Path, port: int, controller_port: int, profile: str, log: Path,
            overrides: dict[str, Any] | None = None, published: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Fetch the jars if needed, write server.properties and format the storage (once per data
    directory); returns the broker's command line and its settings."""
    libs = ensure_jars()
    (libs.parent / "log4j2.properties").write_text(_LOG4J2)
    data_dir.mkdir(parents=True, exist_ok=True)
    props = properties(data_dir, port, controller_port, profile, overrides, published)
    config = data_dir / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    if not (data_dir / "metadata" / "meta.properties").is_file():
        fmt = procs.spawn(java_argv(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config),
                                    "--standalone"), log=log)
        try:
            code = fmt.wait(READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        procs.stop(fmt)
        if code != 0:
            raise ServiceError(f"formatting Kafka's storage failed ({code}); see {log}")
    return java_argv(libs, "kafka.Kafka", str(config)), props


def wait_ready(bootstrap: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until the broker answers a metadata request naming itself (after a SIGKILL the port may open
    while the broker still waits for its old session to expire)."""
    def alive() -> bool:
        if proc.poll() is not None:
            raise ServiceError(f"kafka exited with code {proc.returncode} while starting; see {log}")
        return True

    wait_answers(bootstrap, alive, f"see {log}", timeout_s)


def wait_answers(bootstrap: str, alive: Callable[[], bool], where: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until the broker at ``bootstrap`` answers a metadata request naming a broker; ``alive()`` is asked
    between attempts (it raises when the broker's process or container is gone); ``where``: where its log is."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000,
                         "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline and alive():
        try:
            meta = admin.list_topics(timeout=2)
            if meta.brokers:
                return
        except Exception as exc:  # KafkaException while the broker is not up yet
            last = str(exc)
        time.sleep(READY_POLL_S)
    raise ServiceError(f"kafka did not answer on {bootstrap} within {timeout_s:.0f}s ({last}); {where}")


def answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """One metadata request: the broker at ``bootstrap`` answers naming a broker (a container's health check:
    ``python -m harness.run.kafka 127.0.0.1:9092``)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000,
                         "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except Exception:  # KafkaException: not up (yet)
        return False


def version() -> str:
    return f"Apache Kafka {KAFKA_VERSION} (kafka_{SCALA_VERSION}, KRaft), Java {java_version()}"


if __name__ == "__main__":  # the health check of the kafka container: exit 0 when the broker answers
    sys.exit(0 if answers(sys.argv[1]) else 1)
