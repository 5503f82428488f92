"""The secure stack (docs/security.md): credentials let clients in, nothing else, no leak.

One secure stack (Kafka SASL_SSL/SCRAM-SHA-512, Redis ACL user over TLS, Elasticsearch with
security and HTTPS) is started on free ports in a tmp home for the whole module and stopped
afterwards; the main stack is never touched. Clients are built the way precog builds them:
from the ``PRECOG_*`` variables ``precog stack env --secure`` prints. Every output, message,
log, ``/health``, ``/metrics`` and Elasticsearch document is searched for the passwords.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from precog import stack as local_stack
from precog.errors import ServiceUnavailable
from precog.io import health
from precog.io.elasticsearch import elasticsearch_client
from precog.io.redis import redis_client
from precog.settings import Settings
from precog.workers import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
_CLIENT_ENV = ("PRECOG_KAFKA_", "PRECOG_REDIS_", "PRECOG_ELASTICSEARCH_", "PRECOG_STACK_")
WRONG = "wrong-" + uuid.uuid4().hex


class Secure:
    """The running secure stack: its settings, the client env, the secrets, what it printed."""

    def __init__(self, base: Settings, env: dict[str, str], secrets: list[str],
                 output: str) -> None:
        self.base, self.env, self.secrets, self.output = base, env, secrets, output

    def client(self, **kw: Any) -> Settings:
        """Settings as a precog process with the exported variables builds them."""
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return Settings(**kw)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def assert_no_secret(self, text: str, where: str) -> None:
        for secret in self.secrets:
            assert secret not in text, f"a password appears in {where}"


@pytest.fixture(scope="module")
def secure() -> Iterator[Secure]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(_CLIENT_ENV)}
    for name in saved:
        del os.environ[name]
    # not pytest's tmp_path: its parents are 0700 and Elasticsearch runs as precog-es
    top = Path(tempfile.mkdtemp(prefix="precog-secure-"))
    top.chmod(0o755)
    home = top / "stack"
    kafka, controller, redis, es, transport = free_ports(5)
    base = Settings(stack={
        "secure": True, "home": home, "kafka_port": kafka, "kafka_controller_port": controller,
        "redis_port": redis, "elasticsearch_port": es, "elasticsearch_transport_port": transport,
        "kafka_heap": "384m", "elasticsearch_heap": "512m",
    })
    printed: list[str] = []
    try:
        local_stack.up(base, echo=printed.append)
        creds = local_stack.load_credentials(local_stack.Layout.from_settings(base))
        assert creds is not None
        env = local_stack.secure_env(base)
        yield Secure(base, env, creds.secrets(), "\n".join(printed))
    finally:
        local_stack.down(base, echo=print, timeout=20)
        os.environ.update(saved)
        shutil.rmtree(top, ignore_errors=True)


def test_credentials_file_is_private_and_up_prints_no_secret(secure: Secure) -> None:
    layout = local_stack.Layout.from_settings(secure.base)
    assert layout.credentials_file.stat().st_mode & 0o777 == 0o600
    assert (layout.dir("kafka") / "server.properties").stat().st_mode & 0o777 == 0o600
    for key in ("ca.key", "server.key", "server-keystore.pem"):
        assert (layout.tls_dir / key).stat().st_mode & 0o777 == 0o600
    secure.assert_no_secret(secure.output, "the output of up")
    assert "credentials.json" in secure.output
    # the password of Redis is stored hashed: only the broker's own is in a config file
    redis_conf = (layout.dir("redis") / "redis.conf").read_text()
    secure.assert_no_secret(redis_conf, "redis.conf")
    assert "user default off" in redis_conf and "port 0" in redis_conf


def test_kafka_with_credentials_produces_and_consumes(secure: Secure) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    s = secure.client()
    assert s.kafka.security_protocol == "SASL_SSL"
    assert s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    topic, token = f"secure-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex.encode()
    delivered: list[Any] = []
    producer = Producer(s.kafka.producer_config(acks="all"))
    producer.produce(topic, key=b"k", value=token,
                     on_delivery=lambda err, msg: delivered.append(err or msg))
    assert producer.flush(30) == 0
    assert hasattr(delivered[0], "offset"), delivered
    consumer = Consumer({**s.kafka.confluent_config(), "group.id": f"g-{topic}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, delivered[0].partition(), delivered[0].offset())])
        deadline, got = time.monotonic() + 30, None
        while time.monotonic() < deadline and got is None:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got = msg.value()
    finally:
        consumer.close()
    assert got == token


def _kafka_refused(cfg: dict[str, Any]) -> str:
    """Metadata must fail; returns the error text with what librdkafka reported on the way."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    seen: list[str] = []
    admin = AdminClient({**cfg, "log_level": 0, "error_cb": lambda err: seen.append(str(err))})
    try:
        admin.list_topics(timeout=3)
    except KafkaException as exc:
        admin.poll(0.5)  # serves error_cb: the authentication or TLS error
        return "\n".join([str(exc), *seen])
    raise AssertionError("Kafka answered a client without valid credentials")


