"""End-to-end helpers: run real `precog worker` processes and read topics back."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from precog.avro import Codec
from precog.settings import Settings
from precog.workers import (  # noqa: F401  (re-exported for the tests)
    REPO,
    WorkerProcess,
    free_port,
    running_worker,
    worker_env,
)


def read_topic(
    settings: Settings,
    topic: str,
    expected: int,
    timeout: float = 120.0,
    settle: float = 2.0,
) -> list[Any]:
    """Every message of ``topic`` from the beginning: waits for ``expected`` then ``settle``
    more seconds so that extra (duplicate) messages would be seen too."""
    cfg = dict(settings.kafka.confluent_config())
    cfg.update({"group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                "enable.auto.commit": False})
    consumer = Consumer(cfg)
    md = consumer.list_topics(topic, timeout=10)
    parts = list(md.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
            elif msg is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(str(msg.error()))
            if len(out) >= expected and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        consumer.close()
    return out


def decode_all(messages: list[Any], schema: str) -> list[dict[str, Any]]:
    codec = Codec.for_schema(schema)
    return [codec.decode(m.value()) for m in messages]


def wait_for(fn: Any, timeout: float = 60.0, every: float = 0.5) -> Any:
    """Call ``fn`` until it returns something truthy or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
