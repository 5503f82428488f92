"""Unit tests of the local stack's pure parts and its process handling (no services needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from precog import stack
from precog.errors import ConfigError, StackError
from precog.namespace import render_template, topics_for
from precog.settings import Settings
from precog.spec import SPEC_DIR, load_spec
from precog.stack import install, processes

pytestmark = pytest.mark.unit

_PORT_ENV = {
    "PRECOG_STACK_KAFKA_PORT": "29092",
    "PRECOG_STACK_KAFKA_CONTROLLER_PORT": "29093",
    "PRECOG_STACK_REDIS_PORT": "26379",
    "PRECOG_STACK_ELASTICSEARCH_PORT": "29200",
    "PRECOG_STACK_ELASTICSEARCH_TRANSPORT_PORT": "29300",
    "PRECOG_STACK_SCHEMA_REGISTRY_PORT": "28081",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PRECOG_* address or stack setting of the machine leaks into these tests."""
    for name in list(os.environ):
        if name.startswith(("PRECOG_STACK_", "PRECOG_KAFKA_", "PRECOG_REDIS_",
                            "PRECOG_ELASTICSEARCH_")):
            monkeypatch.delenv(name)


def _layout(tmp_path: Path) -> stack.Layout:
    return stack.Layout(tmp_path / "home", tmp_path / "cache", "3.9.1", "8.15.5")


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_layout_resolves_relative_home_against_the_repository() -> None:
    layout = stack.Layout.from_settings(Settings())
    assert layout.home == stack.PROJECT_ROOT / ".precog" / "stack"
    assert layout.kafka_libs.name == "libs" and layout.kafka_libs.parent.name == "kafka-3.9.1"
    assert layout.pid_file("redis") == layout.home / "run" / "redis.pid"


def test_kafka_pom_pins_kafka_and_the_matching_log_binding() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.fromstring(stack.kafka_pom("3.9.1"))
    deps = [(d.find("m:groupId", ns).text, d.find("m:artifactId", ns).text,  # type: ignore[union-attr]
             d.find("m:version", ns).text) for d in root.iterfind(".//m:dependency", ns)]  # type: ignore[union-attr]
    assert deps == [("org.apache.kafka", "kafka_2.13", "3.9.1"),
                    ("org.slf4j", "slf4j-reload4j", "1.7.36")]


