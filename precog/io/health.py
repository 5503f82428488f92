"""Health checks of Kafka, Redis, Elasticsearch and the Schema Registry: one function each.

Each raises :class:`~precog.errors.ServiceUnavailable` naming the redacted address. Two
callers use them:

* ``precog stack`` (the default): Kafka must produce and consume a record on
  :data:`HEALTH_TOPIC`, Elasticsearch must reach status yellow; the error carries the first
  line of the client's error and the service's lower-case name;
* the worker's preflight (``preflight=True``, :mod:`precog.services.preflight`): a fast
  answer at startup (Kafka metadata, any cluster health) with the client's whole error and
  the service's proper name.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from precog.errors import ServiceUnavailable, redacted
from precog.settings import Settings

#: The one-partition topic that ``precog stack`` produces to and consumes from.
HEALTH_TOPIC = "precog-stack-health"


def check_kafka(settings: Settings, timeout: float = 15.0, *, preflight: bool = False) -> None:
    """Produce a unique record to :data:`HEALTH_TOPIC` and read it back (``preflight``: list
    the topics); ServiceUnavailable if not."""
    from confluent_kafka import KafkaException

    from precog.io import kafka

    if preflight:
        try:
            kafka.admin(settings, log_level=0).list_topics(timeout=timeout)  # the error says it
        except Exception as exc:  # KafkaException: transport failure, timeout
            raise ServiceUnavailable("Kafka", settings.kafka.bootstrap, str(exc)) from None
        return
    errors: list[Any] = []  # librdkafka tells why (TLS, SASL) only through error_cb
    cfg: dict[str, Any] = {"log_level": 0, "socket.timeout.ms": 5000, "error_cb": errors.append}
    admin = None
    try:
        admin = kafka.admin(settings, **cfg)
        _round_trip(settings, admin, cfg, timeout)
    except KafkaException as exc:
        if admin is not None:
            admin.poll(0)  # serves the error callbacks
        from confluent_kafka import KafkaError

        why = [e for e in errors if e.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL)]
        detail = why[-1].str() if why else str(exc.args[0])
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, detail[:200]) from exc


def _round_trip(settings: Settings, admin: Any, cfg: dict[str, Any], timeout: float) -> None:
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import NewTopic

    from precog.io import kafka

    addr = settings.kafka.bootstrap
    deadline = time.monotonic() + timeout
    meta = admin.list_topics(timeout=timeout)
    if HEALTH_TOPIC not in meta.topics:
        fut = admin.create_topics([NewTopic(HEALTH_TOPIC, 1, 1)])[HEALTH_TOPIC]
        with contextlib.suppress(KafkaException):  # created concurrently: fine
            fut.result(timeout=timeout)
    token = uuid.uuid4().hex.encode()
    delivered: list[object] = []
    producer = kafka.producer(settings, **cfg, **{"message.timeout.ms": int(timeout * 1000)})
    producer.produce(HEALTH_TOPIC, value=token,
                     on_delivery=lambda err, msg: delivered.append(err or msg))
    producer.flush(timeout)
    if not delivered or not hasattr(delivered[0], "offset"):
        raise ServiceUnavailable("kafka", addr, f"produce failed: {delivered or 'timeout'}")
    offset = delivered[0].offset()  # type: ignore[attr-defined]
    consumer = kafka.consumer(settings, "precog-stack-health", **cfg,
                              **{"enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(HEALTH_TOPIC, 0, offset)])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() == token:
                return
    finally:
        consumer.close()
    raise ServiceUnavailable("kafka", addr, "produced a record but could not consume it")


def check_elasticsearch(settings: Settings, timeout: float = 10.0, *,
                        preflight: bool = False) -> str:
    """Cluster health; returns ``yellow`` or ``green`` (``preflight``: any status), else
    ServiceUnavailable."""
    from precog.io.elasticsearch import elasticsearch_client

    addr = redacted(settings.elasticsearch.url)
    wait = {} if preflight else {"wait_for_status": "yellow"}
    try:
        with elasticsearch_client(settings, request_timeout=timeout) as es:
            health = es.cluster.health(timeout=f"{int(timeout)}s", **wait)  # type: ignore[arg-type]
    except Exception as exc:  # any transport/product-check error means "not healthy"
        if preflight:
            url = settings.elasticsearch.url  # redacted in the message, detail included
            raise ServiceUnavailable("Elasticsearch", url, str(exc)) from None
        raise ServiceUnavailable("elasticsearch", addr, _short(exc)) from exc
    status = str(health["status"])
    if not preflight and status not in ("yellow", "green"):
        raise ServiceUnavailable("elasticsearch", addr, f"cluster health {status}")
    return status


def check_redis(settings: Settings, timeout: float = 5.0, *, preflight: bool = False) -> None:
    """PING with the workers' own client options (credentials, TLS CA); ServiceUnavailable
    if it does not answer (``preflight``: if redis-py raises a RedisError)."""
    import redis

    from precog.io.redis import redis_client

    # preflight lets what is not a Redis error (a malformed URL) through as it is
    caught = redis.RedisError if preflight else Exception
    try:
        client = redis_client(settings, timeout)
        try:
            client.ping()
        finally:
            client.close()
    except caught as exc:  # connection refused, auth, TLS: all mean "not healthy"
        if preflight:
            raise ServiceUnavailable("Redis", settings.redis.url, str(exc)) from None
        raise ServiceUnavailable("redis", redacted(settings.redis.url), _short(exc)) from exc


def check_schema_registry(settings: Settings, timeout: float = 5.0, *,
                          preflight: bool = False) -> None:
    """List the subjects through confluent-kafka's ``SchemaRegistryClient`` (the Confluent
    API answers, with the settings' auth and CA); ServiceUnavailable if not."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    cfg: dict[str, Any] = {**settings.schema_registry.client_config(),
                           "timeout": max(1, int(timeout)), "max.retries": 0}
    try:
        SchemaRegistryClient(cfg).get_subjects()
    except Exception as exc:  # connection refused, HTTP errors, TLS, auth
        name = "Schema Registry" if preflight else "schema-registry"
        raise ServiceUnavailable(name, redacted(settings.schema_registry.url), _short(exc)
                                 ) from None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


CHECKS: dict[str, Callable[..., object]] = {
    "kafka": check_kafka,
    "elasticsearch": check_elasticsearch,
    "redis": check_redis,
    "schema-registry": check_schema_registry,
}


def address(settings: Settings, service: str) -> str:
    """The address ``service`` is checked at, without credentials."""
    return {
        "kafka": settings.kafka.bootstrap,
        "elasticsearch": redacted(settings.elasticsearch.url),
        "redis": redacted(settings.redis.url),
        "schema-registry": redacted(settings.schema_registry.url),
    }[service]


def healthy(settings: Settings, service: str, timeout: float = 5.0) -> str | None:
    """None if healthy, else the one-line reason."""
    try:
        CHECKS[service](settings, timeout)
    except ServiceUnavailable as exc:
        return str(exc)
    return None
