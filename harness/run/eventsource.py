"""The event source of ``load.source: kafka``: the driver produces events instead of submitting
workflows, and the consumer group's lag is sampled every second.

- :func:`create_topic`: the run's topic, ``load.partitions`` partitions, before any worker starts.
- :class:`EventClient`: what the driver holds in place of the engine client. ``submit(id)`` produces
  one event (harness/events.py's format) with an idempotent producer (``acks=all``,
  ``enable.idempotence=true``) and returns once the broker acknowledged it; a delivery error raises
  (the driver records the outcome: a produce that failed for sure is ``fail``, a time-out ``unknown``).
  Where each event landed (partition, offset) is written to the driver's ledger (``event_produced``) when
  the broker acknowledges it, also after the driver stopped waiting for it.
  ``lookup`` asks the engine about the workflow it runs for each event
  (harness.contract.event_workflow_id) and answers per event id.
- :class:`LagSampler`: every ``LAG_INTERVAL_S``, the group's committed offset and the high watermark of
  every partition (an unsubscribed consumer of the group: ``committed`` and ``get_watermark_offsets``;
  the AdminClient's ``list_offsets`` answered NOT_LEADER on a fresh topic here), one JSON
  line per sample in ``kafka-lag.jsonl`` of the engine's directory; a failed sample (the broker
  restarting) is a line with ``error``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from harness import events
from harness.contract import EngineClient, EngineRecord, EventRef, EventSpec, event_workflow_id
from harness.errors import ServiceError, SubmitRejected
from harness.ledger import Ledger

LAG_FILE = "kafka-lag.jsonl"
LAG_INTERVAL_S = 1.0
ADMIN_TIMEOUT_S = 5.0
TOPIC_TIMEOUT_S = 30.0
# the producer's settings, recorded in the manifest (docs/scenarios.md "Events")
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",  # the leader waits for the in-sync replicas (one here) before acknowledging
    "enable.idempotence": True,  # broker-side dedup of the producer's own retries (no duplicate on a resend)
    "linger.ms": 0,  # open loop: each event sent when it is due
    "delivery.timeout.ms": 30000,  # a produce not acknowledged within 30 s fails (librdkafka default 300 s)
}


def spec_for(bootstrap: str, run_id: str, engine: str, partitions: int) -> EventSpec:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in engine)
    return EventSpec("kafka", bootstrap, f"durabench-{run_id}-{safe}", partitions, f"durabench-{run_id}-{safe}")


def create_topic(spec: EventSpec) -> None:
    """Create the topic with ``spec.partitions`` partitions (replication 1: one broker) and return once
    every partition answers an offset request (its leader is elected); raise if it does not."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    # librdkafka writes its log lines to stderr unless told otherwise: silenced here (a failure raises)
    admin = AdminClient({"bootstrap.servers": spec.bootstrap, "log_level": 0})
    futures = admin.create_topics([NewTopic(spec.topic, num_partitions=spec.partitions, replication_factor=1)],
                                  operation_timeout=TOPIC_TIMEOUT_S)
    try:
        futures[spec.topic].result(TOPIC_TIMEOUT_S)
    except Exception as exc:
        raise ServiceError(f"creating Kafka topic {spec.topic} failed: {exc}") from exc
    probe = Consumer({"bootstrap.servers": spec.bootstrap, "group.id": spec.group_id, "enable.auto.commit": False,
                      "log_level": 0})
    deadline = time.monotonic() + TOPIC_TIMEOUT_S
    try:
        for p in range(spec.partitions):
            while True:
                try:
                    probe.get_watermark_offsets(TopicPartition(spec.topic, p), timeout=ADMIN_TIMEOUT_S)
                    break
                except Exception as exc:  # NOT_LEADER_FOR_PARTITION until the controller elected one
                    if time.monotonic() > deadline:
                        raise ServiceError(f"Kafka topic {spec.topic} partition {p} has no leader after "
                                           f"{TOPIC_TIMEOUT_S:g}s: {exc}") from exc
                    time.sleep(0.1)
    finally:
        probe.close()