def test_kafka_server_properties_are_single_node_kraft(tmp_path: Path) -> None:
    props = _props(stack.kafka_server_properties(tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "default.replication.factor"):
        assert props[key] == "1"


def test_kafka_log4j_writes_to_the_logs_dir() -> None:
    props = _props(stack.kafka_log4j_properties())
    assert props["log4j.appender.file.File"] == "${kafka.logs.dir}/server.log"
    assert props["log4j.rootLogger"] == "INFO, file"


def test_kafka_command_uses_heap_and_cached_jars(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    cmd = stack.kafka_command(layout, Path("/jdk"), "768m")
    assert cmd[0] == "/jdk/bin/java"
    assert "-Xmx768m" in cmd and "-Xms768m" in cmd
    assert cmd[cmd.index("-cp") + 1] == f"{layout.kafka_libs}/*"
    assert cmd[-2:] == ["kafka.Kafka", layout.marker("kafka")]


def test_elasticsearch_command_runs_unprivileged_with_pinned_ports(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    cmd = stack.elasticsearch_command(layout, Path("/jdk17"), "1g", "precog-es")
    assert cmd[:4] == ["runuser", "-u", "precog-es", "--"]
    assert "ES_JAVA_HOME=/jdk17" in cmd and "ES_JAVA_OPTS=-Xms1g -Xmx1g" in cmd
    settings = {cmd[i + 1] for i, a in enumerate(cmd) if a == "-E"}
    assert {"discovery.type=single-node", "xpack.security.enabled=false", "http.port=19200",
            "transport.port=19300", "network.host=127.0.0.1",
            "cluster.routing.allocation.disk.threshold_enabled=false"} <= settings
    assert f"path.data={layout.dir('elasticsearch') / 'data'}" in settings
    as_user = stack.elasticsearch_command(layout, Path("/jdk17"), "1g", None)
    assert as_user[0] == "env"
    assert stack.is_service_cmdline(" ".join(cmd), layout.marker("elasticsearch"))


def test_redis_conf_carries_its_path_in_the_process_title(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    conf = stack.redis_conf(layout)
    assert "port 16379\n" in conf and "bind 127.0.0.1\n" in conf
    assert "{config-file}" in conf
    assert f"dir {layout.dir('redis') / 'data'}\n" in conf


def test_redis_conf_turns_aof_on_every_second(tmp_path: Path) -> None:
    conf = stack.redis_conf(_layout(tmp_path), 26379).splitlines()
    assert "port 26379" in conf
    assert "appendonly yes" in conf and "appendfsync everysec" in conf
    assert "appendonly no" not in conf


def test_an_old_rdb_without_aof_is_migrated_not_dropped(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    data = layout.dir("redis") / "data"
    data.mkdir(parents=True)
    assert stack.redis_needs_aof_migration(data) is False  # fresh home: AOF from the start
    (data / "dump.rdb").write_bytes(b"REDIS0010")
    assert stack.redis_needs_aof_migration(data) is True
    assert stack.redis_command(layout, "/usr/bin/redis-server", aof=False)[-2:] == [
        "--appendonly", "no"]
    (data / "appendonlydir").mkdir()
    assert stack.redis_needs_aof_migration(data) is False
    assert stack.redis_command(layout, "/usr/bin/redis-server") == [
        "/usr/bin/redis-server", str(layout.dir("redis") / "redis.conf")]


def test_kafka_cluster_id_is_22_char_urlsafe() -> None:
    cid = stack.kafka_cluster_id(uuid.UUID("00112233-4455-6677-8899-aabbccddeeff"))
    assert cid == "ABEiM0RVZneImaq7zN3u_w"


@pytest.mark.parametrize(
    ("text", "major"),
    [('openjdk version "17.0.15" 2025-04-15', 17), ('openjdk version "21" 2023-09-19', 21),
     ('java version "1.8.0_392"', 8), ('openjdk version "25.0.1"', 25), ("garbage", None)],
)
def test_parse_java_major(text: str, major: int | None) -> None:
    assert stack.parse_java_major(text) == major


def _fake_jdk(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return home


def test_find_java_home_prefers_17_and_refuses_others(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.shutil, "which", lambda _name: None)
    monkeypatch.setattr(install, "JVM_DIR", tmp_path)
    _fake_jdk(tmp_path, "a-25", "25.0.1")
    with pytest.raises(StackError, match="^Java 17 not found"):
        stack.find_java_home()
    _fake_jdk(tmp_path, "b-21", "21.0.2")
    assert stack.find_java_home() == tmp_path / "b-21"
    _fake_jdk(tmp_path, "c-17", "17.0.15")
    assert stack.find_java_home() == tmp_path / "c-17"


def test_missing_maven_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.shutil, "which", lambda _name: None)
    with pytest.raises(StackError) as err:
        stack.find_maven()
    assert str(err.value) == "Maven not found: install it (apt-get install -y maven)"


def test_port_holders_are_the_listeners_on_the_port_only() -> None:
    with socket.socket() as bound, socket.socket() as listener, \
            socket.socket(socket.AF_INET6) as listener6:
        bound.bind(("127.0.0.1", 0))  # bound, never listening: holds no port for a service
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener6.bind(("::1", 0))
        listener6.listen()
        port, port6 = listener.getsockname()[1], listener6.getsockname()[1]
        assert stack.port_holders(port) == [os.getpid()]
        assert stack.port_holders(port6) == [os.getpid()]
        assert stack.port_holders(bound.getsockname()[1]) == []


def test_port_in_use_names_the_holder() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError) as err:
            processes.ensure_ports_free("kafka", (port,))
    assert str(err.value).startswith(
        f"port {port} (kafka) is in use by another process (pid {os.getpid()}:")
    assert "\n" not in str(err.value)


def test_redact_hides_credentials() -> None:
    from precog.errors import redacted

    assert redacted("rediss://u:p@h:6380/1") == "rediss://h:6380/1"
    assert redacted("http://127.0.0.1:19200") == "http://127.0.0.1:19200"


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert stack.tail_lines(log, 3) == ["line 4997", "line 4998", "line 4999"]
    assert stack.tail_lines(tmp_path / "missing.log", 3) == []
    assert stack.tail_lines(log, 0) == []


def test_extract_zip_keeps_the_executable_bit(tmp_path: Path) -> None:
    archive = tmp_path / "dist.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("es/bin/elasticsearch")
        info.external_attr = (0o755 << 16)
        zf.writestr(info, "#!/bin/sh\n")
        zf.writestr("es/config/x.yml", "a: 1\n")
    stack.extract_zip(archive, tmp_path / "out")
    assert os.access(tmp_path / "out" / "es" / "bin" / "elasticsearch", os.X_OK)
    assert (tmp_path / "out" / "es" / "config" / "x.yml").read_text() == "a: 1\n"


def test_topics_for_names_partitions_and_compaction() -> None:
    spec = load_spec(SPEC_DIR / "transactions.yaml")
    topics = topics_for(Settings(namespace="unit", kafka={"partitions": 6}), spec)
    keep = {"retention.ms": "-1"}  # history is kept for replay
    assert {k: (t.name, t.partitions, t.config) for k, t in topics.items()} == {
        "events.transactions": ("unit.events.transactions", 6, keep),
        "predictions": ("unit.predictions", 6, keep),
        "dlq": ("unit.dlq", 6, keep),
        "outcomes": ("unit.outcomes", 6, keep),
        "outcomes-rekeyed": ("unit.outcomes-rekeyed", 6, keep),
        "labeled": ("unit.labeled", 6, keep),
        "metrics": ("unit.metrics", 6, keep),
        "alerts": ("unit.alerts", 6, keep),
        "manifests": ("unit.manifests", 6, keep),
        "decisions": ("unit.decisions", 6, keep),
        "model-control": ("unit.model-control", 1, {"cleanup.policy": "compact"}),
    }


def test_render_template_replaces_the_placeholder_everywhere() -> None:
    body = {"index_patterns": ["{ns}-a", "{ns}-b-*"], "template": {"aliases": {"{ns}-all": {}}},
            "priority": 7}
    assert render_template(body, "p1") == {
        "index_patterns": ["p1-a", "p1-b-*"], "template": {"aliases": {"p1-all": {}}},
        "priority": 7}


# --------------------------------------------------------------------------- processes


def _sleeper(marker: Path) -> list[str]:
    """A process group (bash + a sleep child) whose command line carries ``marker``."""
    return ["bash", "-c", "sleep 300; true", str(marker)]


@pytest.fixture
def bash_is_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "_SERVICE_PROGRAMS", ("bash",))


def _wait_started(pid: int) -> None:
    for _ in range(50):
        if len(stack.group_members(pid)) >= 2:
            return
        time.sleep(0.05)


@pytest.mark.usefixtures("bash_is_a_service")
def test_spawn_then_stop_group_leaves_nothing(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    marker = layout.marker("kafka")
    proc = stack.spawn(_sleeper(Path(marker)), log=layout.stdout_log("kafka"),
                       pid_file=layout.pid_file("kafka"), marker=marker)
    _wait_started(proc.pid)
    assert stack.owned_pid(layout.pid_file("kafka")) == proc.pid
    members = stack.group_members(proc.pid)
    assert len(members) == 2  # bash and its sleep
    assert stack.stop_group(proc.pid, timeout=5) is False
    assert stack.group_members(proc.pid) == []
    assert stack.owned_pid(layout.pid_file("kafka")) is None


@pytest.mark.usefixtures("bash_is_a_service")
def test_pid_file_of_another_program_is_not_ours(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    stack.write_pid(layout.pid_file("redis"), stack.PidRecord(os.getpid(), layout.marker("redis")))
    assert stack.owned_pid(layout.pid_file("redis")) is None
    layout.pid_file("kafka").write_text("not json")
    assert stack.owned_pid(layout.pid_file("kafka")) is None


@pytest.mark.usefixtures("bash_is_a_service")
def test_down_stops_only_what_this_stack_started(tmp_path: Path) -> None:
    settings = Settings(stack={"home": tmp_path / "home", "cache": tmp_path / "cache"})
    layout = stack.Layout.from_settings(settings)
    marker = layout.marker("redis")
    ours = stack.spawn(_sleeper(Path(marker)), log=layout.stdout_log("redis"),
                       pid_file=layout.pid_file("redis"), marker=marker)
    foreign = subprocess.Popen(_sleeper(tmp_path / "other" / "redis" / "redis.conf"),
                               start_new_session=True)
    try:
        _wait_started(ours.pid)
        assert stack.down(settings, echo=lambda _m: None, timeout=5) == ["redis"]
        ours.wait(5)
        assert stack.group_members(ours.pid) == []
        assert foreign.poll() is None  # someone else's process is untouched
        assert not layout.pid_file("redis").exists()
        assert stack.down(settings, echo=lambda _m: None, timeout=5) == []
    finally:
        os.killpg(foreign.pid, 9)
        foreign.wait(5)


# --------------------------------------------------------------------------- ports


def test_default_ports_and_addresses_are_unchanged() -> None:
    s = Settings()
    assert [s.stack.ports(n) for n in stack.SERVICES] == [(19092, 19093), (19200, 19300),
                                                          (16379,), (18081,)]
    assert (s.kafka.bootstrap, s.redis.url, s.elasticsearch.url) == (
        "127.0.0.1:19092", "redis://127.0.0.1:16379/0", "http://127.0.0.1:19200")
    assert s.stack_overridden() == {"kafka": False, "redis": False, "elasticsearch": False,
                                    "schema-registry": False}


def test_stack_port_env_names_flow_into_the_client_defaults(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _PORT_ENV.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert [stack.local_ports(s, n) for n in stack.SERVICES] == [(29092, 29093), (29200, 29300),
                                                                (26379,), (28081,)]
    assert (s.kafka.bootstrap, s.redis.url, s.elasticsearch.url) == (
        "127.0.0.1:29092", "redis://127.0.0.1:26379/0", "http://127.0.0.1:29200")
    # followed, not given: the stack still starts all three
    assert s.stack_overridden() == {"kafka": False, "redis": False, "elasticsearch": False,
                                    "schema-registry": False}
    assert [stack.address(s, n) for n in stack.SERVICES] == [
        "127.0.0.1:29092", "http://127.0.0.1:29200", "redis://127.0.0.1:26379/0",
        "http://127.0.0.1:28081/apis/ccompat/v7"]


def test_explicit_client_addresses_win_over_the_stack_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _PORT_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PRECOG_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("PRECOG_REDIS_URL", "rediss://cache:6380/1")
    s = Settings()
    assert s.kafka.bootstrap == "broker:9092"
    assert s.redis.url == "rediss://cache:6380/1"
    assert s.elasticsearch.url == "http://127.0.0.1:29200"
    assert s.stack_overridden() == {"kafka": True, "redis": True, "elasticsearch": False,
                                    "schema-registry": False}


def test_other_client_options_keep_the_address_following_the_stack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_STACK_KAFKA_PORT", "29092")
    monkeypatch.setenv("PRECOG_KAFKA_PARTITIONS", "6")
    monkeypatch.setenv("PRECOG_KAFKA_SASL_USERNAME", "svc")
    s = Settings()
    assert (s.kafka.bootstrap, s.kafka.partitions, s.kafka.sasl_username) == (
        "127.0.0.1:29092", 6, "svc")
    assert s.kafka.model_fields_set == {"partitions", "sasl_username"}
    assert s.stack_overridden()["kafka"] is False


def test_stack_ports_given_in_code_work_like_the_env() -> None:
    s = Settings(stack={"redis_port": 26379}, elasticsearch={"url": "https://es:9200"})
    assert s.redis.url == "redis://127.0.0.1:26379/0"
    assert s.elasticsearch.url == "https://es:9200"
    assert s.kafka.bootstrap == "127.0.0.1:19092"


def test_stack_ports_must_differ_and_be_ports() -> None:
    with pytest.raises(ValidationError, match="ports must all differ"):
        Settings(stack={"redis_port": 19092})
    with pytest.raises(ValidationError):
        Settings(stack={"kafka_port": 70000})


def test_rendered_configs_use_the_stack_ports(tmp_path: Path) -> None:
    props = _props(stack.kafka_server_properties(tmp_path, 29092, 29093))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    cmd = stack.elasticsearch_command(_layout(tmp_path), Path("/jdk"), "1g", None, 29200, 29300)
    assert {"http.port=29200", "transport.port=29300"} <= {
        cmd[i + 1] for i, a in enumerate(cmd) if a == "-E"}


def test_a_stack_home_never_claims_the_processes_of_a_nested_home() -> None:
    ours = stack.Layout(Path("/s/a"), Path("/c"), "3.9.1", "8.15.5")
    other = stack.Layout(Path("/x/s/a"), Path("/c"), "3.9.1", "8.15.5")
    commands = {
        "kafka": f"/jdk/bin/java -cp x kafka.Kafka {other.marker('kafka')}",
        "elasticsearch": f"env ES_PATH_CONF={other.marker('elasticsearch')}/config es",
        "redis": f"/usr/bin/redis-server 127.0.0.1:26379  {other.marker('redis')}",
    }
    for service, cmd in commands.items():
        assert ours.marker(service) in cmd  # a plain substring test would claim it
        assert stack.is_service_cmdline(cmd, other.marker(service))
        assert not stack.is_service_cmdline(cmd, ours.marker(service))


def test_parse_services_keeps_start_order_and_refuses_unknown_names() -> None:
    assert stack.parse_services("redis, kafka") == ("kafka", "redis")
    assert stack.parse_services("") == stack.SERVICES
    with pytest.raises(ConfigError, match="unknown service 'zk'"):
        stack.parse_services("kafka,zk")


# --------------------------------------------------------------------------- one service


@pytest.mark.usefixtures("bash_is_a_service")
def test_service_helpers_signal_only_this_homes_service(tmp_path: Path) -> None:
    settings = Settings(stack={"home": tmp_path / "home", "cache": tmp_path / "cache"})
    layout = stack.Layout.from_settings(settings)
    marker = layout.marker("redis")
    assert stack.service_pid(settings, "redis") is None
    ours = stack.spawn(_sleeper(Path(marker)), log=layout.stdout_log("redis"),
                       pid_file=layout.pid_file("redis"), marker=marker)
    foreign = subprocess.Popen(_sleeper(tmp_path / "other" / "redis" / "redis.conf"),
                               start_new_session=True)
    try:
        _wait_started(ours.pid)
        assert stack.service_pid(settings, "redis") == ours.pid
        assert stack.signal_service(settings, "redis", signal.SIGSTOP) == ours.pid
        assert stack.signal_service(settings, "redis", signal.SIGCONT) == ours.pid
        assert stack.stop_service(settings, "redis", signal.SIGKILL, echo=print) == ours.pid
        assert ours.wait(5) == -signal.SIGKILL
        assert stack.group_members(ours.pid) == []
        assert stack.service_pid(settings, "redis") is None
        assert not layout.pid_file("redis").exists()
        assert stack.stop_service(settings, "redis", echo=print) is None
        assert foreign.poll() is None
    finally:
        os.killpg(foreign.pid, 9)
        foreign.wait(5)


def test_service_helpers_refuse_unknown_services(tmp_path: Path) -> None:
    settings = Settings(stack={"home": tmp_path / "home"})
    with pytest.raises(ConfigError, match="unknown service 'zookeeper'"):
        stack.service_pid(settings, "zookeeper")


# --------------------------------------------------------------------------- secure mode


def _secure(tmp_path: Path, **kw: object) -> Settings:
    return Settings(stack={"secure": True, "home": tmp_path / "home", **kw})


def test_the_plain_stack_is_what_it_was(tmp_path: Path) -> None:
    s = Settings()
    assert not s.stack.secure and s.stack.home == Path(".precog/stack")
    assert (s.kafka.bootstrap, s.redis.url, s.elasticsearch.url) == (
        "127.0.0.1:19092", "redis://127.0.0.1:16379/0", "http://127.0.0.1:19200")
    assert s.kafka.security_protocol == "PLAINTEXT"
    props = stack.kafka_server_properties(tmp_path / "data")
    assert "SASL" not in props and "ssl." not in props
    conf = stack.redis_conf(_layout(tmp_path))
    assert "tls" not in conf and "user " not in conf
    assert stack.with_stack_credentials(s) is s


def test_secure_settings_default_to_their_own_home_and_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOG_STACK_SECURE", "true")
    s = Settings()
    assert s.stack.secure and s.stack.home == Path(".precog/stack-secure")
    assert s.stack.ports("kafka") == (19192, 19193)
    assert (s.kafka.bootstrap, s.redis.url, s.elasticsearch.url) == (
        "127.0.0.1:19192", "rediss://127.0.0.1:16479/0", "https://127.0.0.1:19201")
    assert s.stack_overridden() == {"kafka": False, "redis": False, "elasticsearch": False,
                                    "schema-registry": False}
    monkeypatch.setenv("PRECOG_STACK_REDIS_PORT", "26999")
    assert Settings().redis.url == "rediss://127.0.0.1:26999/0"  # a given port still wins


def test_kafka_secure_properties_replace_the_plaintext_listener(tmp_path: Path) -> None:
    secure = stack.kafka_secure_properties(tmp_path / "tls", "pw", 29092, 29093)
    props = _props(stack.kafka_server_properties(tmp_path / "d", 29092, 29093,
                                                 overrides=secure))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:29092"
    assert "PLAINTEXT://" not in props["listeners"]
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["ssl.keystore.location"] == str(tmp_path / "tls" / "server-keystore.pem")
    assert 'username="precog-broker" password="pw";' in \
        props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]


def test_secure_redis_speaks_tls_only_with_a_hashed_acl_password(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    conf = stack.redis_conf(layout, 26479, password="s3cret").splitlines()
    assert "port 0" in conf and "tls-port 26479" in conf and "port 26479" not in conf
    assert f"tls-ca-cert-file {layout.tls_dir / 'ca.pem'}" in conf
    assert "user default off" in conf
    assert not any("s3cret" in line for line in conf)
    assert "appendonly yes" in conf


def test_secure_elasticsearch_turns_security_and_tls_on(tmp_path: Path) -> None:
    cmd = stack.elasticsearch_command(_layout(tmp_path), Path("/jdk17"), "1g", None,
                                      secure=True)
    settings = {cmd[i + 1] for i, a in enumerate(cmd) if a == "-E"}
    assert {"xpack.security.enabled=true", "xpack.security.http.ssl.enabled=true",
            "xpack.security.transport.ssl.enabled=true",
            "xpack.security.http.ssl.certificate_authorities=tls/ca.pem"} <= settings
    assert "xpack.security.enabled=false" not in settings


def test_credentials_are_generated_once_private_and_never_in_a_repr(tmp_path: Path) -> None:
    layout = stack.Layout.from_settings(_secure(tmp_path))
    assert stack.load_credentials(layout) is None
    creds = stack.ensure_credentials(layout)
    assert layout.credentials_file.stat().st_mode & 0o777 == 0o600
    assert stack.ensure_credentials(layout) == creds  # once: the same on every up
    assert len(set(creds.secrets())) == 4 and all(len(pw) >= 32 for pw in creds.secrets())
    assert not any(pw in repr(creds) for pw in creds.secrets())


def test_secure_env_and_stack_checks_carry_the_credentials(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _secure(tmp_path, kafka_port=29192)
    with pytest.raises(StackError, match="precog stack up --secure"):
        stack.secure_env(settings)
    creds = stack.ensure_credentials(stack.Layout.from_settings(settings))
    env = stack.secure_env(settings)
    assert env["PRECOG_STACK_SECURE"] == "true" and env["PRECOG_STACK_KAFKA_PORT"] == "29192"
    assert env["PRECOG_KAFKA_SASL_PASSWORD"] == creds.kafka_password
    assert env["PRECOG_REDIS_SSL_CA_CERTS"] == str(tmp_path / "home" / "tls" / "ca.pem")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = Settings()  # what a precog process with the exports builds
    assert client.kafka.confluent_config()["sasl.password"] == creds.kafka_password
    assert client.kafka.bootstrap == "127.0.0.1:29192"
    assert client.redis.url.startswith("rediss://")
    checks = stack.with_stack_credentials(settings)
    assert checks.kafka.confluent_config() == client.kafka.confluent_config()
    assert checks.elasticsearch.client_kwargs() == client.elasticsearch.client_kwargs()
    assert checks.stack_overridden() == settings.stack_overridden()
    wrong = Settings(stack={"secure": True, "home": tmp_path / "home"},
                     redis={"password": "given"})
    assert stack.with_stack_credentials(wrong).redis.password.get_secret_value() == "given"
