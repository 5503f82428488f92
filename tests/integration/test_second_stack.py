"""A second, disposable stack beside the first: own home and ports, AOF Redis, nothing shared.

Only Kafka and Redis are started (``up(only=...)``); Elasticsearch would add ~30-60 s and a
1 GB heap without testing anything the other two do not. The fault suite drives the same
helpers (``service_pid``, ``stop_service``, ``start_service``) on its own second stack.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from precog import stack as local_stack
from precog.io.redis import redis_client
from precog.settings import Settings
from precog.workers import free_ports

pytestmark = pytest.mark.integration

_CLIENT_ENV = ("PRECOG_KAFKA_", "PRECOG_REDIS_", "PRECOG_ELASTICSEARCH_")


@pytest.fixture
def stacks(stack: list[Any], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Settings]]:
    """(first, second): the main stack's settings and a second stack's, stopped afterwards.

    The second stack's clients must follow its own ports, so the addresses and client
    options of the environment (which may point at an external service) are cleared for it.
    """
    first = Settings()
    for name in list(os.environ):
        if name.startswith(_CLIENT_ENV):
            monkeypatch.delenv(name)
    kafka, controller, redis, es, transport = free_ports(5)
    second = Settings(stack={
        "home": tmp_path / "stack", "kafka_port": kafka, "kafka_controller_port": controller,
        "redis_port": redis, "elasticsearch_port": es, "elasticsearch_transport_port": transport,
        "kafka_heap": "384m",
    })
    try:
        yield first, second
    finally:
        local_stack.down(second, echo=print, timeout=20)


def _cluster_id(settings: Settings) -> str:
    from confluent_kafka.admin import AdminClient

    return str(AdminClient(settings.kafka.confluent_config()).list_topics(timeout=10).cluster_id)


def _produce(settings: Settings, topic: str, value: bytes) -> None:
    from confluent_kafka import Producer

    producer = Producer(settings.kafka.producer_config(acks="all"))
    producer.produce(topic, value=value)
    assert producer.flush(15) == 0


def _values(settings: Settings, topic: str) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.confluent_config(), "group.id": "second-stack-test",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[bytes] = []
        deadline = time.monotonic() + 15
        while not found and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                found.append(msg.value())
        return found
    finally:
        consumer.close()


def test_second_stack_runs_beside_the_first_and_shares_nothing(
        stacks: tuple[Settings, Settings], tmp_path: Path) -> None:
    first, second = stacks
    services = local_stack.SERVICES
    first_pids = {s: local_stack.service_pid(first, s) for s in services}
    assert local_stack.Layout.from_settings(first).home != tmp_path / "stack"

    rows = local_stack.up(second, echo=print, only=("kafka", "redis"))
    assert [(r.name, r.mode, r.healthy) for r in rows] == [
        ("kafka", "local", True), ("redis", "local", True)]
    assert _cluster_id(second) != _cluster_id(first)

    # Redis: AOF on, data in this home; an acknowledged write survives kill -9
    data = tmp_path / "stack" / "redis" / "data"
    key = f"second-stack:{uuid.uuid4().hex}"
    client = redis_client(second)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("dir") == {"dir": str(data)}
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"{key}:{i}", i)
        pipe.execute()
    finally:
        client.close()
    # appendfsync everysec: a kill -9 may lose the last second of writes (docs/features.md),
    # and Redis postpones a write up to 2 s more while a slow fsync is running (seen on a
    # loaded machine: 735 of 1,000 writes gone when killed at once); older writes survive
    time.sleep(3.5)
    killed = local_stack.stop_service(second, "redis", signal.SIGKILL, echo=print)
    assert killed is not None and local_stack.service_pid(second, "redis") is None
    assert not (data / "dump.rdb").exists()  # so what comes back comes from the AOF
    restarted = local_stack.start_service(second, "redis", echo=print)
    assert restarted != killed
    client = redis_client(second)
    try:
        assert client.mget([f"{key}:{i}" for i in range(1000)]) == [
            str(i).encode() for i in range(1000)]
    finally:
        client.close()
    main_redis = redis_client(first)
    try:
        assert main_redis.exists(f"{key}:0") == 0
    finally:
        main_redis.close()

    # Kafka: kill -9 and start again, as the fault suite does; the acked record is kept
    topic = f"second-stack-{uuid.uuid4().hex[:8]}"
    _produce(second, topic, b"kept")
    killed = local_stack.stop_service(second, "kafka", signal.SIGKILL, echo=print)
    assert killed is not None
    local_stack.start_service(second, "kafka", echo=print)
    assert _values(second, topic) == [b"kept"]

    assert local_stack.down(second, echo=print, timeout=20) == ["redis", "kafka"]
    assert [local_stack.service_pid(second, s) for s in services] == [None] * len(services)
    # the first stack never noticed
    assert {s: local_stack.healthy(first, s) for s in services} == dict.fromkeys(services)
    assert {s: local_stack.service_pid(first, s) for s in services} == first_pids
