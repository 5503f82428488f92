"""The local stack: Kafka (KRaft), Elasticsearch and Redis as local processes, without Docker.

``up`` fetches what is missing (Kafka's jars and the Elasticsearch zip from Maven Central into
the cache, ``redis-server`` with apt-get), starts each service under the stack home, and waits
for real health (:mod:`precog.io.health`): a Kafka produce/consume round trip, Elasticsearch
cluster health yellow or green, Redis PING. ``down`` stops only the processes this stack
started (pid files whose command line is verified first). A service given explicitly
(``PRECOG_KAFKA_BOOTSTRAP``, ``PRECOG_REDIS_URL``, ``PRECOG_ELASTICSEARCH_URL``) is never
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
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from precog import resources
from precog.errors import ConfigError, StackError
from precog.io.health import address, healthy
from precog.settings import (
    LOCAL_ELASTICSEARCH_PORT,
    LOCAL_ELASTICSEARCH_TRANSPORT_PORT,
    LOCAL_KAFKA_CONTROLLER_PORT,
    LOCAL_KAFKA_PORT,
    LOCAL_REDIS_PORT,
    Settings,
)

Echo = Callable[[str], None]

PROJECT_ROOT = resources.project_root()
SERVICES = ("kafka", "elasticsearch", "redis")
ES_USER = "precog-es"
SLF4J_VERSION = "1.7.36"
JVM_DIR = Path("/usr/lib/jvm")
JAVA_MAJORS = (17, 21)  # what Kafka 3.9 and Elasticsearch 8.15 both run on; 17 preferred
START_TIMEOUTS = {"kafka": 120.0, "elasticsearch": 240.0, "redis": 30.0}
#: Secure stack: the broker's own SCRAM user, and the one user precog's clients log in as
#: (Kafka SCRAM, Redis ACL, Elasticsearch file realm).
KAFKA_BROKER_USER = "precog-broker"
CLIENT_USER = "precog"
ES_ROLE = "precog_app"


def _echo(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Where one stack keeps its downloads (cache) and its runtime files (home)."""

    home: Path
    cache: Path
    kafka_version: str
    elasticsearch_version: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        home = settings.stack.home.expanduser()
        if not home.is_absolute():
            home = PROJECT_ROOT / home
        return cls(
            home=home,
            cache=settings.stack.cache.expanduser().resolve(),
            kafka_version=settings.stack.kafka_version,
            elasticsearch_version=settings.stack.elasticsearch_version,
        )

    def dir(self, service: str) -> Path:
        """The service's directory in the stack home."""
        return self.home / service

    def logs(self, service: str) -> Path:
        return self.dir(service) / "logs"

    def pid_file(self, service: str) -> Path:
        return self.home / "run" / f"{service}.pid"

    def stdout_log(self, service: str) -> Path:
        """Where the process's own stdout/stderr go."""
        return self.logs(service) / f"{service}.out"

    @property
    def kafka_libs(self) -> Path:
        return self.cache / f"kafka-{self.kafka_version}" / "libs"

    @property
    def elasticsearch_zip(self) -> Path:
        return self.cache / f"elasticsearch-{self.elasticsearch_version}.zip"

    @property
    def elasticsearch_dist(self) -> Path:
        # Extracted into the stack home, not the cache: the unprivileged Elasticsearch user
        # must read it, and the cache usually sits in root's private home.
        es = self.dir("elasticsearch")
        return es / "dist" / f"elasticsearch-{self.elasticsearch_version}"

    @property
    def tls_dir(self) -> Path:
        """Secure stack: the local CA and the server certificate and key (PEM)."""
        return self.home / "tls"

    @property
    def credentials_file(self) -> Path:
        """Secure stack: the generated passwords (JSON, mode 0600)."""
        return self.home / "credentials.json"

    def log_files(self, service: str) -> list[Path]:
        """The log files of a service, main log first."""
        main = {
            "kafka": self.logs("kafka") / "server.log",
            "elasticsearch": self.logs("elasticsearch") / "precog.log",
            "redis": self.logs("redis") / "redis.log",
        }[service]
        return [main, self.stdout_log(service)]

    def marker(self, service: str) -> str:
        """A string only this stack's process of ``service`` has in its command line."""
        return {
            "kafka": str(self.dir("kafka") / "server.properties"),
            "elasticsearch": str(self.dir("elasticsearch")),
            "redis": str(self.dir("redis") / "redis.conf"),
        }[service]


# --------------------------------------------------------------------------- pure renderers


