"""The local stack: Kafka (KRaft), Elasticsearch, Redis and a Schema Registry (Apicurio) as local
processes, without Docker.

``up`` fetches what is missing (Kafka's jars and the Elasticsearch zip from Maven Central into
the cache, ``redis-server`` with apt-get, Apicurio Registry built with Maven), starts each
service under the stack home, and waits for real health (:mod:`precog.io.health`): a Kafka
produce/consume round trip, Elasticsearch cluster health yellow or green, Redis PING, the
registry listing its subjects. ``down`` stops only the processes this stack
started (pid files whose command line is verified first). A service given explicitly
(``PRECOG_KAFKA_BOOTSTRAP``, ``PRECOG_REDIS_URL``, ``PRECOG_ELASTICSEARCH_URL``,
``PRECOG_SCHEMA_REGISTRY_URL``) is never
started, only checked.

Ports come from ``settings.stack`` (``PRECOG_STACK_*_PORT``), so a second stack with its own
home and ports runs beside the first and shares nothing with it. Fault tests drive one service
of such a stack with :func:`service_pid`, :func:`stop_service`, :func:`signal_service` and
:func:`start_service`.

With ``settings.stack.secure`` (``precog stack up --secure``, docs/security.md) the same
services run with authentication and TLS on: Kafka SASL_SSL with SCRAM-SHA-512, Redis with
an ACL user over TLS only, Elasticsearch with security and HTTPS. A local CA, the server
certificate and the credentials are generated once into the stack home.

Layout of the stack home (``settings.stack.home``, relative paths are taken from the
checkout, or the current directory for a wheel: :func:`precog.resources.project_root`)::

    run/<service>.pid            pid file (JSON: pid, marker, command)
    credentials.json, tls/       secure stack only: passwords (0600), CA and server certificate
    kafka/{server.properties,log4j.properties,data/,logs/}
    elasticsearch/{dist/,config/,data/,logs/,tmp/}
    redis/{redis.conf,data/{appendonlydir/,dump.rdb},logs/}
    schema-registry/{data/registry.mv.db,logs/}

One concern per module, each importing only those above it in this list:

- :mod:`~precog.stack.layout`: the services, where a stack home keeps its files
- :mod:`~precog.stack.configs`: the configs and command lines the stack writes (pure)
- :mod:`~precog.stack.processes`: pid files, our processes, process groups, ports (psutil)
- :mod:`~precog.stack.install`: Java, Maven, redis-server, Kafka's jars, the ES zip
- :mod:`~precog.stack.apicurio`: the Schema Registry's Maven (Quarkus) build and command line
- :mod:`~precog.stack.secure`: credentials, the local CA, the secure clients' settings
- :mod:`~precog.stack.health`: ``status`` rows, waiting until a service is healthy
- :mod:`~precog.stack.prepare`: each service's files in the home before it starts
- :mod:`~precog.stack.lifecycle`: ``up``, ``down``, ``ensure``, ``logs``
- :mod:`~precog.stack.service`: one service at a time (fault tests)

This package re-exports what callers use (``from precog import stack``; ``stack.up(...)``).
"""

from __future__ import annotations

from precog.io.health import address, healthy
from precog.stack.configs import (
    elasticsearch_command,
    kafka_cluster_id,
    kafka_command,
    kafka_log4j_properties,
    kafka_pom,
    kafka_secure_properties,
    kafka_server_properties,
    redis_command,
    redis_conf,
    redis_needs_aof_migration,
)
from precog.stack.health import ServiceStatus, service_status, status
from precog.stack.install import extract_zip, find_java_home, find_maven, parse_java_major
from precog.stack.layout import PROJECT_ROOT, SERVICES, Echo, Layout, local_ports, parse_services
from precog.stack.lifecycle import START_TIMEOUTS, down, ensure, logs, up
from precog.stack.processes import (
    PidRecord,
    cmdline,
    group_members,
    is_service_cmdline,
    owned_pid,
    port_holders,
    port_in_use,
    rss_kib,
    spawn,
    stop_group,
    tail_lines,
    write_pid,
)
from precog.stack.secure import (
    Credentials,
    ensure_credentials,
    export_lines,
    load_credentials,
    secure_env,
    with_stack_credentials,
)
from precog.stack.service import service_pid, signal_service, start_service, stop_service

__all__ = [
    # the stack and its services
    "SERVICES", "START_TIMEOUTS", "PROJECT_ROOT", "Echo", "Layout", "ServiceStatus",
    "up", "down", "ensure", "status", "service_status", "logs", "parse_services",
    "local_ports", "address", "healthy",
    # one service (fault tests)
    "service_pid", "start_service", "stop_service", "signal_service",
    # secure stack
    "Credentials", "load_credentials", "ensure_credentials", "secure_env", "export_lines",
    "with_stack_credentials",
    # configs and command lines
    "kafka_cluster_id", "kafka_pom", "kafka_server_properties", "kafka_secure_properties",
    "kafka_log4j_properties", "kafka_command", "elasticsearch_command", "redis_conf",
    "redis_command", "redis_needs_aof_migration",
    # tools and downloads
    "parse_java_major", "find_java_home", "find_maven", "extract_zip",
    # processes
    "PidRecord", "write_pid", "owned_pid", "spawn", "stop_group", "group_members",
    "is_service_cmdline", "cmdline", "rss_kib", "port_holders", "port_in_use", "tail_lines",
]