def test_kafka_refuses_plaintext_no_and_wrong_credentials(secure: Secure) -> None:
    s = secure.client()
    good = s.kafka.confluent_config()
    plaintext = {"bootstrap.servers": good["bootstrap.servers"]}
    no_sasl = {**plaintext, "security.protocol": "SSL", "ssl.ca.location": good["ssl.ca.location"]}
    wrong = {**good, "sasl.password": WRONG}
    other_user = {**good, "sasl.username": "intruder"}
    for cfg in (plaintext, no_sasl, wrong, other_user):
        secure.assert_no_secret(_kafka_refused(cfg), "a Kafka error")
    assert "Authentication failed" in _kafka_refused(wrong)
    # precog's own health check: one line naming the address, no password (real or wrong)
    bad = s.model_copy(update={"kafka": s.kafka.model_copy(
        update={"sasl_password": SecretStr(WRONG)})})
    with pytest.raises(ServiceUnavailable) as err:
        health.check_kafka(bad, timeout=5)
    assert s.kafka.bootstrap in str(err.value)
    assert "Authentication failed" in str(err.value)
    secure.assert_no_secret(str(err.value), "check_kafka's error")
    assert WRONG not in str(err.value)


def test_redis_with_credentials_reads_and_writes_others_are_refused(secure: Secure) -> None:
    import redis

    s = secure.client()
    assert s.redis.url.startswith("rediss://")
    client = redis_client(s)
    try:
        key = f"secure:{uuid.uuid4().hex}"
        client.set(key, b"v", ex=60)
        assert client.get(key) == b"v"
        assert client.acl_whoami() == "precog"
    finally:
        client.close()
    variants = {
        "no credentials": s.model_copy(update={"redis": s.redis.model_copy(
            update={"username": None, "password": None})}),
        "wrong password": s.model_copy(update={"redis": s.redis.model_copy(
            update={"password": SecretStr(WRONG)})}),
        "plaintext": s.model_copy(update={"redis": s.redis.model_copy(
            update={"url": s.redis.url.replace("rediss://", "redis://")})}),
    }
    for what, bad in variants.items():
        c = redis_client(bad, timeout=3)
        with pytest.raises(redis.RedisError) as exc:
            c.ping()
        c.close()
        secure.assert_no_secret(str(exc.value), f"the Redis error ({what})")
        with pytest.raises(ServiceUnavailable) as err:
            health.check_redis(bad, timeout=3)
        secure.assert_no_secret(str(err.value), f"check_redis's error ({what})")
        assert WRONG not in str(err.value)


def test_elasticsearch_user_gets_in_others_are_refused(secure: Secure) -> None:
    """The file-realm user over HTTPS. API keys cannot be tested on this distribution: they
    live in the ``.security`` index, whose mapping needs the ``analysis-common`` module the
    integ-test-zip lacks (docs/security.md)."""
    from elasticsearch import AuthenticationException, Elasticsearch

    s = secure.client()
    assert s.elasticsearch.url.startswith("https://")
    index = f"secure-{uuid.uuid4().hex[:8]}"
    with elasticsearch_client(s) as es:  # type: ignore[arg-type]
        assert es.security.authenticate()["username"] == "precog"
        es.index(index=index, id="1", document={"a": 1}, refresh=True)
        assert es.get(index=index, id="1")["_source"] == {"a": 1}
    secrets = secure.secrets
    nobody = s.elasticsearch.model_copy(update={"username": None, "password": None})
    wrong = s.elasticsearch.model_copy(update={"password": SecretStr(WRONG)})
    for cfg in (nobody, wrong):
        es = Elasticsearch(**cfg.client_kwargs())  # type: ignore[arg-type]
        with es, pytest.raises(AuthenticationException) as exc:
            es.get(index=index, id="1")
        assert exc.value.meta.status == 401
        assert not any(x in str(exc.value) for x in [*secrets, WRONG])
    plain = s.model_copy(update={"elasticsearch": s.elasticsearch.model_copy(
        update={"url": s.elasticsearch.url.replace("https://", "http://")})})
    for bad in (plain, s.model_copy(update={"elasticsearch": wrong})):
        with pytest.raises(ServiceUnavailable) as err:
            health.check_elasticsearch(bad, timeout=5)
        assert not any(x in str(err.value) for x in [*secrets, WRONG])


def test_worker_preflight_trusts_the_configured_ca(secure: Secure) -> None:
    from precog.services.preflight import check_redis

    check_redis(secure.client())


