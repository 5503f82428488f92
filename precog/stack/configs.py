"""What the stack writes and runs: the configs and command lines of its services (pure)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

from precog.settings import (
    LOCAL_ELASTICSEARCH_PORT,
    LOCAL_ELASTICSEARCH_TRANSPORT_PORT,
    LOCAL_KAFKA_CONTROLLER_PORT,
    LOCAL_KAFKA_PORT,
    LOCAL_REDIS_PORT,
)
from precog.stack.layout import Layout

SLF4J_VERSION = "1.7.36"
#: Secure stack: the broker's own SCRAM user, and the one user precog's clients log in as
#: (Kafka SCRAM, Redis ACL, Elasticsearch file realm).
KAFKA_BROKER_USER = "precog-broker"
CLIENT_USER = "precog"


def kafka_cluster_id(seed: uuid.UUID | None = None) -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never starting
    with ``-`` (the storage tool would take it for an option; Kafka's own ``Uuid.randomUuid``
    draws again in that case, and so does this).

    >>> kafka_cluster_id(uuid.UUID(int=0))
    'AAAAAAAAAAAAAAAAAAAAAA'
    >>> len(kafka_cluster_id())
    22
    >>> all(not kafka_cluster_id().startswith("-") for _ in range(2000))
    True
    """
    while True:
        text = base64.urlsafe_b64encode((seed or uuid.uuid4()).bytes).rstrip(b"=").decode()
        if not text.startswith("-") or seed is not None:
            return text


def kafka_pom(kafka_version: str, slf4j_version: str = SLF4J_VERSION) -> str:
    """The throw-away Maven project whose dependencies are Kafka's broker and a log binding."""
    deps = [
        ("org.apache.kafka", "kafka_2.13", kafka_version),
        ("org.slf4j", "slf4j-reload4j", slf4j_version),
    ]
    dep_xml = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return _pom("kafka-runtime", kafka_version, f"<dependencies>{dep_xml}</dependencies>")


def elasticsearch_fetch_pom(version: str) -> str:
    """The empty Maven project that ``dependency:copy`` of the Elasticsearch zip runs in."""
    return _pom("es-fetch", version)


def _pom(artifact: str, version: str, body: str = "") -> str:
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>precog.local</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version><packaging>pom</packaging>{body}</project>\n"
    )


def kafka_server_properties(data_dir: Path, port: int = LOCAL_KAFKA_PORT,
                            controller_port: int = LOCAL_KAFKA_CONTROLLER_PORT,
                            host: str = "127.0.0.1",
                            overrides: dict[str, str] | None = None) -> str:
    """KRaft combined broker+controller, node 1, replication 1 everywhere.

    >>> props = kafka_server_properties(Path("/d"))
    >>> "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in props
    True
    >>> "controller.quorum.voters=1@127.0.0.1:29093" in kafka_server_properties(
    ...     Path("/d"), 29092, 29093)
    True
    >>> "group.initial.rebalance.delay.ms=0" in props
    True
    """
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
        "log.segment.bytes": str(128 * 1024 * 1024),
        **(overrides or {}),
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def kafka_secure_properties(tls_dir: Path, broker_password: str, port: int = LOCAL_KAFKA_PORT,
                            controller_port: int = LOCAL_KAFKA_CONTROLLER_PORT,
                            host: str = "127.0.0.1") -> dict[str, str]:
    """Secure stack: clients on SASL_SSL (SCRAM-SHA-512), the controller on mutual TLS.

    SCRAM credentials live in the cluster metadata, which a KRaft controller cannot read
    before it authenticates anyone, so the controller listener authenticates the broker by
    its certificate instead (``ssl.client.auth=required``). Every key is PEM.

    >>> p = kafka_secure_properties(Path("/t"), "pw", 29092, 29093)
    >>> p["listeners"]
    'SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093'
    >>> p["listener.security.protocol.map"], p["sasl.enabled.mechanisms"]
    ('SASL_SSL:SASL_SSL,CONTROLLER:SSL', 'SCRAM-SHA-512')
    """
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{KAFKA_BROKER_USER}" password="{broker_password}";')
    return {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls_dir / "server-keystore.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls_dir / "ca.pem"),
    }


def kafka_log4j_properties() -> str:
    """reload4j configuration: everything to ``${kafka.logs.dir}/server.log``, rolled."""
    return (
        "log4j.rootLogger=INFO, file\n"
        "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
        "log4j.appender.file.File=${kafka.logs.dir}/server.log\n"
        "log4j.appender.file.MaxFileSize=50MB\n"
        "log4j.appender.file.MaxBackupIndex=3\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.request.logger=WARN\n"
        "log4j.logger.state.change.logger=WARN\n"
        "log4j.logger.kafka.log.LogCleaner=WARN\n"
    )