def describe(spec: EventSpec, profile_settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest's record of the event source."""
    return {
        "broker": spec.broker, "bootstrap": spec.bootstrap,  # as the driver reaches it
        "topic": spec.topic, "partitions": spec.partitions, "group_id": spec.group_id,
        "producer": PRODUCER_SETTINGS,
        "flush": {k: v for k, v in profile_settings.items() if k.startswith("log.flush")} or "Kafka default (no "
                 "fsync on produce: the page cache)",
        "lag_interval_s": LAG_INTERVAL_S,
    }


class EventClient:
    """Produces events in place of submitting workflows; see the module docstring."""

    def __init__(self, engine: Any, spec: EventSpec, inner: EngineClient, ledger: Ledger) -> None:
        from confluent_kafka import Producer

        self.engine = engine
        self.spec = spec
        self.inner = inner
        self.ledger = ledger
        self.refs: dict[str, EventRef] = {}
        # the producer's log lines (retries while the broker restarts) go to the engine's logs/driver.log
        # through Python logging (runner._library_logs), never to the terminal
        self._producer = Producer({"bootstrap.servers": spec.bootstrap, **PRODUCER_SETTINGS,
                                   "client.id": "durabench-driver", "logger": logging.getLogger("librdkafka")})
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)  # delivery reports: run the callbacks on this thread

    async def submit(self, workflow_id: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(err: Any, msg: Any) -> None:  # on the poll thread
            if err is None:  # recorded even when the driver stopped waiting (its ack is then `unknown`)
                self.refs[workflow_id] = EventRef(workflow_id, self.spec.topic, msg.partition(), msg.offset(),
                                                  self.spec.group_id)
                self.ledger.write("event_produced", wf=workflow_id, topic=self.spec.topic,
                                  partition=msg.partition(), offset=msg.offset())

            def settle() -> None:
                if done.done():  # the driver's submit_timeout cancelled the wait
                    return
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(SubmitRejected(f"kafka: {err}") if not err.retriable()
                                       else RuntimeError(f"kafka: {err}"))
            loop.call_soon_threadsafe(settle)

        key, value = events.encode(workflow_id, time.time_ns())
        self._producer.produce(self.spec.topic, key=key, value=value, on_delivery=report)
        await done

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        """Per event id: what the engine says of the workflow it runs for the event (``not_found`` for an
        event whose produce was never acknowledged: no offset, no workflow to ask about)."""
        mapped = {wf: event_workflow_id(self.engine, ref) for wf in workflow_ids if (ref := self.refs.get(wf))}
        found = await self.inner.lookup(list(mapped.values())) if mapped else {}
        return {wf: found.get(mapped[wf], EngineRecord("not_found")) if wf in mapped else EngineRecord("not_found")
                for wf in workflow_ids}

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.flush, 10)
        self._stop.set()
        self._poller.join(5)
        await self.inner.close()


class LagSampler:
    """A thread sampling the consumer group's lag every ``interval_s`` into ``<edir>/kafka-lag.jsonl``."""

    def __init__(self, spec: EventSpec, edir: Path, interval_s: float = LAG_INTERVAL_S) -> None:
        self.spec = spec
        self.path = edir / LAG_FILE
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-lag", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(ADMIN_TIMEOUT_S * 3)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        # a consumer that never subscribes: it only asks the group coordinator for the committed offsets
        # (OffsetFetch) and the partition leaders for their high watermarks (ListOffsets)
        probe = Consumer({"bootstrap.servers": self.spec.bootstrap, "group.id": self.spec.group_id,
                          "enable.auto.commit": False, "client.id": "durabench-lag", "log_level": 0})
        try:
            with self.path.open("a") as out:
                while True:
                    out.write(json.dumps(self.sample(probe), separators=(",", ":")) + "\n")
                    out.flush()
                    if self._stop.wait(self.interval_s):
                        return
        finally:
            probe.close()

    def sample(self, probe: Any) -> dict[str, Any]:
        """One sample: per partition the high watermark (``end``), the committed offset (``committed``; -1
        when the group has committed none: its lag is then the whole partition) and the lag."""
        from confluent_kafka import TopicPartition

        ns = time.time_ns()
        parts = [TopicPartition(self.spec.topic, p) for p in range(self.spec.partitions)]
        try:
            committed = {tp.partition: max(-1, tp.offset) for tp in probe.committed(parts, timeout=ADMIN_TIMEOUT_S)}
            ends = {tp.partition: probe.get_watermark_offsets(tp, timeout=ADMIN_TIMEOUT_S)[1] for tp in parts}
        except Exception as exc:  # the broker is restarting
            return {"ns": ns, "error": f"{type(exc).__name__}: {exc}"}
        lag = {p: max(0, ends[p] - max(0, committed.get(p, -1))) for p in ends}
        return {"ns": ns, "lag": sum(lag.values()), "partitions": {
            str(p): {"end": ends[p], "committed": committed.get(p, -1), "lag": lag[p]} for p in sorted(ends)}}


def read_lag(edir: Path) -> list[dict[str, Any]]:
    """The samples of ``kafka-lag.jsonl`` (empty when the run had no event source)."""
    path = edir / LAG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
