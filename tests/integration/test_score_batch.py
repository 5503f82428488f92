"""``precog score-batch`` against the real stack: a Kafka offset range, Redis state, Elasticsearch.

Each test has its own namespace (topics, Redis keys, indices dropped afterwards); the
models are trained once per module into a temporary registry.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from precog.avro import Codec
from precog.batch_scoring import BatchRequest, TopicRange, run_batch
from precog.errors import ConfigError
from precog.history import read_avro, write_records
from precog.settings import Settings
from precog.spec import PipelineSpec, load_spec
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

MODELS = {"revision": 1, "leader": {"model_id": "fraud-lgbm", "version": 1},
          "challengers": [{"model_id": "fraud-logreg", "version": 1}]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from precog.pipelines.train import labeled_frame, train_frame

    from precog.simulate import SimConfig, write_history

    root = tmp_path_factory.mktemp("score-batch-stack")
    spec = load_spec(ROOT / Settings().spec)
    registry = Settings(registry_dir=root / "registry", code_version="test")
    write_history(root / "train", 3000, seed=3, end_ms=1_790_000_000_000, progress=False,
                  config=SimConfig(positive_rate=0.08))
    train_frame(registry, spec, labeled_frame(spec, root / "train"), es=None, publish=False)
    write_history(root / "events", 600, seed=21, end_ms=1_791_000_000_000, progress=False)
    events = read_avro(root / "events" / "events.avro", Codec.for_schema(spec.event.schema_name))
    return {"root": root, "registry": root / "registry", "spec": spec, "events": events}


def _settings(settings: Settings, trained: dict[str, Any]) -> Settings:
    return settings.model_copy(update={"registry_dir": trained["registry"]})


def _request(settings: Settings, spec: PipelineSpec, out: Path, **kw: Any) -> BatchRequest:
    return BatchRequest(settings=settings, spec=spec, out=out, models=MODELS, chunk_size=100,
                        progress=False, **kw)


def _rows(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out).to_pylist()


def _scored(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """event id -> (features, leader, challengers): what parity compares."""
    return {r["event_id"]: (r["features"], r["leader"], r["challengers"]) for r in rows}


def _produce(s: Settings, spec: PipelineSpec, values: list[tuple[bytes, bytes, int]]
             ) -> list[tuple[int, int]]:
    """Produce (key, value, record time) records; their (partition, offset) in order."""
    producer = Producer({**s.kafka.producer_config(), "enable.idempotence": True})
    where: list[Any] = [None] * len(values)

    def report(i: int) -> Any:
        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())
        return done

    for i, (key, value, ms) in enumerate(values):
        producer.produce(s.topic(spec.event.topic), key=key, value=value, timestamp=ms,
                         on_delivery=report(i))
        producer.poll(0)
    assert producer.flush(30) == 0
    return where


def test_a_kafka_offset_range_scores_like_the_same_events_from_a_file(settings, trained,
                                                                      tmp_path):
    s, spec, events = _settings(settings, trained), trained["spec"], trained["events"]
    codec = Codec.for_schema(spec.event.schema_name)
    values = [(e["card_id"].encode(), codec.encode(e), e["event_time"]) for e in events]
    t = events[150]["event_time"]
    garbage = [(b"card-000001", b"\xc3\x01not a record", t), (b"card-000002", b"junk", t)]
    values[150:150] = garbage
    where = _produce(s, spec, values)
    out = tmp_path / "topic.parquet"
    summary = run_batch(_request(s, spec, out, topic=TopicRange(spec.event.topic,
                                                                start_offsets="10")))
    kept = [i for i, (_, offset) in enumerate(where) if offset >= 10]
    assert (summary.rows, summary.rejects) == (len(kept), 2)
    assert summary.predictions == len(kept) - 2
    rows = _rows(out)
    topic = s.topic(spec.event.topic)
    by_id = {r["event_id"]: r for r in rows}
    produced = [values[i][:2] for i in kept if values[i] not in garbage]
    assert len(produced) == len(rows)
    for i in kept:
        if values[i] in garbage:
            continue
        event = codec.decode(values[i][1])
        prov = by_id[event["event_id"]]["provenance"]
        assert (prov["source_topic"], prov["partition"], prov["offset"]) == (topic, *where[i])
    # the same events, in the order they were produced, from a file: the same features and
    # scores (an entity's events are in one partition, in offset order)
    file_events = [codec.decode(v) for _, v in produced]
    path = tmp_path / "same.avro"
    write_records(path, codec, file_events)
    from_file = tmp_path / "file.parquet"
    run_batch(_request(s, spec, from_file, input=path))
    assert _scored(rows) == _scored(_rows(from_file))
    rejected = [json.loads(x) for x in out.with_name(out.name + ".rejects.jsonl")
                .read_text().splitlines()]
    assert [(r["stage"], r["error_class"], r["source_topic"]) for r in rejected] == [
        ("decode", "DecodeError", topic)] * 2
    assert sorted(base64.b64decode(r["payload_base64"]) for r in rejected) == sorted(
        v for _, v, _ in garbage)
    # a time range: the records from the 400th event's record time on (offsets-for-times)
    since = events[400]["event_time"]
    late = tmp_path / "late.parquet"
    run_batch(_request(s, spec, late, topic=TopicRange(spec.event.topic, start_ms=since)))
    want = {e["event_id"] for e in events if e["event_time"] >= since}
    assert {r["event_id"] for r in _rows(late)} == want and len(want) == len(events) - 400


def test_from_redis_continues_from_the_online_state_and_never_writes_it(settings, trained,
                                                                        tmp_path,
                                                                        redis_client):
    from precog.pipelines.backfill import backfill

    s, spec, events = _settings(settings, trained), trained["spec"], trained["events"]
    codec = Codec.for_schema(spec.event.schema_name)
    history = tmp_path / "history"
    history.mkdir()
    write_records(history / "events.avro", codec, events[:300])
    write_records(history / "outcomes.avro", Codec.for_schema(spec.outcome.schema_name), [])
    assert backfill(s, spec, history) > 0
    keys = sorted(redis_client.scan_iter(match=f"{s.namespace}:*"))
    before = {k: redis_client.get(k) for k in keys}
    later = tmp_path / "later.avro"
    write_records(later, codec, events[300:])
    out = tmp_path / "redis.parquet"
    summary = run_batch(_request(s, spec, out, input=later, state="redis"))
    assert summary.predictions == 300
    whole = tmp_path / "whole.avro"
    write_records(whole, codec, events)
    full = tmp_path / "whole.parquet"
    run_batch(_request(s, spec, full, input=whole))
    tail = [r for r in _rows(full) if r["provenance"]["offset"] >= 300]
    assert _scored(_rows(out)) == _scored(tail)
    after = {k: redis_client.get(k) for k in sorted(redis_client.scan_iter(
        match=f"{s.namespace}:*"))}
    assert after == before
    cold = s.model_copy(update={"namespace": s.namespace + "x"})
    with pytest.raises(ConfigError, match="has no feature state"):
        run_batch(_request(cold, spec, tmp_path / "cold.parquet", input=later, state="redis"))


def test_index_writes_countable_documents_once(settings, trained, tmp_path, es_client):
    s, spec, events = _settings(settings, trained), trained["spec"], trained["events"]
    codec = Codec.for_schema(spec.event.schema_name)
    path = tmp_path / "events.avro"
    write_records(path, codec, events[:250])
    env = {**os.environ, "PRECOG_NAMESPACE": "batchsource", "PRECOG_REGISTRY_DIR":
           str(trained["registry"]), "PRECOG_CODE_VERSION": "test"}
    cmd = [sys.executable, "-m", "precog", "score-batch", "--input", str(path),
           "--out", str(tmp_path / "indexed.avro"), "--leader", "fraud-lgbm:1",
           "--challenger", "fraud-logreg:1", "--index", "--index-namespace", s.namespace,
           "--chunk-size", "100", "--quiet"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "rows in 250 = predictions 250 + rejects 0: ok" in first.stdout
    assert f"500 documents indexed into {s.namespace}-predictions" in first.stdout
    index = s.index("predictions")
    es_client.indices.refresh(index=index)
    assert es_client.count(index=index)["count"] == 500
    again = subprocess.run([*cmd, "--restart"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    es_client.indices.refresh(index=index)
    assert es_client.count(index=index)["count"] == 500  # same ids: nothing twice
    leader = es_client.count(index=index, query={"term": {"role": "leader"}})["count"]
    assert leader == 250
    doc = es_client.search(index=index, size=1, query={"term": {"role": "challenger"}}
                           )["hits"]["hits"][0]["_source"]
    # the documents belong to the namespace they are indexed under (its dashboards filter on it)
    assert doc["model_id"] == "fraud-logreg" and doc["namespace"] == s.namespace


def test_an_inverted_or_empty_offset_range(settings, trained, tmp_path):
    s, spec = _settings(settings, trained), trained["spec"]
    with pytest.raises(ConfigError) as exc:  # per partition: known once the topic is asked
        run_batch(_request(s, spec, tmp_path / "inverted", topic=TopicRange(
            spec.event.topic, start_offsets="0:50", end_offsets="0:10")))
    assert str(exc.value) == ("--start-offset is after --end-offset on partition 0 (offset"
                              " 50 > 10): the range is empty")
    assert not (tmp_path / "inverted").exists()
    out = tmp_path / "empty"
    summary = run_batch(_request(s, spec, out, topic=TopicRange(
        spec.event.topic, start_offsets="5", end_offsets="5")))
    assert (summary.complete, summary.rows, summary.chunks) == (True, 0, 1)
    assert _rows(out) == []