def test_worker_preflight_errors_hide_a_password_in_the_url(secure: Secure) -> None:
    from precog.services.preflight import check_elasticsearch, check_redis

    s = secure.client()
    in_url = s.model_copy(update={
        "redis": s.redis.model_copy(update={
            "url": s.redis.url.replace("rediss://", f"rediss://precog:{WRONG}@"),
            "password": None}),
        "elasticsearch": s.elasticsearch.model_copy(update={
            "url": s.elasticsearch.url.replace("https://", f"https://precog:{WRONG}@"),
            "password": None}),
    })
    for check in (check_redis, check_elasticsearch):
        with pytest.raises(ServiceUnavailable) as err:
            check(in_url, timeout=3)
        assert WRONG not in str(err.value)


def _precog(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_CLIENT_ENV)}
    return subprocess.run([sys.executable, "-m", "precog", *args], cwd=REPO, text=True,
                          capture_output=True, env={**clean, **env}, timeout=120, check=False)


def test_stack_status_and_env_cli(secure: Secure) -> None:
    ok = _precog(secure.env, "stack", "status")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Kafka, Elasticsearch and Redis with auth and TLS, and the schema registry (the local
    # one has neither: docs/schemas.md, limits)
    assert ok.stdout.count("healthy") == 4, ok.stdout
    secure.assert_no_secret(ok.stdout + ok.stderr, "precog stack status")
    # a wrong password: every service DOWN, one line each, no password of any kind
    wrong = {**secure.env, **{k: WRONG for k in secure.env if k.endswith("_PASSWORD")}}
    bad = _precog(wrong, "stack", "status")
    assert bad.returncode == 1 and bad.stdout.count("DOWN") == 3, bad.stdout + bad.stderr
    assert bad.stdout.count("healthy") == 1, bad.stdout  # the registry: no password to get wrong
    secure.assert_no_secret(bad.stdout + bad.stderr, "precog stack status (wrong password)")
    assert WRONG not in bad.stdout + bad.stderr
    # the only place the passwords are printed
    stack_env = {k: v for k, v in secure.env.items() if k.startswith("PRECOG_STACK_")}
    exports = _precog(stack_env, "stack", "env")
    assert exports.returncode == 0, exports.stderr
    assert f"export PRECOG_KAFKA_SASL_PASSWORD={secure.env['PRECOG_KAFKA_SASL_PASSWORD']}" \
        in exports.stdout.splitlines()


def test_worker_runs_the_pipeline_with_credentials_and_leaks_nothing(
        secure: Secure, tmp_path: Path) -> None:
    from precog.pipelines.train import train

    from precog.namespace import drop_namespace, setup_namespace
    from precog.simulate import SimConfig, produce_live, write_history
    from precog.spec import load_spec
    from precog.workers import WorkerProcess
    from tests.e2e.helpers import wait_for

    ns = "s" + uuid.uuid4().hex[:10]
    s = secure.client(namespace=ns, spec=REPO / "pipelines/specs/transactions.yaml",
                      registry_dir=tmp_path / "registry")
    spec = load_spec(s.spec)
    setup_namespace(s, spec)
    write_history(tmp_path / "history", 3000, seed=11, progress=False,
                  spec=spec)
    train(s, spec, tmp_path / "history")
    os.environ.update(secure.env)  # the worker subprocess inherits them (worker_env)
    try:
        # no SSL_CERT_FILE: every client of the worker, its start-up check included, is
        # given the CA by its own PRECOG_* setting
        worker = WorkerProcess(s, tmp_path)
        try:
            worker.wait_healthy(timeout=120)
            n = 300
            produce_live(s, spec, n, 300.0, SimConfig(seed=5, garbage_fraction=0.0),
                         progress=False, outcome_wait_s=0)
            with elasticsearch_client(s) as es:  # type: ignore[arg-type]
                def indexed() -> bool:
                    es.indices.refresh(index=f"{ns}-predictions*", ignore_unavailable=True)
                    got = es.count(index=f"{ns}-predictions*", ignore_unavailable=True)
                    return int(got["count"]) >= n
                wait_for(indexed, timeout=90, every=1.0)
                docs = es.search(index=f"{ns}-*", size=1000, query={"match_all": {}})
            status, health = worker.health()
            metrics = worker.metrics()
        finally:
            worker.stop()
        assert status == 200, health
        secure.assert_no_secret(json.dumps(health), "/health")
        secure.assert_no_secret(metrics, "/metrics")
        secure.assert_no_secret(worker.log_path.read_text(errors="replace"), "the worker log")
        assert docs["hits"]["hits"]
        secure.assert_no_secret(json.dumps(docs.body), "Elasticsearch documents")
        layout = local_stack.Layout.from_settings(secure.base)
        for service in local_stack.SERVICES:
            for path in layout.log_files(service):
                secure.assert_no_secret(path.read_text(errors="replace"), str(path))
    finally:
        for k in secure.env:
            os.environ.pop(k, None)
        drop_namespace(s)
