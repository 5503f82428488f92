"""Fail fast at startup: every backing service answers at its address, or we say which.

Addresses are shown without credentials (:class:`precog.errors.ServiceUnavailable`).
"""

from __future__ import annotations

from precog.errors import ServiceUnavailable
from precog.settings import Settings


def check_kafka(settings: Settings, timeout: float = 10.0) -> None:
    from confluent_kafka.admin import AdminClient

    try:
        cfg = {**settings.kafka.confluent_config(), "log_level": 0}  # the error below says it
        AdminClient(cfg).list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException: transport failure, timeout
        raise ServiceUnavailable("Kafka", settings.kafka.bootstrap, str(exc)) from None


def check_redis(settings: Settings, timeout: float = 5.0) -> None:
    import redis
    from precog.services.feature_store import client_kwargs

    r = settings.redis
    try:
        # the workers' own client options: credentials and the TLS CA
        kw = {**client_kwargs(settings), "socket_connect_timeout": timeout,
              "socket_timeout": timeout}
        client = redis.Redis.from_url(r.url, **kw)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        raise ServiceUnavailable("Redis", r.url, str(exc)) from None


def check_elasticsearch(settings: Settings, timeout: float = 10.0) -> None:
    from elasticsearch import Elasticsearch

    kw = settings.elasticsearch.client_kwargs()
    kw["request_timeout"] = timeout
    try:
        with Elasticsearch(**kw) as es:  # type: ignore[arg-type]
            es.cluster.health(timeout=f"{int(timeout)}s")
    except Exception as exc:
        raise ServiceUnavailable("Elasticsearch", settings.elasticsearch.url, str(exc)) from None


def check_all(settings: Settings, elasticsearch: bool = True) -> None:
    check_kafka(settings)
    check_redis(settings)
    if elasticsearch:
        check_elasticsearch(settings)
