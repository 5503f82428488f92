"""Namespace setup on the real Kafka: topic configs as the replay and the control plane need."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import ConfigResource

pytestmark = pytest.mark.integration


def _configs(kafka_admin, topic: str) -> dict[str, str]:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = kafka_admin.describe_configs([res])[res].result(timeout=10)
    return {k: v.value for k, v in entries.items()}


def test_data_topics_keep_history_and_model_control_is_compacted(settings, kafka_admin):
    # the broker's default (7 days by record timestamp) would delete old-event-time history
    events = _configs(kafka_admin, settings.topic("events.transactions"))
    assert events["retention.ms"] == "-1"
    assert _configs(kafka_admin, settings.topic("outcomes"))["retention.ms"] == "-1"
    assert _configs(kafka_admin, settings.topic("model-control"))["cleanup.policy"] == "compact"
    md = kafka_admin.list_topics(timeout=10).topics
    assert len(md[settings.topic("events.transactions")].partitions) == settings.kafka.partitions
    assert len(md[settings.topic("model-control")].partitions) == 1