def kafka_cluster_id(seed: uuid.UUID | None = None) -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    >>> kafka_cluster_id(uuid.UUID(int=0))
    'AAAAAAAAAAAAAAAAAAAAAA'
    >>> len(kafka_cluster_id())
    22
    """
    raw = (seed or uuid.uuid4()).bytes
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


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
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>precog.local</groupId><artifactId>kafka-runtime</artifactId>"
        f"<version>{kafka_version}</version><packaging>pom</packaging>"
        f"<dependencies>{dep_xml}</dependencies></project>\n"
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


def parse_java_major(version_output: str) -> int | None:
    """The major version from ``java -version`` output.

    >>> parse_java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> parse_java_major('java version "1.8.0_392"')
    8
    >>> parse_java_major("nothing here") is None
    True
    """
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m[1])
    return int(m[2]) if major == 1 and m[2] else major


def listening_inodes(proc_net_tcp: str, port: int) -> set[str]:
    """Socket inodes listening on ``port`` in the text of ``/proc/net/tcp`` (or tcp6).

    >>> text = ("  sl  local_address rem_address   st tx rx tr tm retr uid timeout inode\\n"
    ...         "   0: 0100007F:4A84 00000000:0000 0A 0:0 00:0 0 0 0 4242 1\\n"
    ...         "   1: 0100007F:4A84 0100007F:9C40 01 0:0 00:0 0 0 0 4343 1\\n")
    >>> listening_inodes(text, 19076)
    {'4242'}
    """
    found = set()
    for line in proc_net_tcp.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != "0A":
            continue
        if int(parts[1].rsplit(":", 1)[1], 16) == port:
            found.add(parts[9])
    return found


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a text file (empty if it does not exist)."""
    if not path.exists():
        return []
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block, data = 8192, b""
        while size > 0 and data.count(b"\n") <= n:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    return lines[-n:] if n > 0 else []


# --------------------------------------------------------------------------- processes


def cmdline(pid: int) -> str | None:
    """The command line of a live process, space-joined; None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, pgrp, ...]


def _all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(pid)
    return members


def rss_kib(pid: int) -> int | None:
    """Resident set size (VmRSS) of a process in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def port_holders(port: int) -> list[int]:
    """Pids with a socket listening on TCP ``port`` (any address)."""
    inodes: set[str] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            inodes |= listening_inodes(Path(name).read_text(), port)
    if not inodes:
        return []
    targets = {f"socket:[{i}]" for i in inodes}
    pids = []
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        pids.append(pid)
                        break
    return pids


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def describe_pid(pid: int) -> str:
    cmd = cmdline(pid) or "?"
    return f"pid {pid}: {cmd[:90]}"


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds."""

    pid: int
    marker: str
    command: list[str] = field(default_factory=list)
    started: float = 0.0


def write_pid(path: Path, rec: PidRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec.__dict__) + "\n")


def read_pid(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), str(data["marker"]), list(data.get("command", [])),
                         float(data.get("started", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def owned_pid(path: Path) -> int | None:
    """The pid in ``path`` if that process is alive and its command line has our marker.

    A stale pid file (process gone, or the pid reused by another program) yields None.
    """
    rec = read_pid(path)
    if rec is None:
        return None
    members = group_members(rec.pid)
    if any(is_service_cmdline(cmdline(pid) or "", rec.marker) for pid in [rec.pid, *members]):
        return rec.pid
    return None


def spawn(command: list[str], *, log: Path, pid_file: Path, marker: str,
          cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (so it outlives us), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    write_pid(pid_file, PidRecord(proc.pid, marker, command, time.time()))
    _CHILDREN.append(proc)
    return proc


_CHILDREN: list[subprocess.Popen[bytes]] = []  # keeps handles so exit codes can be read


def stop_group(pgid: int, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """``sig`` to the process group, KILL after ``timeout`` s; True if it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap()
        if not group_members(pgid):
            return False
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(50):
        _reap()
        if not group_members(pgid):
            break
        time.sleep(0.1)
    return True


def _reap() -> None:
    for proc in _CHILDREN:
        proc.poll()


#: First words of the command lines the stack launches (java, runuser for ES, redis-server).
_SERVICE_PROGRAMS = ("java", "runuser", "env", "redis-server")


def is_service_cmdline(cmd: str, marker: str) -> bool:
    """Whether a command line is one of our service processes (not a shell that names a path).

    >>> is_service_cmdline("/usr/bin/java -cp x kafka.Kafka /h/kafka/server.properties",
    ...                    "/h/kafka/server.properties")
    True
    >>> is_service_cmdline("tail -F /h/kafka/server.properties", "/h/kafka/server.properties")
    False

    The marker must be a whole path in the command line, so the stack home ``/a`` never
    claims the processes of ``/b/a`` or ``/a2``:

    >>> is_service_cmdline("redis-server :1 /b/a/redis/redis.conf", "/a/redis/redis.conf")
    False
    >>> is_service_cmdline("env ES_PATH_CONF=/a/elasticsearch/config x", "/a/elasticsearch")
    True
    >>> is_service_cmdline("env ES_PATH_CONF=/a/elasticsearch2/config x", "/a/elasticsearch")
    False
    """
    first = cmd.split(" ", 1)[0].rsplit("/", 1)[-1]
    whole = re.search(rf"(?:^|[\s=:]){re.escape(marker)}(?:$|[\s/])", cmd)
    return whole is not None and first in _SERVICE_PROGRAMS


