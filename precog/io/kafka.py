"""confluent-kafka clients from ``settings.kafka``, and reading partitions to their end.

Every consumer that reads a topic "up to now" uses :func:`read_ranges` (or
:func:`read_to_end`): the end of a partition is its high watermark when reading starts, and a
partition-EOF event only finishes a partition that has reached that end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from precog.settings import Settings

#: The compacted topic naming each spec's leader and challengers (``{ns}.model-control``).
CONTROL_TOPIC = "model-control"

Ranges = Mapping[tuple[str, int], tuple[int, int]]


def producer(settings: Settings, **extra: Any) -> Producer:
    """A producer with the project's partitioner (``KafkaSettings.producer_config``) + ``extra``."""
    return Producer(settings.kafka.producer_config(**extra))


def consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    """A consumer of group ``group_id`` (``KafkaSettings.confluent_config``) + ``extra``."""
    return Consumer({**settings.kafka.confluent_config(), "group.id": group_id, **extra})


def admin(settings: Settings, **extra: Any) -> AdminClient:
    """An admin client (``KafkaSettings.confluent_config``) + ``extra``."""
    return AdminClient({**settings.kafka.confluent_config(), **extra})


def reader(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    """An assign-only consumer for :func:`read_ranges`: partition EOF events, no commits."""
    return consumer(settings, group_id, **{
        "enable.auto.commit": False, "enable.partition.eof": True, **extra})


def is_partition_eof(msg: Message) -> bool:
    """Whether ``msg`` is librdkafka's "reached the end of the partition" event."""
    err = msg.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


def where(msg: Message) -> tuple[tuple[str, int], int]:
    """``(topic, partition)`` and offset of a consumed record or EOF (set on both)."""
    return (cast(str, msg.topic()), cast(int, msg.partition())), cast(int, msg.offset())


def read_ranges(consumer: Consumer, ranges: Ranges, *, idle_timeout: float = 20.0,
                batch: int = 500, poll: float = 0.5) -> Iterator[Message]:
    """Every record of ``(topic, partition) -> [start, end)``, each partition in offset order.

    ``consumer`` should come from :func:`reader`; it is assigned here and not closed. A
    partition is finished by its last record, or by an EOF at or past its end: an EOF seen
    before the range is fully readable (a fetch racing the watermark) does not cut it short.
    Raises :class:`TimeoutError` after ``idle_timeout`` seconds without any event and
    :class:`~confluent_kafka.KafkaException` on a consumer error.
    """
    todo = {k: v for k, v in ranges.items() if v[1] > v[0]}
    if not todo:
        return
    consumer.assign([TopicPartition(t, p, s) for (t, p), (s, _) in todo.items()])
    idle_since = time.monotonic()
    while todo:
        msgs = consumer.consume(batch, timeout=poll)
        if msgs:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > idle_timeout:
            raise TimeoutError(f"timed out reading {sorted(todo)}")
        for msg in msgs:
            key, offset = where(msg)
            if msg.error() is not None:
                if not is_partition_eof(msg):
                    raise KafkaException(msg.error())
                if key in todo and offset >= todo[key][1]:
                    todo.pop(key, None)
                continue
            if key not in todo or not todo[key][0] <= offset < todo[key][1]:
                continue  # below: re-read after an offset reset; above: past the end
            todo[key] = (offset + 1, todo[key][1])
            yield msg
            if offset + 1 >= todo[key][1]:
                todo.pop(key, None)


def partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int] | None:
    """The partitions of ``topic`` (None if it does not exist)."""
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        return None
    return sorted(meta.partitions)


def watermarks(consumer: Consumer, topic: str, parts: list[int],
               timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """``partition -> (low, high)`` watermark offsets of ``topic``."""
    return {p: cast(tuple[int, int], tuple(consumer.get_watermark_offsets(
        TopicPartition(topic, p), timeout=timeout))) for p in parts}


def read_to_end(settings: Settings, topic: str, group_id: str, *, idle_timeout: float = 20.0,
                timeout: float = 10.0) -> Iterator[Message]:
    """Every record of every partition of ``topic`` up to its high watermark now.

    Raises :class:`LookupError` if the topic does not exist, and what :func:`read_ranges`
    raises.
    """
    c = reader(settings, group_id)
    try:
        parts = partitions(c, topic, timeout)
        if parts is None:
            raise LookupError(f"topic {topic} does not exist")
        ranges = {(topic, p): m for p, m in watermarks(c, topic, parts, timeout).items()}
        yield from read_ranges(c, ranges, idle_timeout=idle_timeout)
    finally:
        c.close()