def redis_conf(layout: Layout, port: int = LOCAL_REDIS_PORT, *,
               password: str | None = None) -> str:
    """Redis on the stack's port with AOF (fsync every second) on top of the RDB snapshots.

    Feature state must survive a Redis restart or crash: with ``appendfsync everysec`` a
    kill -9 loses nothing that was acknowledged (the AOF is written before the reply), a
    power loss at most the last second. The config path shows in the process title (our
    marker).

    With ``password`` (the secure stack) the port speaks TLS only, the ``default`` user is
    off and the ACL user ``precog`` has that password, stored as its SHA-256 only:

    >>> conf = redis_conf(Layout(Path("/h"), Path("/c"), "k", "e"), 26479, password="pw")
    >>> [ln for ln in conf.splitlines() if ln.startswith(("port", "tls-port", "user"))]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['port 0', 'tls-port 26479', 'user default off',
     'user precog on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~* &* +@all']
    """
    listen = f"port {port}\n"
    if password is not None:
        tls = layout.tls_dir
        digest = hashlib.sha256(password.encode()).hexdigest()
        listen = (
            f"port 0\ntls-port {port}\ntls-cert-file {tls / 'server.pem'}\n"
            f"tls-key-file {tls / 'server.key'}\ntls-ca-cert-file {tls / 'ca.pem'}\n"
            "tls-auth-clients no\nuser default off\n"
            f"user {CLIENT_USER} on #{digest} ~* &* +@all\n"
        )
    return (
        f"bind 127.0.0.1\n{listen}protected-mode yes\ndaemonize no\n"
        f"dir {layout.dir('redis') / 'data'}\n"
        f"logfile {layout.logs('redis') / 'redis.log'}\n"
        "appendonly yes\nappendfsync everysec\n"
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"\n'
    )


def redis_needs_aof_migration(data_dir: Path) -> bool:
    """Whether a stack home holds an RDB snapshot from before AOF was on, and no AOF yet.

    Redis 7 started with ``appendonly yes`` and no AOF ignores ``dump.rdb`` and starts
    empty, so such a home is started with AOF off (loading the RDB) and switched on live.
    """
    return (data_dir / "dump.rdb").exists() and not (data_dir / "appendonlydir").exists()


def kafka_command(layout: Layout, java_home: Path, heap: str) -> list[str]:
    kdir = layout.dir("kafka")
    return [
        str(java_home / "bin" / "java"), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{kdir / 'log4j.properties'}",
        f"-Dkafka.logs.dir={layout.logs('kafka')}",
        "-cp", f"{layout.kafka_libs}/*", "kafka.Kafka", str(kdir / "server.properties"),
    ]


def elasticsearch_command(layout: Layout, java_home: Path, heap: str, user: str | None,
                          http_port: int = LOCAL_ELASTICSEARCH_PORT,
                          transport_port: int = LOCAL_ELASTICSEARCH_TRANSPORT_PORT, *,
                          secure: bool = False) -> list[str]:
    es = layout.dir("elasticsearch")
    env = [
        "env", f"ES_JAVA_HOME={java_home}", f"ES_PATH_CONF={es / 'config'}",
        f"ES_JAVA_OPTS=-Xms{heap} -Xmx{heap}", f"ES_TMPDIR={es / 'tmp'}",
    ]
    settings = {
        "cluster.name": "precog",
        "node.name": "precog-local",
        "discovery.type": "single-node",
        "xpack.security.enabled": "false",
        "network.host": "127.0.0.1",
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "path.data": str(es / "data"),
        "path.logs": str(layout.logs("elasticsearch")),
    }
    if secure:  # paths relative to ES_PATH_CONF, see secure.elasticsearch_secure_config
        settings["xpack.security.enabled"] = "true"
        for layer in ("http", "transport"):
            settings |= {
                f"xpack.security.{layer}.ssl.enabled": "true",
                f"xpack.security.{layer}.ssl.key": "tls/server.key",
                f"xpack.security.{layer}.ssl.certificate": "tls/server.pem",
                f"xpack.security.{layer}.ssl.certificate_authorities": "tls/ca.pem",
            }
        settings["xpack.security.transport.ssl.verification_mode"] = "certificate"
    args = [a for k, v in settings.items() for a in ("-E", f"{k}={v}")]
    run_as = ["runuser", "-u", user, "--"] if user else []
    return [*run_as, *env, str(layout.elasticsearch_dist / "bin" / "elasticsearch"), *args]


def redis_command(layout: Layout, server: str, aof: bool = True) -> list[str]:
    """``redis-server <conf>``; ``aof=False`` to load an old RDB (see
    :func:`redis_needs_aof_migration`)."""
    extra = [] if aof else ["--appendonly", "no"]
    return [server, str(layout.dir("redis") / "redis.conf"), *extra]