def stray_pids(marker: str) -> list[int]:
    """Processes of ours by command line (``marker``), even if the pid file was lost."""
    me = {os.getpid(), os.getppid()}
    found = []
    for pid in _all_pids():
        cmd = cmdline(pid)
        if pid not in me and cmd and is_service_cmdline(cmd, marker):
            found.append(pid)
    return found


# --------------------------------------------------------------------------- tools


_apt_updated = False


def _run(cmd: list[str], *, log: Path | None = None, what: str) -> None:
    """Run a setup command; on failure raise a one-line StackError naming ``what``."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise StackError(f"{what} failed: {cmd[0]} not found") from exc
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)
        lines = [ln.strip() for ln in plain.splitlines() if ln.strip()]
        err = [ln.removeprefix("[ERROR]").strip() for ln in lines if ln.startswith("[ERROR]")]
        err = [ln for ln in err if ln] or lines[-1:] or ["(no output)"]
        where = f" (full output: {log})" if log else ""
        raise StackError(f"{what} failed (exit {res.returncode}): {err[0][:300]}{where}")


def apt_install(package: str, echo: Echo) -> None:
    """``apt-get install -y package`` (after one ``apt-get update``); needs root."""
    global _apt_updated
    if os.geteuid() != 0:
        raise StackError(f"{package} is not installed: run 'sudo apt-get install -y {package}'")
    if shutil.which("apt-get") is None:
        raise StackError(f"{package} is not installed and apt-get is not available")
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    if not _apt_updated:
        echo("  apt-get update")
        _run([*env_cmd, "apt-get", "update", "-q"], what="apt-get update")
        _apt_updated = True
    echo(f"  apt-get install -y {package}")
    _run([*env_cmd, "apt-get", "install", "-y", "-q", "--no-install-recommends", package],
         what=f"apt-get install {package}")


def _java_home_major(home: Path) -> int | None:
    release = home / "release"
    if release.exists():
        m = re.search(r'JAVA_VERSION="([^"]+)"', release.read_text())
        if m:
            return parse_java_major(f'version "{m[1]}"')
    java = home / "bin" / "java"
    if not java.exists():
        return None
    res = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    return parse_java_major(res.stderr + res.stdout)


def find_java_home() -> Path:
    """A Java home of a supported major version (17 preferred), or StackError."""
    candidates: list[Path] = []
    java = shutil.which("java")
    if java:
        candidates.append(Path(java).resolve().parent.parent)
    jvm = JVM_DIR
    if jvm.is_dir():
        candidates += sorted(p for p in jvm.iterdir() if p.is_dir() and not p.is_symlink())
    by_major: dict[int, Path] = {}
    for home in candidates:
        major = _java_home_major(home)
        if major in JAVA_MAJORS and (home / "bin" / "java").exists():
            by_major.setdefault(major, home)
    for major in JAVA_MAJORS:
        if major in by_major:
            return by_major[major]
    raise StackError("Java 17 not found: install it (apt-get install -y openjdk-17-jdk-headless)")


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven not found: install it (apt-get install -y maven)")
    return mvn


def find_redis_server(echo: Echo) -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        echo("redis: redis-server not found, installing Debian's package")
        apt_install("redis-server", echo)
        path = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(path).exists():
            raise StackError("redis-server not found after apt-get install redis-server")
    return path


def install_kafka(layout: Layout, echo: Echo) -> Path:
    """Kafka's jars in the cache (Maven ``dependency:copy-dependencies``), once."""
    libs = layout.kafka_libs
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = find_maven()
    project = libs.parent
    project.mkdir(parents=True, exist_ok=True)
    (project / "pom.xml").write_text(kafka_pom(layout.kafka_version))
    echo(f"kafka: fetching org.apache.kafka:kafka_2.13:{layout.kafka_version} and its"
         f" dependencies with Maven into {libs}")
    if libs.exists():
        shutil.rmtree(libs)
    _run([mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(project / "pom.xml"),
          "dependency:copy-dependencies", f"-DoutputDirectory={libs}"],
         log=project / "mvn.log", what=f"download of Kafka {layout.kafka_version} jars")
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(f"download of Kafka jars failed: no kafka_2.13 jar in {libs}")
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return libs


