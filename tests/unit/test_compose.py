"""docker-compose.yml matches the local stack: services, host ports and pinned versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from precog.settings import (
    LOCAL_ELASTICSEARCH_PORT,
    LOCAL_KAFKA_PORT,
    LOCAL_REDIS_PORT,
    StackSettings,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PINS = StackSettings()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port, from "127.0.0.1:H:C" / "H:C" entries."""
    out = {}
    for entry in service.get("ports", []):
        *_, host, container = str(entry).split(":")
        out[int(host)] = int(container)
    return out


def _tag(service: dict[str, Any]) -> str:
    return str(service["image"]).rsplit(":", 1)[1]


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "redis", "elasticsearch", "kibana", "setup",
                                        "worker", "prometheus", "grafana"}


def test_versions_match_the_local_stack_pins(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert svc["kafka"]["image"] == f"apache/kafka:{PINS.kafka_version}"
    assert svc["elasticsearch"]["image"].startswith("docker.elastic.co/elasticsearch/")
    assert _tag(svc["elasticsearch"]) == PINS.elasticsearch_version
    assert _tag(svc["kibana"]) == PINS.elasticsearch_version


def test_host_ports_are_the_local_stack_ports(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert LOCAL_KAFKA_PORT in _host_ports(svc["kafka"])
    assert _host_ports(svc["redis"]) == {LOCAL_REDIS_PORT: 6379}
    assert _host_ports(svc["elasticsearch"]) == {LOCAL_ELASTICSEARCH_PORT: 9200}
    assert _host_ports(svc["kibana"]) == {5601: 5601}
    env = svc["kafka"]["environment"]
    assert f"127.0.0.1:{LOCAL_KAFKA_PORT}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_kafka_runs_kraft_single_node(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0
    assert "ZOOKEEPER" not in " ".join(env)


def test_setup_runs_once_then_the_worker_starts(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    setup_cmd = " ".join(svc["setup"]["command"])
    assert "precog setup" in setup_cmd
    assert "precog kibana import --url http://kibana:5601" in setup_cmd
    assert svc["setup"]["restart"] == "no"
    assert set(svc["setup"]["depends_on"]) == {"kafka", "elasticsearch", "kibana"}
    assert svc["worker"]["command"] == ["precog", "worker"]
    assert svc["worker"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    for name in ("setup", "worker"):
        env = svc[name]["environment"]
        assert env["PRECOG_KAFKA_BOOTSTRAP"] == "kafka:29092"
        assert env["PRECOG_REDIS_URL"] == "redis://redis:6379/0"
        assert env["PRECOG_ELASTICSEARCH_URL"] == "http://elasticsearch:9200"


def test_every_infrastructure_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name in ("kafka", "redis", "elasticsearch", "kibana"):
        assert compose["services"][name]["healthcheck"]["test"]


def test_the_image_build_exists(compose: dict[str, Any]) -> None:
    build = compose["services"]["setup"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    assert text.startswith("# ") and "FROM python:3.11" in text
    assert 'CMD ["precog", "worker"]' in text


def test_prometheus_scrapes_the_worker_and_grafana_loads_the_dashboard(
        compose: dict[str, Any]) -> None:
    svc = compose["services"]
    prom = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    worker_port = next(iter(_host_ports(svc["worker"]).values()))
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [f"worker:{worker_port}"]}]
    assert svc["worker"]["environment"]["PRECOG_WORKER_WEB_HOST"] == "0.0.0.0"
    assert "./docker/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in \
        svc["prometheus"]["volumes"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in svc["grafana"]["volumes"]
                  if v.startswith("./"))
    provider = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/precog.yml")
                              .read_text())["providers"][0]
    assert mounts["./docker/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert (ROOT / "docker/grafana/dashboards/precog-worker.json").is_file()
    datasource = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/"
                                 "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert _host_ports(svc["prometheus"]) == {9090: 9090}
