"""A TCP proxy the harness owns, for network faults between workers (and the driver) and a store.

This kernel has no netem and no toxiproxy package is available, so faults are injected in user
space: every connection to a store goes through a :class:`Proxy` that can

- add latency with jitter to every chunk in both directions (order preserved),
- partition the link: stop moving bytes in both directions and hold new connections, until
  healed (bytes stay in the kernel's buffers, as they would with packets retransmitted across a
  real partition, and flow again after the heal),
- reset every open connection (RST, via ``SO_LINGER`` 0).

It runs on its own thread and event loop; control methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from dataclasses import dataclass, field

CHUNK_BYTES = 65536


@dataclass
class LinkState:
    latency_s: float = 0.0
    jitter_s: float = 0.0
    partitioned: bool = False
    resets: int = 0
    connections_total: int = 0
    bytes_forwarded: int = 0
    healed: asyncio.Event = field(default_factory=asyncio.Event)


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    def __init__(self, name: str, target_host: str, target_port: int, seed: int = 1) -> None:
        self.name = name
        self.target = (target_host, target_port)
        self.port = 0
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy:{name}", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.state: LinkState

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> int:
        self._thread.start()
        self._call(self._start())
        return self.port

    async def _start(self) -> None:
        self.state = LinkState()
        self.state.healed.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # -- faults (thread-safe) --------------------------------------------------------------
    def set_latency(self, latency_s: float, jitter_s: float = 0.0) -> None:
        def apply() -> None:
            self.state.latency_s, self.state.jitter_s = latency_s, jitter_s

        self._loop.call_soon_threadsafe(apply)

    def partition(self) -> None:
        self._loop.call_soon_threadsafe(self._set_partition, True)

    def heal(self) -> None:
        """Undo every fault: no latency, no partition."""

        def apply() -> None:
            self.state.latency_s = self.state.jitter_s = 0.0
            self._set_partition(False)

        self._loop.call_soon_threadsafe(apply)

    def reset_connections(self) -> int:
        return int(self._call(self._reset()))  # type: ignore[call-overload]

    def _set_partition(self, on: bool) -> None:
        self.state.partitioned = on
        if on:
            self.state.healed.clear()
        else:
            self.state.healed.set()

    async def _reset(self) -> int:
        n = 0
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            n += 1
        self.state.resets += n
        return n

    # -- forwarding ------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.state.connections_total += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await self.state.healed.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            except asyncio.CancelledError:
                return  # the proxy is stopping: a handler task ends quietly (asyncio would log it)
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Move bytes one way. Each chunk is due ``latency +- jitter`` after it arrived and chunks
        stay in order, but a delayed chunk does not hold back the reading of the next one: like
        netem, added latency delays a stream without throttling it (pipelined and multiplexed
        protocols such as Redis pipelines and Temporal's gRPC keep their throughput)."""
        state = self.state
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def read() -> None:
            last_due = 0.0
            try:
                while True:
                    await state.healed.wait()
                    data = await reader.read(CHUNK_BYTES)
                    if not data:
                        break
                    jitter = self._rng.uniform(-state.jitter_s, state.jitter_s) if state.jitter_s else 0.0
                    last_due = max(last_due, loop.time() + max(0.0, state.latency_s + jitter))  # keep order
                    queue.put_nowait((last_due, data))
            except (ConnectionError, OSError):
                pass
            finally:
                queue.put_nowait(None)

        reading = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await state.healed.wait()  # a partition that began meanwhile holds the bytes
                writer.write(data)
                await writer.drain()
                state.bytes_forwarded += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except OSError:
                    pass
