"""Integration test of the live simulator: what it says it sent is what Kafka holds."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from precog.avro import Codec
from precog.errors import DecodeError, ServiceUnavailable
from precog.settings import Settings
from precog.simulate import SimConfig, produce_live
from precog.spec import SPEC_DIR, load_spec
from precog.validation import check_event

pytestmark = pytest.mark.integration

SPEC = load_spec(SPEC_DIR / "transactions.yaml")


def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Every message of ``topic`` (all partitions, from the beginning)."""
    consumer = Consumer({**settings.kafka.confluent_config(),
                         "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": "false"})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            if len(out) >= expected:
                break
            continue
        assert msg.error() is None, msg.error()
        out.append(msg)
    consumer.close()
    return out


def test_live_produce_counts_match_what_kafka_holds(settings: Settings) -> None:
    cfg = SimConfig(seed=5, garbage_fraction=0.05, entities=100,
                    volume_drop_at=200, volume_drop_len=100, volume_drop=0.3)
    summary = produce_live(settings, SPEC, 500, rate=1000.0, config=cfg, progress=False,
                           outcome_delay_scale=1e-7)
    garbage = sum(summary.garbage.values())
    assert summary.sent == summary.valid + garbage == 500 - summary.dropped
    assert 10 <= garbage <= 45 and 15 <= summary.dropped <= 50
    assert summary.delivery_errors == [] and summary.outcomes_pending == 0

    events = consume_all(settings, settings.topic("events.transactions"), summary.sent)
    assert len(events) == summary.sent
    codec = Codec.for_schema("transaction")
    valid = invalid = 0
    now = int(time.time() * 1000)
    for msg in events:
        try:
            record = codec.decode(msg.value())
        except DecodeError:
            invalid += 1
            continue
        assert msg.key().decode() == record["card_id"]
        if check_event(SPEC, record, now):
            invalid += 1
        else:
            valid += 1
            assert abs(record["event_time"] - now) < 120_000  # event time is about now
    assert (valid, invalid) == (summary.valid, garbage)

    outcomes = consume_all(settings, settings.topic("outcomes"), summary.outcomes_sent)
    assert len(outcomes) == summary.outcomes_sent == summary.valid
    out_codec = Codec.for_schema("outcome")
    decoded = [out_codec.decode(m.value()) for m in outcomes]
    assert all(m.key().decode() == o["event_id"] for m, o in zip(outcomes, decoded, strict=True))
    assert {o["label"] for o in decoded} <= {0, 1}

    manifests = consume_all(settings, settings.topic("manifests"), summary.manifests_sent)
    assert len(manifests) == summary.manifests_sent >= 1
    man_codec = Codec.for_schema("manifest")
    totals = [man_codec.decode(m.value()) for m in manifests]
    assert sum(t["record_count"] for t in totals) == 500 == summary.manifest_records
    assert sum(t["valid_count"] for t in totals) == summary.valid + summary.dropped
    assert {t["source"] for t in totals} == {"transactions"}


def test_unreachable_kafka_is_reported() -> None:
    settings = Settings(namespace="tunreach", kafka={"bootstrap": "127.0.0.1:1"})
    with pytest.raises(ServiceUnavailable, match="kafka is not reachable at 127.0.0.1:1"):
        produce_live(settings, SPEC, 5, rate=100.0, progress=False)
