"""Apache Kafka as a server of the harness (harness/run/kafka.py): a real KRaft broker from Maven
Central jars on loopback, produce and consume with confluent-kafka, a restart after SIGKILL that
keeps every acknowledged message under ``strict``, and no broker outliving a SIGKILLed harness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.run import kafka, services
from tests.conftest import ROOT

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(kafka.unavailable_reason() is not None, reason=str(kafka.unavailable_reason()))]


def _produce(bootstrap: str, topic: str, keys: range) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    failed: list[str] = []
    for key in keys:
        producer.produce(topic, value=str(key).encode(),
                         on_delivery=lambda err, msg: failed.append(str(err)) if err else None)
    assert producer.flush(30) == 0
    assert not failed


def _consume(bootstrap: str, topic: str, group: str, expected: int) -> list[int]:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[int] = []
    try:
        for _ in range(600):  # up to ~60 s on a busy machine: the first poll joins the group
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                got.append(int(msg.value()))
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


def _tree(pid: int) -> list[int]:
    leader = psutil.Process(pid)
    return [pid] + [c.pid for c in leader.children(recursive=True)]


def test_kafka_produce_consume_and_restart_after_sigkill(tmp_path: Path) -> None:
    with services.running(["kafka"], tmp_path, profile="strict") as svc:
        broker = svc.services["kafka"]
        assert broker.proc is not None
        listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == broker.port
                     and c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        described = svc.describe()["kafka"]
        assert described["settings"]["log.flush.interval.messages"] == "1"  # strict: fsync every message
        assert described["settings"]["broker.session.timeout.ms"] == "3000"
        assert "4.4.0" in described["version"]
        _produce(broker.url, "events", range(100))
        assert sorted(_consume(broker.url, "events", "g1", 100)) == list(range(100))
        first = broker.proc.pid
        broker.restart()  # SIGKILL, then start on the same port and data (refused until the old session expires)
        assert broker.proc is not None and broker.proc.pid != first and not psutil.pid_exists(first)
        _produce(broker.url, "events", range(100, 150))
        # a new group reads the topic from the start: everything acknowledged before the crash is there
        assert sorted(_consume(broker.url, "events", "g2", 150)) == list(range(150))
        pids = _tree(broker.proc.pid)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


HARNESS = """
import sys, time
from pathlib import Path
from harness.run import services
with services.running(["kafka"], Path(sys.argv[1])) as svc:
    print(svc.services["kafka"].proc.pid, flush=True)
    time.sleep(600)
"""


def test_kafka_does_not_outlive_a_sigkilled_harness(tmp_path: Path) -> None:
    env = {**os.environ, "DURABENCH_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                               env=env)
    assert harness.stdout is not None
    pid = int(harness.stdout.readline())
    assert "kafka.Kafka" in psutil.Process(pid).cmdline()
    harness.send_signal(signal.SIGKILL)
    harness.wait(10)
    try:
        _, alive = psutil.wait_procs([psutil.Process(pid)], timeout=20)
    except psutil.NoSuchProcess:
        alive = []
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "the Kafka broker outlived the harness"