def install_elasticsearch_zip(layout: Layout, echo: Echo) -> Path:
    """The integ-test-zip distribution in the cache (Maven ``dependency:copy``), once."""
    dest = layout.elasticsearch_zip
    if dest.exists():
        return dest
    mvn = find_maven()
    v = layout.elasticsearch_version
    project = layout.cache / f"elasticsearch-{v}-fetch"
    project.mkdir(parents=True, exist_ok=True)
    (project / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>precog.local</groupId><artifactId>es-fetch</artifactId><version>{v}</version>"
        "<packaging>pom</packaging></project>\n"
    )
    artifact = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{v}:zip"
    echo(f"elasticsearch: fetching {artifact} with Maven into {layout.cache}")
    _run([mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(project / "pom.xml"), "dependency:copy",
          f"-Dartifact={artifact}", f"-DoutputDirectory={layout.cache}"],
         log=project / "mvn.log", what=f"download of Elasticsearch {v}")
    if not dest.exists():
        raise StackError(f"download of Elasticsearch {v} failed: {dest} not written")
    return dest


def extract_zip(archive: Path, target: Path) -> None:
    """Unzip keeping the Unix permission bits (the launch scripts must stay executable)."""
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, tmp))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode)
    tmp.rename(target)


def es_run_user(echo: Echo) -> str | None:
    """The user Elasticsearch runs as: ``precog-es`` when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ES_USER)
    except KeyError:
        echo(f"elasticsearch: creating system user {ES_USER} (Elasticsearch refuses root)")
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
              ES_USER], what=f"useradd {ES_USER}")
    return ES_USER


def _chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def _check_traversable(path: Path, user: str) -> None:
    """Every parent of ``path`` must let ``user`` in; otherwise say which one does not."""
    res = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(path)],
                         capture_output=True, check=False)
    if res.returncode != 0:
        raise StackError(f"user {user} cannot enter {path}: make its parent directories"
                         " world-executable or set PRECOG_STACK_HOME elsewhere")


# --------------------------------------------------------------------------- secure mode


@dataclass(frozen=True, repr=False)
class Credentials:
    """The secure stack's passwords, generated once into ``credentials.json`` (mode 0600)."""

    kafka_broker_password: str
    kafka_password: str
    redis_password: str
    elasticsearch_password: str

    def __repr__(self) -> str:  # never a password in a traceback or a log line
        return "Credentials(<redacted>)"

    def secrets(self) -> list[str]:
        """Every password, e.g. to check that none of them shows anywhere."""
        return [self.kafka_broker_password, self.kafka_password, self.redis_password,
                self.elasticsearch_password]


def load_credentials(layout: Layout) -> Credentials | None:
    """The secure stack's credentials, or None before the first ``up --secure``."""
    try:
        data = json.loads(layout.credentials_file.read_text())
        return Credentials(**{k: str(data[k]) for k in Credentials.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_credentials(layout: Layout) -> Credentials:
    """The credentials of this stack home, generated (``secrets``) and written 0600 once."""
    creds = load_credentials(layout)
    if creds is not None:
        layout.credentials_file.chmod(0o600)
        return creds
    creds = Credentials(*(secrets.token_urlsafe(24) for _ in Credentials.__dataclass_fields__))
    layout.home.mkdir(parents=True, exist_ok=True)
    tmp = layout.credentials_file.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds.__dict__, fh, indent=1)
    tmp.rename(layout.credentials_file)
    return creds


def find_openssl(echo: Echo) -> str:
    path = shutil.which("openssl")
    if path is None:
        echo("tls: openssl not found, installing Debian's package")
        apt_install("openssl", echo)
        path = shutil.which("openssl")
        if path is None:
            raise StackError("openssl not found after apt-get install openssl")
    return path


#: X.509 v3 extensions of the server certificate: valid for the loopback address and name
#: the stack listens on, for TLS servers and (Kafka's controller listener) clients.
SERVER_CERT_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
)


def ensure_tls(layout: Layout, echo: Echo) -> Path:
    """A local CA and a server certificate signed by it (PEM, RSA 2048), generated once.

    ``tls/ca.pem`` is what clients trust (``PRECOG_*_CA*``); ``server.key`` and
    ``server.pem`` serve Kafka, Redis and Elasticsearch; ``server-keystore.pem`` is both
    for Kafka's PEM keystore. Private keys are mode 0600.
    """
    tls = layout.tls_dir
    if (tls / "server-keystore.pem").exists():
        return tls
    openssl = find_openssl(echo)
    echo(f"tls: generating a local CA and a server certificate in {tls}")
    work = tls.with_name("tls.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)  # readable: clients of other users need ca.pem; keys are 0600
    (work / "server.ext").write_text(SERVER_CERT_EXTENSIONS)
    log = work / "openssl.log"
    _run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
          "-subj", "/CN=precog local stack CA", "-keyout", str(work / "ca.key"),
          "-out", str(work / "ca.pem"), "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], log=log, what="openssl CA")
    _run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
          "-keyout", str(work / "server.key"), "-out", str(work / "server.csr")],
         log=log, what="openssl server key")
    _run([openssl, "x509", "-req", "-sha256", "-days", "825", "-in", str(work / "server.csr"),
          "-CA", str(work / "ca.pem"), "-CAkey", str(work / "ca.key"), "-CAcreateserial",
          "-extfile", str(work / "server.ext"), "-out", str(work / "server.pem")],
         log=log, what="openssl server certificate")
    (work / "server-keystore.pem").write_text(
        (work / "server.key").read_text() + (work / "server.pem").read_text())
    for key in ("ca.key", "server.key", "server-keystore.pem"):
        (work / key).chmod(0o600)
    work.rename(tls)
    return tls


