"""Events on Kafka (``load.source: kafka``): the message format, and the consume-start-commit loop of
engines that start one workflow or task per event (Temporal, Celery).

The format (language-neutral, harness.contract.EventSpec): key = the event id (UTF-8), value = JSON
``{"id": <event id>, "produced_ns": <ns>}``. The event id is the workflow id the driver would have
submitted, so ledger records, effect rows and the checker keep working per id.

:func:`consume` is what a worker of a starting engine runs (in a thread): poll, start each event's
workflow through ``start(event_id)`` (which must return only once the engine accepted it durably and
treat "already started" as done), then commit the offsets of what it started (auto-commit off: an
offset is committed only after its start was acknowledged, so a crash redelivers, never skips).
DBOS has its own consumer (``DBOS.kafka_consumer``) and does not use this loop.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.contract import EventSpec

POLL_S = 0.2  # the consumer's poll timeout (returns as soon as messages arrive)
# what the manifest records of this loop's consumer (besides bootstrap, group and client id)
CONSUMER_SETTINGS: dict[str, object] = {
    "auto.offset.reset": "earliest", "enable.auto.commit": False,
    "commit": "synchronous, after every start of the batch was acknowledged",
    "session.timeout.ms": "librdkafka default (45000)", "group.protocol": "librdkafka default (classic)",
}
BATCH = 100  # messages per poll
RETRY_S = 0.5  # pause before starting a batch again after a failed start


def encode(event_id: str, produced_ns: int) -> tuple[bytes, bytes]:
    """(key, value) of one event."""
    return event_id.encode(), json.dumps({"id": event_id, "produced_ns": produced_ns}).encode()


def decode_id(key: bytes | str | None, value: bytes | str | None) -> str:
    """The event id of a message (its key; the value's ``id`` when the key is missing)."""
    if key:
        return key.decode() if isinstance(key, bytes) else key
    if value is None:
        raise ValueError("a durabench event has a key or a JSON value with an id")
    return str(json.loads(value)["id"])


def consumer_config(spec: EventSpec, client_id: str, **extra: Any) -> dict[str, Any]:
    """confluent-kafka settings of a consumer of ``spec``'s group: from the earliest offset when the group
    has none (an event produced before the consumer joined is still processed), offsets committed by
    the caller (auto-commit off)."""
    return {"bootstrap.servers": spec.bootstrap, "group.id": spec.group_id, "client.id": client_id,
            "auto.offset.reset": CONSUMER_SETTINGS["auto.offset.reset"],
            "enable.auto.commit": CONSUMER_SETTINGS["enable.auto.commit"], **extra}


def consume(spec: EventSpec, client_id: str, start: Callable[[list[str]], None], stop: threading.Event,
            on_error: Callable[[str], None] | None = None) -> None:
    """Until ``stop`` is set: poll a batch, ``start(event_ids)`` (raise to have the batch started again:
    every start must be idempotent by event id), then commit the batch's offsets synchronously. A commit
    that fails (a rebalance, a broker restart) leaves the offsets where they were: the events are
    delivered again and ``start`` finds them already started."""
    from confluent_kafka import Consumer, KafkaException

    say = on_error or (lambda _line: None)
    consumer = Consumer(consumer_config(spec, client_id))
    consumer.subscribe([spec.topic])
    try:
        while not stop.is_set():
            msgs = consumer.consume(BATCH, timeout=POLL_S)
            valid = [m for m in msgs if m.error() is None]
            for m in msgs:
                if m.error() is not None:
                    say(f"kafka consumer error: {m.error()}")
            if not valid:
                continue
            ids = [decode_id(m.key(), m.value()) for m in valid]
            while not stop.is_set():
                try:
                    start(ids)
                    break
                except Exception as exc:  # the engine is unreachable (a store restart): start the batch again
                    say(f"starting {len(ids)} events failed ({type(exc).__name__}: {exc}); again in {RETRY_S}s")
                    time.sleep(RETRY_S)
            if stop.is_set():
                return  # not committed: delivered again to whoever takes the partition
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                say(f"kafka commit failed ({exc}): the batch is delivered again and found already started")
    finally:
        consumer.close()
