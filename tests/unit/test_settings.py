"""Unit tests of the one settings object: env prefix and nesting, namespace rules, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from precog.settings import Settings

pytestmark = pytest.mark.unit

_ENV = ("PRECOG_NAMESPACE", "PRECOG_KAFKA_BOOTSTRAP", "PRECOG_KAFKA_SASL_PASSWORD",
        "PRECOG_KAFKA_SECURITY_PROTOCOL", "PRECOG_KAFKA_SASL_MECHANISM",
        "PRECOG_KAFKA_SASL_USERNAME", "PRECOG_KAFKA_SSL_CAFILE", "PRECOG_KAFKA_PARTITIONS",
        "PRECOG_REDIS_URL", "PRECOG_REDIS_PASSWORD", "PRECOG_ELASTICSEARCH_URL",
        "PRECOG_ELASTICSEARCH_USERNAME", "PRECOG_ELASTICSEARCH_PASSWORD",
        "PRECOG_ELASTICSEARCH_API_KEY", "PRECOG_STACK_HOME", "PRECOG_STACK_CACHE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_point_at_the_local_stack() -> None:
    s = Settings()
    assert s.namespace == "prod"
    assert s.kafka.bootstrap == "127.0.0.1:19092"
    assert s.redis.url == "redis://127.0.0.1:16379/0"
    assert s.elasticsearch.url == "http://127.0.0.1:19200"
    assert s.stack_overridden() == {"kafka": False, "redis": False, "elasticsearch": False,
                                    "schema-registry": False}


def test_env_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_NAMESPACE", "parallel")
    monkeypatch.setenv("PRECOG_KAFKA_BOOTSTRAP", "broker-1:9093,broker-2:9093")
    monkeypatch.setenv("PRECOG_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PRECOG_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PRECOG_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("PRECOG_KAFKA_SASL_PASSWORD", "kafka-secret")
    monkeypatch.setenv("PRECOG_KAFKA_SSL_CAFILE", "/etc/ca.pem")
    monkeypatch.setenv("PRECOG_KAFKA_PARTITIONS", "12")
    monkeypatch.setenv("PRECOG_REDIS_URL", "rediss://cache:6380/2")
    monkeypatch.setenv("PRECOG_ELASTICSEARCH_URL", "https://es:9200")
    monkeypatch.setenv("PRECOG_STACK_HOME", "/srv/stack")
    s = Settings()
    assert s.namespace == "parallel"
    assert s.kafka.partitions == 12
    assert s.kafka.confluent_config() == {
        "bootstrap.servers": "broker-1:9093,broker-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "kafka-secret",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert s.redis.url == "rediss://cache:6380/2"
    assert s.stack.home == Path("/srv/stack")
    assert s.topic("predictions") == "parallel.predictions"
    assert s.index("predictions") == "parallel-predictions"
    assert s.redis_key("state", "card-1") == "parallel:state:card-1"
    assert s.group("score") == "precog-parallel-score"
    assert s.stack_overridden() == {"kafka": True, "redis": True, "elasticsearch": True,
                                    "schema-registry": False}


def test_only_the_given_service_is_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("PRECOG_KAFKA_PARTITIONS", "2")  # not an address: still local Kafka
    assert Settings().stack_overridden() == {"kafka": False, "redis": True,
                                             "elasticsearch": False, "schema-registry": False}


def test_bad_env_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_KAFKA_SECURITY_PROTOCOL", "TELNET")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("ns", ["prod", "parallel", "t0123456789", "a-b_c"])
def test_valid_namespaces(ns: str) -> None:
    assert Settings(namespace=ns).namespace == ns


_NON_ASCII = "é"  # Kafka topic names refuse non-ASCII letters


@pytest.mark.parametrize("ns", ["", "Prod", "a.b", "a b", "a/b", "ns*", _NON_ASCII])
def test_invalid_namespaces(ns: str) -> None:
    with pytest.raises(ValidationError, match="must be lowercase letters"):
        Settings(namespace=ns)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.namespace = "other"  # type: ignore[misc]


def test_secrets_are_secret_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_KAFKA_SASL_PASSWORD", "k-pass-123")
    monkeypatch.setenv("PRECOG_REDIS_PASSWORD", "r-pass-456")
    monkeypatch.setenv("PRECOG_ELASTICSEARCH_USERNAME", "elastic")
    monkeypatch.setenv("PRECOG_ELASTICSEARCH_PASSWORD", "e-pass-789")
    monkeypatch.setenv("PRECOG_ELASTICSEARCH_API_KEY", "api-key-000")
    s = Settings()
    secrets = [s.kafka.sasl_password, s.redis.password, s.elasticsearch.password,
               s.elasticsearch.api_key]
    assert all(isinstance(x, SecretStr) for x in secrets)
    shown = " ".join([repr(s), str(s), s.model_dump_json(), str(s.model_dump())])
    for raw in ("k-pass-123", "r-pass-456", "e-pass-789", "api-key-000"):
        assert raw not in shown
    assert "**********" in shown
    # only the client configs hand the real values over
    assert s.elasticsearch.client_kwargs()["basic_auth"] == ("elastic", "e-pass-789")
    assert s.elasticsearch.client_kwargs()["api_key"] == "api-key-000"