def secure_client_fields(layout: Layout, creds: Credentials) -> dict[str, dict[str, Any]]:
    """The client settings (section -> field -> value) that log in to the secure stack."""
    ca = layout.tls_dir / "ca.pem"
    return {
        "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                  "sasl_username": CLIENT_USER, "sasl_password": SecretStr(creds.kafka_password),
                  "ssl_cafile": ca},
        "redis": {"username": CLIENT_USER, "password": SecretStr(creds.redis_password),
                  "ssl_ca_certs": ca},
        "elasticsearch": {"username": CLIENT_USER,
                          "password": SecretStr(creds.elasticsearch_password), "ca_certs": ca},
    }


def secure_env(settings: Settings) -> dict[str, str]:
    """The ``PRECOG_*`` variables that point every precog client at this secure stack.

    What ``precog stack env --secure`` prints (the only place the passwords are printed).
    """
    layout = Layout.from_settings(settings)
    creds = load_credentials(layout)
    if creds is None:
        raise StackError(f"no credentials in {layout.credentials_file}: run"
                         " 'precog stack up --secure' first")
    st = settings.stack
    env = {"PRECOG_STACK_SECURE": "true", "PRECOG_STACK_HOME": str(layout.home),
           **{f"PRECOG_STACK_{name.upper()}": str(getattr(st, name)) for name in (
               "kafka_port", "kafka_controller_port", "redis_port", "elasticsearch_port",
               "elasticsearch_transport_port")}}
    for section, fields in secure_client_fields(layout, creds).items():
        for name, value in fields.items():
            plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"PRECOG_{section.upper()}_{name.upper()}"] = plain
    return env


