"""Each service's files in the stack home before it starts: configs, storage, the ES tree."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from precog.errors import StackError
from precog.settings import Settings
from precog.stack.configs import (
    CLIENT_USER,
    KAFKA_BROKER_USER,
    kafka_cluster_id,
    kafka_log4j_properties,
    kafka_secure_properties,
    kafka_server_properties,
    redis_command,
    redis_conf,
    redis_needs_aof_migration,
)
from precog.stack.install import (
    check_traversable,
    chown_tree,
    es_run_user,
    extract_zip,
    find_redis_server,
    install_elasticsearch_zip,
    install_kafka,
    run_step,
)
from precog.stack.layout import Echo, Layout
from precog.stack.secure import Credentials, elasticsearch_secure_config, write_private


def prepare_kafka(settings: Settings, layout: Layout, java_home: Path, echo: Echo,
                  creds: Credentials | None = None) -> None:
    """The jars, ``server.properties`` and ``log4j.properties``; KRaft storage formatted once."""
    install_kafka(layout, echo)
    kdir = layout.dir("kafka")
    data = kdir / "data"
    for d in (data, layout.logs("kafka")):
        d.mkdir(parents=True, exist_ok=True)
    ports = settings.stack
    secure = None if creds is None else kafka_secure_properties(
        layout.tls_dir, creds.kafka_broker_password, ports.kafka_port,
        ports.kafka_controller_port)
    props = kafka_server_properties(data, ports.kafka_port, ports.kafka_controller_port,
                                    overrides=secure)
    if creds is None:
        (kdir / "server.properties").write_text(props)
    else:
        write_private(kdir / "server.properties", props)  # holds the broker's password
    (kdir / "log4j.properties").write_text(kafka_log4j_properties())
    if not (data / "meta.properties").exists():
        echo(f"kafka: formatting KRaft storage in {data}")
        # the SCRAM users go into the bootstrap metadata (KIP-900): the broker's own and
        # the client's; the command line holds them only while the format tool runs
        scram = [] if creds is None else [
            a for user, pw in ((KAFKA_BROKER_USER, creds.kafka_broker_password),
                               (CLIENT_USER, creds.kafka_password))
            for a in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]")]
        run_step([str(java_home / "bin" / "java"), "-cp", f"{layout.kafka_libs}/*",
                  f"-Dlog4j.configuration=file:{kdir / 'log4j.properties'}",
                  f"-Dkafka.logs.dir={layout.logs('kafka')}",
                  "kafka.tools.StorageTool", "format", "-t", kafka_cluster_id(),
                  "-c", str(kdir / "server.properties"), "--ignore-formatted", *scram],
                 log=layout.logs("kafka") / "format.log", what="Kafka storage format")


def prepare_elasticsearch(layout: Layout, echo: Echo, java_home: Path | None = None,
                          creds: Credentials | None = None) -> str | None:
    """The distribution unpacked, config, data, tmp and logs; the user to run it as (or None)."""
    archive = install_elasticsearch_zip(layout, echo)
    es = layout.dir("elasticsearch")
    dist = layout.elasticsearch_dist
    if not (dist / "bin" / "elasticsearch").exists():
        echo(f"elasticsearch: unpacking {archive.name} into {dist.parent}")
        dist.parent.mkdir(parents=True, exist_ok=True)
        extract_zip(archive, dist.parent / f"unpack-{dist.name}")
        shutil.move(str(dist.parent / f"unpack-{dist.name}" / dist.name), dist)
        shutil.rmtree(dist.parent / f"unpack-{dist.name}")
    if not (es / "config").exists():
        shutil.copytree(dist / "config", es / "config")
    for d in ("data", "tmp", "logs"):
        (es / d).mkdir(parents=True, exist_ok=True)
    if creds is not None and java_home is not None:
        elasticsearch_secure_config(layout, java_home, creds)
    user = es_run_user(echo)
    if user:
        chown_tree(es, user)
        check_traversable(es, user)
    return user


def prepare_redis(settings: Settings, layout: Layout, echo: Echo,
                  creds: Credentials | None = None) -> list[str]:
    """``redis.conf`` and the data and log directories; the command that starts Redis."""
    server = find_redis_server(echo)
    rdir = layout.dir("redis")
    for d in (rdir / "data", layout.logs("redis")):
        d.mkdir(parents=True, exist_ok=True)
    password = None if creds is None else creds.redis_password
    (rdir / "redis.conf").write_text(
        redis_conf(layout, settings.stack.redis_port, password=password))
    migrate = redis_needs_aof_migration(rdir / "data")
    if migrate:
        echo("redis: dump.rdb from before AOF: loading it, then switching AOF on")
    return redis_command(layout, server, aof=not migrate)


def ensure_redis_aof(settings: Settings, echo: Echo, timeout: float = 60.0) -> None:
    """Switch AOF on in a running Redis started from an old RDB; wait until the AOF is written."""
    from precog.io.redis import redis_client

    client = redis_client(settings, 5.0)
    try:
        if client.config_get("appendonly").get("appendonly") == "yes":
            return
        client.config_set("appendonly", "yes")  # rewrites the AOF from memory, in the background
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if info["aof_enabled"] and not info["aof_rewrite_in_progress"] \
                    and not info["aof_rewrite_scheduled"]:
                echo("redis: AOF on")
                return
            time.sleep(0.2)
    finally:
        client.close()
    raise StackError(f"redis: AOF rewrite not finished after {timeout:.0f}s")
