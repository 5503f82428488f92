"""Smoke tests against the real stack: Kafka Avro round trip, Redis pipeline, ES template + bulk."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource
from elasticsearch import BadRequestError, helpers

from precog.avro import Codec
from precog.namespace import (
    TEMPLATE_DIR,
    apply_index_templates,
    ensure_topics,
    topics_for,
)
from precog.settings import Settings
from precog.spec import load_spec

pytestmark = pytest.mark.integration


def _transactions(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "event_id": f"e{i}",
            "card_id": f"card-{rng.randint(1, 5)}",
            "customer_id": f"cust-{i % 3}",
            "merchant_id": f"m{rng.randint(1, 50)}",
            "category": rng.choice(["grocery", "fuel", "travel"]),
            "amount": round(rng.uniform(1, 500), 2),
            "currency": "EUR",
            "country": rng.choice(["DE", "FR"]),
            "channel": rng.choice(["pos", "online", "atm"]),
            "event_time": 1_700_000_000_000 + i * 1000,
        }
        for i in range(n)
    ]


def test_avro_produce_consume_through_kafka(settings: Settings) -> None:
    codec = Codec.for_schema("transaction")
    topic = settings.topic(load_spec(settings.spec).event.topic)
    records = _transactions(40)
    cfg = settings.kafka.confluent_config()
    producer = Producer(settings.kafka.producer_config())
    for rec in records:
        producer.produce(topic, key=rec["card_id"].encode(), value=codec.encode(rec))
    assert producer.flush(15) == 0

    consumer = Consumer({**cfg, "group.id": settings.group("smoke"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < len(records) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            got.append((msg.key(), codec.decode(msg.value())))
    finally:
        consumer.close()
    assert sorted((r for _, r in got), key=lambda r: r["event_id"]) == sorted(
        records, key=lambda r: r["event_id"]
    )
    # keyed by entity: every record of one card lands on one partition, in order
    assert all(key == rec["card_id"].encode() for key, rec in got)


def test_namespace_topics_are_created_once(settings: Settings, kafka_admin: Any) -> None:
    spec = load_spec(settings.spec)
    assert ensure_topics(settings, spec) == []  # the fixture made them already
    wanted = topics_for(settings, spec)
    meta = kafka_admin.list_topics(timeout=10).topics
    for t in wanted.values():
        assert len(meta[t.name].partitions) == t.partitions
    assert len(meta[settings.topic("predictions")].partitions) == settings.kafka.partitions
    res = ConfigResource(ConfigResource.Type.TOPIC, settings.topic("model-control"))
    configs = kafka_admin.describe_configs([res])[res].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


def test_redis_pipeline_round_trip(settings: Settings, redis_client: Any) -> None:
    keys = [settings.redis_key("smoke", f"card-{i}") for i in range(50)]
    pipe = redis_client.pipeline(transaction=False)
    for i, key in enumerate(keys):
        pipe.hset(key, mapping={"count": i, "sum": i * 1.5})
        pipe.expire(key, 600)
    pipe.execute()
    pipe = redis_client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    rows = pipe.execute()
    assert rows == [{b"count": str(i).encode(), b"sum": str(i * 1.5).encode()}
                    for i in range(50)]
    assert 0 < redis_client.ttl(keys[0]) <= 600


def _smoke_template(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    body = {
        "index_patterns": ["{ns}-smoke*"],
        "priority": 300,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"dynamic": "strict", "properties": {
                "event_id": {"type": "keyword"},
                "amount": {"type": "double"},
                "event_time": {"type": "date", "format": "epoch_millis"},
            }},
        },
    }
    (folder / "smoke.json").write_text(json.dumps(body))
    return folder


def test_elasticsearch_template_bulk_search(settings: Settings, es_client: Any,
                                            tmp_path: Path) -> None:
    applied = apply_index_templates(settings, _smoke_template(tmp_path))
    assert applied == [f"{settings.namespace}-smoke"]
    index = settings.index("smoke")
    docs = [{"_index": index, "_id": f"e{i}", "event_id": f"e{i}", "amount": float(i),
             "event_time": 1_700_000_000_000 + i} for i in range(200)]
    ok, errors = helpers.bulk(es_client, docs, refresh="wait_for")
    assert (ok, errors) == (200, [])
    # redelivery with the same _id overwrites instead of duplicating
    helpers.bulk(es_client, docs[:10], refresh="wait_for")
    assert es_client.count(index=index)["count"] == 200
    hits = es_client.search(index=index, query={"range": {"amount": {"gte": 190}}},
                            sort=[{"amount": "asc"}], size=20)["hits"]["hits"]
    assert [h["_id"] for h in hits] == [f"e{i}" for i in range(190, 200)]
    mapping = es_client.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["dynamic"] == "strict"
    with pytest.raises(BadRequestError):  # strict: an unknown field is refused
        es_client.index(index=index, id="bad", document={"event_id": "x", "nope": 1})


def test_repository_templates_are_applied_per_namespace(settings: Settings,
                                                        es_client: Any) -> None:
    stems = sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))
    names = sorted(t["name"] for t in es_client.indices.get_index_template(
        name=f"{settings.namespace}-*")["index_templates"]) if stems else []
    assert names == sorted(settings.index(s) for s in stems)
    for stem in stems:
        tpl = es_client.indices.get_index_template(name=settings.index(stem))
        patterns = tpl["index_templates"][0]["index_template"]["index_patterns"]
        assert all(p.startswith(f"{settings.namespace}-") for p in patterns)


def test_no_template_files_is_fine(settings: Settings, tmp_path: Path) -> None:
    assert apply_index_templates(settings, tmp_path / "none") == []