def export_lines(env: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines for a shell (``eval "$(precog stack env --secure)"``).

    >>> export_lines({"PRECOG_X": "a b"})
    ["export PRECOG_X='a b'"]
    """
    return [f"export {k}={shlex.quote(v)}" for k, v in env.items()]


def with_stack_credentials(settings: Settings) -> Settings:
    """Secure stack: the settings with its credentials where the client gives none.

    What the stack's own health checks log in with. An external service (``PRECOG_*_URL``)
    and any field set explicitly keep their value. A plain stack is returned unchanged.
    """
    if not settings.stack.secure:
        return settings
    layout = Layout.from_settings(settings)
    creds = load_credentials(layout)
    if creds is None:
        return settings
    given = settings.stack_overridden()
    update: dict[str, Any] = {}
    for section, fields in secure_client_fields(layout, creds).items():
        client = getattr(settings, section)
        if given[section]:
            continue
        missing = {k: v for k, v in fields.items() if k not in client.model_fields_set}
        update[section] = client.model_copy(update=missing)
    return settings.model_copy(update=update)


def _elasticsearch_secure_config(layout: Layout, java_home: Path, creds: Credentials) -> None:
    """Certificates into ES's config dir (its security manager reads only there), the role,
    and the file-realm user ``precog`` (password on stdin, never on a command line)."""
    conf = layout.dir("elasticsearch") / "config"
    (conf / "tls").mkdir(exist_ok=True)
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copyfile(layout.tls_dir / name, conf / "tls" / name)
    (conf / "tls" / "server.key").chmod(0o600)
    (conf / "roles.yml").write_text(
        f"{ES_ROLE}:\n"
        "  cluster: [monitor, manage_index_templates, manage_own_api_key]\n"
        "  indices:\n    - names: ['*']\n      privileges: [all]\n"
    )
    users = conf / "users"
    if users.exists() and any(ln.startswith(f"{CLIENT_USER}:")
                              for ln in users.read_text().splitlines()):
        return
    tool = layout.elasticsearch_dist / "bin" / "elasticsearch-users"
    pw = creds.elasticsearch_password
    res = subprocess.run(
        [str(tool), "useradd", CLIENT_USER, "-r", ES_ROLE], input=f"{pw}\n{pw}\n",
        capture_output=True, text=True, check=False,
        env={**os.environ, "ES_JAVA_HOME": str(java_home), "ES_PATH_CONF": str(conf)},
    )
    if res.returncode != 0:
        out = (res.stdout + res.stderr).replace(pw, "***").strip().splitlines() or ["?"]
        raise StackError(f"elasticsearch-users useradd failed (exit {res.returncode}):"
                         f" {out[-1][:200]}")


# --------------------------------------------------------------------------- health
# the checks themselves are precog.io.health's (shared with the worker's preflight)


def local_ports(settings: Settings, service: str) -> tuple[int, ...]:
    """The ports the stack runs ``service`` on (``PRECOG_STACK_*_PORT``), main one first."""
    return settings.stack.ports(service)


def parse_services(text: str | None) -> tuple[str, ...]:
    """The services named in a comma-separated list (all when empty), in start order.

    >>> parse_services("redis,kafka")
    ('kafka', 'redis')
    >>> parse_services(None)
    ('kafka', 'elasticsearch', 'redis')
    >>> parse_services("kafka,zookeeper")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: unknown service 'zookeeper': one of kafka, elasticsearch, redis
    """
    names = {n.strip() for n in (text or "").split(",") if n.strip()}
    for name in sorted(names - set(SERVICES)):
        raise ConfigError(f"unknown service {name!r}: one of {', '.join(SERVICES)}")
    return tuple(s for s in SERVICES if s in names) or SERVICES


# --------------------------------------------------------------------------- service commands


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
    if secure:  # paths relative to ES_PATH_CONF, see _elasticsearch_secure_config
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


# --------------------------------------------------------------------------- status


@dataclass
class ServiceStatus:
    """One service as ``status`` reports it."""

    name: str
    address: str
    #: "local" (ours), "external" (PRECOG_* given), "shared" (answering, not started here),
    #: "stopped"
    mode: str
    pid: int | None
    health: str | None  # None = healthy, else the reason
    logs: list[Path]
    rss_kib: int | None = None

    @property
    def healthy(self) -> bool:
        return self.health is None

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "-"
        rss = f"  rss {self.rss_kib // 1024} MiB" if self.rss_kib else ""
        state = "healthy" if self.healthy else f"DOWN ({self.health})"
        return f"{self.name:<14} {self.mode:<9} {pid:<11} {self.address:<26} {state}{rss}"


def group_rss_kib(pgid: int) -> int:
    return sum(rss_kib(p) or 0 for p in group_members(pgid))


def service_status(settings: Settings, service: str, layout: Layout | None = None,
                   timeout: float = 5.0) -> ServiceStatus:
    layout = layout or Layout.from_settings(settings)
    pid = owned_pid(layout.pid_file(service))
    external = settings.stack_overridden()[service]
    mode = "external" if external else "local" if pid else "stopped"
    reason = healthy(settings, service, timeout)
    if mode == "stopped" and reason is None:
        mode = "shared"
        holders = port_holders(local_ports(settings, service)[0])
        pid = holders[0] if holders else None
    rss = group_rss_kib(pid) if pid and mode == "local" else (rss_kib(pid) if pid else None)
    return ServiceStatus(service, address(settings, service), mode, pid, reason,
                         layout.log_files(service), rss)


def status(settings: Settings | None = None,
           only: tuple[str, ...] = SERVICES) -> list[ServiceStatus]:
    """Every service (or those in ``only``): mode, pid, address, health, logs."""
    settings = with_stack_credentials(settings or Settings())
    layout = Layout.from_settings(settings)
    return [service_status(settings, s, layout) for s in only]


# --------------------------------------------------------------------------- up / down


@contextlib.contextmanager
def _locked(layout: Layout, echo: Echo) -> Iterator[None]:
    """One stack command at a time per stack home (several engineers share a checkout)."""
    layout.home.mkdir(parents=True, exist_ok=True)
    with (layout.home / "stack.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo("waiting for another 'precog stack' command to finish ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ensure_ports_free(service: str, ports: tuple[int, ...]) -> None:
    for port in ports:
        holders = port_holders(port)
        if holders or port_in_use(port):
            who = describe_pid(holders[0]) if holders else "unknown process"
            raise StackError(f"port {port} ({service}) is in use by another process ({who})")


def _write_private(path: Path, text: str) -> None:
    """Write a file that holds a secret: mode 0600 from the moment it exists."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(text)


def _prepare_kafka(settings: Settings, layout: Layout, java_home: Path, echo: Echo,
                   creds: Credentials | None = None) -> None:
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
        _write_private(kdir / "server.properties", props)  # holds the broker's password
    (kdir / "log4j.properties").write_text(kafka_log4j_properties())
    if not (data / "meta.properties").exists():
        echo(f"kafka: formatting KRaft storage in {data}")
        # the SCRAM users go into the bootstrap metadata (KIP-900): the broker's own and
        # the client's; the command line holds them only while the format tool runs
        scram = [] if creds is None else [
            a for user, pw in ((KAFKA_BROKER_USER, creds.kafka_broker_password),
                               (CLIENT_USER, creds.kafka_password))
            for a in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]")]
        _run([str(java_home / "bin" / "java"), "-cp", f"{layout.kafka_libs}/*",
              f"-Dlog4j.configuration=file:{kdir / 'log4j.properties'}",
              f"-Dkafka.logs.dir={layout.logs('kafka')}",
              "kafka.tools.StorageTool", "format", "-t", kafka_cluster_id(),
              "-c", str(kdir / "server.properties"), "--ignore-formatted", *scram],
             log=layout.logs("kafka") / "format.log", what="Kafka storage format")


def _prepare_elasticsearch(layout: Layout, echo: Echo, java_home: Path | None = None,
                           creds: Credentials | None = None) -> str | None:
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
        _elasticsearch_secure_config(layout, java_home, creds)
    user = es_run_user(echo)
    if user:
        _chown_tree(es, user)
        _check_traversable(es, user)
    return user


def _prepare_redis(settings: Settings, layout: Layout, echo: Echo,
                   creds: Credentials | None = None) -> list[str]:
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


def _ensure_redis_aof(settings: Settings, echo: Echo, timeout: float = 60.0) -> None:
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


def _start(service: str, settings: Settings, layout: Layout, echo: Echo,
           java: Callable[[], Path]) -> subprocess.Popen[bytes]:
    """Install what is missing and launch one service (no waiting)."""
    _ensure_ports_free(service, local_ports(settings, service))
    creds = ensure_credentials(layout) if settings.stack.secure else None
    if creds is not None:
        ensure_tls(layout, echo)
    if service == "kafka":
        java_home = java()
        _prepare_kafka(settings, layout, java_home, echo, creds)
        cmd, env, cwd = kafka_command(layout, java_home, settings.stack.kafka_heap), None, None
    elif service == "elasticsearch":
        java_home = java()
        user = _prepare_elasticsearch(layout, echo, java_home, creds)
        cmd = elasticsearch_command(layout, java_home, settings.stack.elasticsearch_heap, user,
                                    *settings.stack.ports("elasticsearch"),
                                    secure=creds is not None)
        env, cwd = None, layout.dir("elasticsearch")
    else:
        cmd, env, cwd = _prepare_redis(settings, layout, echo, creds), None, None
    proc = spawn(cmd, log=layout.stdout_log(service), pid_file=layout.pid_file(service),
                 marker=layout.marker(service), cwd=cwd, env=env)
    echo(f"{service}: started pid {proc.pid}; logs: {layout.log_files(service)[0]}")
    return proc


def _wait_healthy(service: str, settings: Settings, layout: Layout, timeout: float,
                  proc: subprocess.Popen[bytes] | None, echo: Echo) -> None:
    deadline = time.monotonic() + timeout
    reason: str | None = "not checked"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            last = tail_lines(layout.stdout_log(service), 1) or ["(no output)"]
            raise StackError(f"{service} exited during start (code {proc.returncode}):"
                             f" {last[-1][:160]}; see {layout.stdout_log(service)}")
        ports_up = service not in ("kafka", "elasticsearch") or port_in_use(
            local_ports(settings, service)[0])
        if ports_up or proc is None:
            reason = healthy(settings, service, timeout=min(10.0, max(1.0, timeout / 4)))
            if reason is None:
                return
        time.sleep(1.0)
    hint = f"; see {layout.log_files(service)[0]}" if proc is not None else ""
    raise StackError(f"{service} not healthy after {timeout:.0f}s: {reason}{hint}")


def up(settings: Settings | None = None, *, echo: Echo = _echo,
       timeouts: dict[str, float] | None = None,
       only: tuple[str, ...] = SERVICES) -> list[ServiceStatus]:
    """Start what is not running, wait until every service is healthy, report them.

    Idempotent: a healthy service from our pid file is left alone; a healthy service on the
    address that another stack started is used as it is; a port held by anything else fails.
    ``only`` limits all of it to some services (``precog stack up --only redis,kafka``).
    """
    settings = settings or Settings()
    layout = Layout.from_settings(settings)
    timeouts = {**START_TIMEOUTS, **(timeouts or {})}
    overridden = settings.stack_overridden()
    t0 = time.monotonic()
    java_home: list[Path] = []

    def java() -> Path:
        if not java_home:
            java_home.append(find_java_home())
            echo(f"java: {java_home[0]}")
        return java_home[0]

    with _locked(layout, echo):
        echo(f"stack home: {layout.home}   cache: {layout.cache}")
        if settings.stack.secure:
            ensure_credentials(layout)
            ensure_tls(layout, echo)
            settings = with_stack_credentials(settings)
            echo(f"secure: SASL_SSL/TLS and passwords on; credentials in"
                 f" {layout.credentials_file} (mode 0600)")
        started: dict[str, subprocess.Popen[bytes] | None] = {}
        for service in only:
            addr = address(settings, service)
            if overridden[service]:
                echo(f"{service}: external at {addr} (given by PRECOG_*), not starting it")
                started[service] = None
                continue
            pid = owned_pid(layout.pid_file(service))
            if pid:
                echo(f"{service}: already running (pid {pid}) at {addr}")
                started[service] = None
                continue
            layout.pid_file(service).unlink(missing_ok=True)
            main_port = local_ports(settings, service)[0]
            if port_in_use(main_port) and healthy(settings, service) is None:
                holders = port_holders(main_port)
                who = describe_pid(holders[0]) if holders else "unknown process"
                echo(f"{service}: a healthy {service} already answers at {addr} ({who});"
                     " using it (not started here, 'down' leaves it alone)")
                started[service] = None
                continue
            echo(f"{service}: starting at {addr}")
            started[service] = _start(service, settings, layout, echo, java)
        for service, proc in started.items():
            echo(f"{service}: waiting for health ...")
            t1 = time.monotonic()
            # an external or shared service is not starting up: do not wait for it as long
            limit = timeouts[service] if proc is not None else min(timeouts[service], 30.0)
            _wait_healthy(service, settings, layout, limit, proc, echo)
            if service == "redis" and proc is not None:
                _ensure_redis_aof(settings, echo)
            echo(f"{service}: healthy ({time.monotonic() - t1:.1f}s)")
    echo(f"stack up in {time.monotonic() - t0:.1f}s")
    return status(settings, only)


def ensure(settings: Settings | None = None, *, echo: Echo = _echo) -> list[ServiceStatus]:
    """Services that already answer are used as they are; anything else goes through ``up``."""
    settings = with_stack_credentials(settings or Settings())
    current = [service_status(settings, s) for s in SERVICES]
    if all(st.healthy for st in current):
        return current
    return up(settings, echo=echo)


def down(settings: Settings | None = None, *, echo: Echo = _echo,
         timeout: float = 60.0, only: tuple[str, ...] = SERVICES) -> list[str]:
    """Stop the services this stack home started (and only those); returns their names."""
    settings = settings or Settings()
    layout = Layout.from_settings(settings)
    stopped = []
    with _locked(layout, echo):
        for service in reversed(only):
            pid_file = layout.pid_file(service)
            pid = owned_pid(pid_file)
            marker = layout.marker(service)
            if pid:
                echo(f"{service}: stopping pid {pid} (TERM, KILL after {timeout:.0f}s)")
                if stop_group(pid, timeout):
                    echo(f"{service}: did not stop in time, killed")
                stopped.append(service)
            strays = stray_pids(marker)
            for stray in strays:
                echo(f"{service}: stopping leftover {describe_pid(stray)}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stray, signal.SIGTERM)
            if strays:
                _wait_gone(strays, timeout)
            if not pid and not strays:
                echo(f"{service}: not running from this stack")
            pid_file.unlink(missing_ok=True)
    return stopped


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(cmdline(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if cmdline(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def logs(settings: Settings | None = None, service: str | None = None,
         lines: int = 50) -> dict[Path, list[str]]:
    """The last ``lines`` lines of each log file of ``service`` (or of every service)."""
    settings = settings or Settings()
    layout = Layout.from_settings(settings)
    names = parse_services(service)
    return {p: tail_lines(p, lines) for n in names for p in layout.log_files(n)}


# --------------------------------------------------------------------------- one service


def _one(name: str) -> str:
    if name not in SERVICES:
        raise ConfigError(f"unknown service {name!r}: one of {', '.join(SERVICES)}")
    return name


def service_pid(settings: Settings, name: str) -> int | None:
    """The pid of ``name`` (kafka, elasticsearch, redis) started from this stack home, or None.

    It leads the service's process group: for Elasticsearch as root that is ``runuser``,
    with the JVMs in the same group. A service that is external, shared or down has none.
    """
    return owned_pid(Layout.from_settings(settings).pid_file(_one(name)))


def start_service(settings: Settings, name: str, *, echo: Echo = _echo) -> int:
    """Start ``name`` from this stack home unless it runs, wait until healthy; its pid."""
    up(settings, echo=echo, only=(_one(name),))
    pid = service_pid(settings, name)
    if pid is None:
        raise StackError(f"{name} answers at {address(settings, name)} but was not started from"
                         f" {Layout.from_settings(settings).home} (external or shared)")
    return pid


def stop_service(settings: Settings, name: str, sig: int = signal.SIGTERM, *,
                 timeout: float = 60.0, echo: Echo = _echo) -> int | None:
    """Send ``sig`` to ``name``'s process group and wait until it is gone; the pid it had.

    ``signal.SIGKILL`` is a crash (nothing flushed or saved on the way out); SIGTERM a clean
    stop, turned into SIGKILL after ``timeout`` s. None when it was not running from this
    stack home; nothing else is ever signalled.
    """
    layout = Layout.from_settings(settings)
    with _locked(layout, echo):
        pid = service_pid(settings, name)
        if pid is None:
            return None
        stop_group(pid, timeout, sig)
        layout.pid_file(name).unlink(missing_ok=True)
    return pid


def signal_service(settings: Settings, name: str, sig: int) -> int | None:
    """Send ``sig`` to ``name``'s process group without waiting (SIGSTOP/SIGCONT: a hang)."""
    pid = service_pid(settings, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
    return pid
