"""Reading a namespace's topics for a replay: assign-only consumers, watermarks, ranges."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from precog.errors import ConfigError, ServiceUnavailable
from precog.io import kafka
from precog.replay.plan import PartitionRange
from precog.settings import Settings

TIMEOUT = 10.0


def consumer(settings: Settings, owner: Settings | None = None, **extra: Any) -> Consumer:
    """An assign-only consumer; its group id (never joined, never committed) is named for
    ``owner`` (the namespace doing the work), so reading production leaves no trace there."""
    return kafka.reader(settings, (owner or settings).group("replay"),
                        **{"auto.offset.reset": "earliest", **extra})


def kafka_error(settings: Settings, exc: KafkaException) -> ServiceUnavailable:
    """A Kafka error as the one-line ``ServiceUnavailable`` naming the address."""
    return ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc.args[0])[:200])


def partitions(reader: Consumer, topic: str) -> list[int]:
    """The partitions of ``topic``; a missing topic is a ConfigError."""
    parts = kafka.partitions(reader, topic, TIMEOUT)
    if parts is None:
        raise ConfigError(f"topic {topic} does not exist")
    return parts


def watermarks(reader: Consumer, topic: str, parts: list[int]) -> dict[int, tuple[int, int]]:
    """(low, high) watermark of each partition."""
    return kafka.watermarks(reader, topic, parts, TIMEOUT)


def offsets_for_time(reader: Consumer, topic: str, parts: list[int], ms: int
                     ) -> dict[int, int | None]:
    """First offset per partition whose record timestamp is >= ``ms`` (-1: none)."""
    found = reader.offsets_for_times([TopicPartition(topic, p, ms) for p in parts],
                                     timeout=TIMEOUT)
    return {tp.partition: tp.offset for tp in found}


def read_range(settings: Settings, ranges: Mapping[tuple[str, int], tuple[int, int]],
               owner: Settings | None = None) -> Iterator[Message]:
    """Every record of ``(topic, partition) -> [start, end)``, each partition in offset order
    (:func:`precog.io.kafka.read_ranges`)."""
    if not any(end > start for start, end in ranges.values()):
        return
    reader = consumer(settings, owner)
    try:
        yield from kafka.read_ranges(reader, ranges, idle_timeout=2 * TIMEOUT)
    except TimeoutError as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    except KafkaException as exc:
        raise kafka_error(settings, exc) from None
    finally:
        reader.close()


def timestamp(msg: Message) -> int:
    """The record timestamp in ms (0 when the record has none)."""
    _, ts = msg.timestamp()
    return int(ts) if ts is not None and ts >= 0 else 0


def edge_time(settings: Settings, owner: Settings, topic: str, ranges: list[PartitionRange],
              last: bool) -> int | None:
    """Oldest first / newest last record timestamp of the ranges (for the outcomes window)."""
    found = []
    for r in ranges:
        if r.size:
            at = r.end - 1 if last else r.start
            found += [timestamp(m) for m in read_range(
                settings, {(topic, r.partition): (at, at + 1)}, owner)]
    if not found:
        return None
    return max(found) + 1 if last else min(found)


def topic_marks(settings: Settings, topic: str,
                owner: Settings | None) -> dict[int, tuple[int, int]]:
    """(low, high) watermark of every partition of ``topic`` now."""
    reader = consumer(settings, owner)
    try:
        return watermarks(reader, topic, partitions(reader, topic))
    except KafkaException as exc:
        raise kafka_error(settings, exc) from None
    finally:
        reader.close()


def read_topic(settings: Settings, name: str, owner: Settings | None = None) -> list[Message]:
    """Every record of ``{ns}.<name>`` up to the high watermarks at the time of the call."""
    topic = settings.topic(name)
    marks = topic_marks(settings, topic, owner)
    return list(read_range(settings, {(topic, p): lh for p, lh in marks.items()}, owner))


def count_topic(settings: Settings, name: str, owner: Settings | None = None) -> int:
    """Records in ``{ns}.<name>`` (high minus low watermark over partitions)."""
    marks = topic_marks(settings, settings.topic(name), owner)
    return sum(h - lo for lo, h in marks.values())
