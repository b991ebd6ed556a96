"""The harness's TCP proxy against a real Redis-protocol server: pass-through, latency, partition, resets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.run import services
from harness.run.proxy import Proxy

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with services.running(["redis"], tmp_path_factory.mktemp("logs")) as svc:
        yield svc.services["redis"].port


@pytest.fixture
def proxy(redis_port: int) -> Iterator[Proxy]:
    p = Proxy("redis", "127.0.0.1", redis_port)
    p.start()
    yield p
    p.stop()


def ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def test_passes_traffic_through(proxy: Proxy) -> None:
    with connect(proxy) as s:
        assert ping(s) == b"+PONG\r\n"
    assert proxy.state.connections_total == 1


def test_latency_delays_each_direction(proxy: Proxy) -> None:
    with connect(proxy) as s:
        ping(s)  # connected before the fault
        proxy.set_latency(0.2)
        t = time.monotonic()
        assert ping(s) == b"+PONG\r\n"
        assert time.monotonic() - t >= 0.4  # 200 ms each way
        proxy.heal()
        assert ping(s) == b"+PONG\r\n"


def test_partition_holds_bytes_until_healed(proxy: Proxy) -> None:
    with connect(proxy) as s:
        ping(s)
        proxy.partition()
        s.sendall(b"PING\r\n")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing crosses while partitioned
            s.recv(64)
        proxy.heal()
        s.settimeout(10)
        assert s.recv(64) == b"+PONG\r\n"  # held bytes flow after the heal, like TCP retransmits


def test_new_connections_wait_for_the_heal(proxy: Proxy) -> None:
    proxy.partition()
    with connect(proxy) as s:  # the kernel accepts; the proxy holds it
        s.sendall(b"PING\r\n")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(64)
        proxy.heal()
        s.settimeout(10)
        assert s.recv(64) == b"+PONG\r\n"


def test_reset_connections_sends_rst(proxy: Proxy) -> None:
    with connect(proxy) as s:
        ping(s)
        assert proxy.reset_connections() == 2  # client side and server side of the one link
        with pytest.raises(ConnectionResetError):
            for _ in range(3):
                if not ping(s):
                    raise ConnectionResetError("closed")
    with connect(proxy) as s:  # the link itself still works
        assert ping(s) == b"+PONG\r\n"


def test_unreachable_target_closes_client(tmp_path: Path) -> None:
    p = Proxy("nowhere", "127.0.0.1", services.free_port())
    p.start()
    try:
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.settimeout(5)
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
    finally:
        p.stop()


def test_latency_delays_without_throttling_a_pipelined_stream(proxy: Proxy) -> None:
    """20 requests sent 10 ms apart, 200 ms each way: delayed ~0.4 s, not serialized to ~8 s."""
    with connect(proxy) as s:
        ping(s)
        proxy.set_latency(0.2)
        t = time.monotonic()
        for _ in range(20):
            s.sendall(b"PING\r\n")
            time.sleep(0.01)
        received = b""
        while received.count(b"+PONG\r\n") < 20:
            received += s.recv(1024)
        elapsed = time.monotonic() - t
        assert 0.4 <= elapsed < 4.0, elapsed  # serialized, it would take 8 s
