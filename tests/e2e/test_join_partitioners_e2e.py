"""The outcome join does not depend on who produced the outcome: two workers, outcomes from a
murmur2 producer (Java's default, and every producer of precog) and from a CRC32 producer
(librdkafka's default), every outcome joined exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from precog.avro import Codec
from precog.settings import Settings
from tests.e2e.helpers import decode_all, read_topic
from tests.e2e.test_outcomes_e2e import joined_expected, make_stream, produce, worker

pytestmark = pytest.mark.e2e


def _produce_partitions(settings: Settings, cfg: dict, records: list[dict]) -> dict[str, int]:
    """Produce outcomes with the producer configuration ``cfg``; event id -> partition."""
    codec = Codec.for_schema("outcome")
    producer = Producer(cfg)
    where: dict[str, int] = {}

    def delivered(err, msg) -> None:  # noqa: ANN001 - confluent-kafka's callback signature
        assert err is None, err
        where[msg.key().decode()] = msg.partition()

    for r in records:
        producer.produce(settings.topic("outcomes"), key=r["event_id"].encode(),
                         value=codec.encode(r), on_delivery=delivered)
    assert producer.flush(30) == 0
    return where


def test_two_workers_join_outcomes_from_either_partitioner_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    preds, outs = make_stream(500, seed=9)
    expected = joined_expected(preds, outs)
    half = len(outs) // 2
    with worker(settings, tmp_path, agents="join") as a, \
            worker(settings, tmp_path, agents="join") as b:
        time.sleep(8.0)  # both members in the group, partitions split between them
        produce(settings, "predictions", "prediction", preds)
        murmur = _produce_partitions(settings, settings.kafka.producer_config(), outs[:half])
        crc32 = _produce_partitions(settings, dict(settings.kafka.confluent_config()),
                                    outs[half:])
        labeled = decode_all(read_topic(settings, settings.topic("labeled"),
                                        2 * len(expected), timeout=120), "labeled")
        logs = a.log_tail() + b.log_tail()
    # precog's confluent-kafka producers partition exactly as the worker's (aiokafka) one
    assert all(p == _murmur_partition(settings, eid) for eid, p in murmur.items())
    moved = sum(1 for eid, p in crc32.items() if _murmur_partition(settings, eid) != p)
    assert moved > 0.5 * len(crc32)  # CRC32 really put most outcomes elsewhere
    pairs = [(r["event_id"], r["model_id"]) for r in labeled]
    assert len(pairs) == len(set(pairs)) == 2 * len(expected), logs
    assert {eid for eid, _ in pairs} == set(expected)
    assert all(r["outcome"] == expected[r["event_id"]]["label"] for r in labeled)


def _murmur_partition(settings: Settings, event_id: str) -> int:
    from aiokafka.partitioner import murmur2

    return (murmur2(event_id.encode()) & 0x7FFFFFFF) % settings.kafka.partitions
