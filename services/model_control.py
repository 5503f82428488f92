"""Publish and read model roles on the compacted ``{ns}.model-control`` topic.

One record per change, keyed by spec name, value ``Codec("model_control")``; the newest
record for a key is the spec's current :class:`~precog.roles.Roles`.
"""

from __future__ import annotations

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from precog.avro import Codec
from precog.errors import ConfigError, ServiceUnavailable
from precog.io import kafka
from precog.io.kafka import CONTROL_TOPIC
from precog.roles import Roles
from precog.schema_registry import control_codec
from precog.settings import Settings

_TIMEOUT = 10.0


def encode_roles(roles: Roles, codec: Codec | None = None) -> bytes:
    """Avro bytes of ``roles`` (single-object unless ``codec`` says otherwise)."""
    return (codec or Codec.for_schema("model_control")).encode(roles.to_record())


def decode_roles(value: bytes | None, codec: Codec | None = None) -> Roles | None:
    """Roles from a model-control record value (None for a tombstone)."""
    if value is None:
        return None
    return Roles.from_record((codec or Codec.for_schema("model_control")).decode(value))


def publish_roles(settings: Settings, roles: Roles) -> None:
    """Produce ``roles`` keyed by spec name and wait until the broker acknowledged it."""
    topic = settings.topic(CONTROL_TOPIC)
    producer = Producer(
        settings.kafka.producer_config(acks="all", **{"enable.idempotence": True})
    )
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    try:
        producer.produce(
            topic, key=roles.spec.encode(), value=encode_roles(roles, control_codec(settings)),
            on_delivery=delivered
        )
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    if producer.flush(_TIMEOUT) > 0:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, "roles not acknowledged")
    if errors:
        err = errors[0]
        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise _missing_topic(settings)
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, f"{topic}: {err.str()}")


def read_roles(settings: Settings, spec_name: str) -> Roles | None:
    """The spec's current roles: the last record for its key, or None if it has none.

    Reads the topic from its first retained offset up to the high watermark of every
    partition (:func:`precog.io.kafka.read_ranges`).
    """
    topic = settings.topic(CONTROL_TOPIC)
    codec = control_codec(settings)
    consumer = kafka.reader(settings, settings.group("control-reader"))
    key = spec_name.encode()
    found: Roles | None = None
    try:
        ranges = {}
        for p in _partitions(consumer, settings, topic):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), _TIMEOUT)
            if high > low:
                ranges[(topic, p)] = (low, high)
        for msg in kafka.read_ranges(consumer, ranges, idle_timeout=_TIMEOUT):
            if msg.key() == key:
                found = decode_roles(msg.value(), codec)
        return found
    except TimeoutError:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap,
                                 "timed out reading model-control") from None
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    finally:
        consumer.close()


def _partitions(consumer: Consumer, settings: Settings, topic: str) -> list[int]:
    try:
        meta = consumer.list_topics(topic, timeout=_TIMEOUT)
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None or not tmeta.partitions:
        raise _missing_topic(settings)
    return sorted(tmeta.partitions)


def _missing_topic(settings: Settings) -> ConfigError:
    return ConfigError(
        f"topic {settings.topic(CONTROL_TOPIC)} does not exist: run `precog setup` first"
    )
