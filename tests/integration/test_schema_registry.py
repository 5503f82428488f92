"""Schema Registry mode on the real stack (Apicurio Registry from ``precog stack up``).

A namespace in the Confluent wire format registers every topic's subject at setup with
compatibility BACKWARD; a consumer that knows nothing of precog but confluent-kafka's
``AvroDeserializer`` and the registry URL reads every topic a worker writes; the registry
refuses an incompatible schema; the worker reads events in both wire formats.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from precog.pipelines.train import train

from precog.avro import Codec, SchemaVersion, latest
from precog.errors import ConfigError
from precog.namespace import drop_namespace, setup_namespace
from precog.schema_registry import (
    COMPATIBILITY,
    delete_subjects,
    namespace_codec,
    register_schemas,
    register_versions,
    subject,
    topic_schemas,
)
from precog.settings import Settings
from precog.simulate import SimConfig, produce_live, write_history
from precog.spec import load_spec
from precog.workers import metric_total
from tests.conftest import ROOT, unique_namespace
from tests.e2e.helpers import read_topic, running_worker, wait_for


@pytest.fixture
def confluent(stack: list[Any], tmp_path: Path) -> Iterator[Settings]:
    """A fresh namespace in the Confluent wire format: topics, templates, subjects."""
    base = Settings()
    spec = base.spec if base.spec.is_absolute() else ROOT / base.spec
    ns = unique_namespace()
    s = Settings(namespace=ns, spec=spec, registry_dir=tmp_path / "registry",
                 schema_registry={"confluent_namespaces": [ns]},
                 monitor={"tick_seconds": 1.0})
    assert s.wire_format == "confluent"
    setup_namespace(s, load_spec(spec))
    register_schemas(s, load_spec(spec))
    yield s
    drop_namespace(s)
    delete_subjects(s)


def _registry(settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": settings.schema_registry.url})


def test_setup_registers_every_topic_backward_and_again_changes_nothing(confluent):
    spec = load_spec(confluent.spec)
    sr = _registry(confluent)
    topics = topic_schemas(confluent, spec)
    mine = sorted(n for n in sr.get_subjects() if n.startswith(f"{confluent.namespace}."))
    assert mine == sorted(subject(t) for t in topics)
    assert len(mine) == 11  # events, outcomes, outcomes-rekeyed and 8 data topics
    for topic, schema_name in topics.items():
        assert sr.get_compatibility(subject(topic)) == COMPATIBILITY
        registered = sr.get_latest_version(subject(topic))
        assert json.loads(registered.schema.schema_str)["name"] == latest(schema_name).raw["name"]
    first = {n: sr.get_latest_version(n).schema_id for n in mine}
    again = register_schemas(confluent, spec)
    assert {n: ids[-1] for n, ids in again.items()} == first
    # every version of each schema once (prediction has v1, v2 and v3), none added by the rerun
    assert {subject(t): sr.get_versions(subject(t)) for t in topics} == {
        subject(t): list(range(1, len(Codec.for_schema(s).versions) + 1))
        for t, s in topics.items()}


def _breaking(version: SchemaVersion) -> SchemaVersion:
    """The next version of a schema with a new field and no default: not BACKWARD compatible."""
    raw = copy.deepcopy(version.raw)
    raw["fields"].append({"name": "must_have", "type": "string"})
    return SchemaVersion(version.name, version.version + 1, version.path, raw)


def test_an_incompatible_schema_is_refused_and_nothing_changes(confluent):
    name = subject(confluent.topic("alerts"))
    sr = _registry(confluent)
    before = sr.get_latest_version(name)
    alert = latest("alert")
    with pytest.raises(ConfigError) as err:
        register_versions(confluent, name, [alert, _breaking(alert)])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"schema registry refused precog.alerts.Alert/v2 for subject {name}:"
                              " not BACKWARD compatible")
    assert sr.get_versions(name) == [1]
    assert sr.get_latest_version(name).schema_id == before.schema_id
    # a compatible change (a new field with a default) is accepted as version 2
    raw = copy.deepcopy(alert.raw)
    raw["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    ok = SchemaVersion(alert.name, 2, alert.path, raw)
    ids = register_versions(confluent, name, [alert, ok])
    assert ids[0] == before.schema_id and ids[1] != ids[0]
    assert sr.get_versions(name) == [1, 2]


def _plain_consumer_reads(settings: Settings, topic: str, expected: int) -> list[dict[str, Any]]:
    """Every record of ``topic`` decoded with confluent-kafka's AvroDeserializer alone."""
    deserialize = AvroDeserializer(_registry(settings))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [deserialize(m.value(), ctx) for m in read_topic(settings, topic, expected, settle=1.0)]


def test_a_plain_confluent_consumer_reads_every_topic_the_worker_writes(confluent, tmp_path):
    settings = confluent
    spec = load_spec(settings.spec)
    write_history(tmp_path / "history", 6000, seed=1, progress=False, spec=spec)
    train(settings, spec, tmp_path / "history")
    events_topic = settings.topic(spec.event.topic)
    single = Codec.for_schema(spec.event.schema_name)  # the other wire format
    framed = namespace_codec(settings, spec, spec.event.schema_name)
    assert framed.encode_header()[:1] == b"\x00" and single.encode_header()[:2] == b"\xc3\x01"
    with running_worker(settings, tmp_path) as worker:
        summary = produce_live(settings, spec, 200, 200.0,
                               SimConfig(seed=4, outcome_delay_median_ms=1000),
                               progress=False)
        assert summary.sent == summary.valid == 200
        # events in the single-object format, and one record that is neither, to the DLQ
        producer = Producer(settings.kafka.producer_config())
        sent = read_topic(settings, events_topic, 200, settle=0.1)
        for i, m in enumerate(sent[:5]):  # five of the simulator's events, re-sent single-object
            rec = {**framed.decode(m.value()), "event_id": f"single-{i}"}
            producer.produce(events_topic, single.encode(rec), key=m.key())
        producer.produce(events_topic, b"\x00\x00\x00\x7f\xffbad", key=b"c-bad")
        producer.flush(10)
        preds = wait_for(lambda: metric_total(worker.metrics(), "precog_predictions_out_total")
                         >= 205, timeout=90)
        assert preds
        wait_for(lambda: metric_total(worker.metrics(), "precog_dead_letters_total") >= 1)
        labeled = read_topic(settings, settings.topic("labeled"), 1, timeout=60, settle=0.5)
        metrics = read_topic(settings, settings.topic("metrics"), 1, timeout=60, settle=0.5)
        assert labeled and metrics

    # the worker scored both formats: 200 framed and 5 single-object events
    predictions = _plain_consumer_reads(settings, settings.topic("predictions"), 205)
    ids = {p["event_id"] for p in predictions}
    assert len(predictions) == 205 and {f"single-{i}" for i in range(5)} <= ids
    # every topic precog wrote in this namespace decodes with the registry alone
    dead = _plain_consumer_reads(settings, settings.topic("dlq"), 1)
    assert [d["stage"] for d in dead] == ["decode"]
    assert "unknown schema id 32767" in dead[0]["error_message"]
    outcomes = _plain_consumer_reads(settings, settings.topic(spec.outcome.topic), 200)
    assert len(outcomes) == 200
    assert len(_plain_consumer_reads(settings, settings.topic("outcomes-rekeyed"), 200)) == 200
    assert _plain_consumer_reads(settings, settings.topic("labeled"), len(labeled))
    assert _plain_consumer_reads(settings, settings.topic("metrics"), len(metrics))
    assert _plain_consumer_reads(settings, settings.topic("manifests"), 1)
    roles = _plain_consumer_reads(settings, settings.topic("model-control"), 1)
    assert [r["spec"] for r in roles] == [spec.name]  # published by train(), read by the worker
    framed_events = [m for m in read_topic(settings, events_topic, 206, settle=0.5)
                     if m.value()[:1] == b"\x00" and len(m.value()) > 10]
    assert len(framed_events) == 200
    deserialize = AvroDeserializer(_registry(settings))
    ctx = SerializationContext(events_topic, MessageField.VALUE)
    assert {deserialize(m.value(), ctx)["event_id"] for m in framed_events} <= ids
    # the promotion policy's decision record (services/lifecycle.py) too
    from precog.services.lifecycle import evaluate

    from precog.spec import PromotionSpec

    policy = PromotionSpec(policy="best-recent", min_labels=10, interval="1s", window="1d")
    decided = evaluate(settings, spec.model_copy(update={"promotion": policy}))
    (decision,) = _plain_consumer_reads(settings, settings.topic("decisions"), 1)
    assert decision["decision_id"] == decided.decision["decision_id"]
    alerts = read_topic(settings, settings.topic("alerts"), 0, timeout=2, settle=0.5)
    for m in alerts:  # alerts need a monitor to fire; whatever was written must decode
        assert AvroDeserializer(_registry(settings))(
            m.value(), SerializationContext(settings.topic("alerts"), MessageField.VALUE))


def test_precog_setup_registers_the_subjects_of_a_confluent_namespace(stack):
    from typer.testing import CliRunner

    from precog.cli import app

    ns = unique_namespace()
    settings = Settings(namespace=ns, schema_registry={"confluent_namespaces": [ns]})
    env = {"PRECOG_SCHEMA_REGISTRY_CONFLUENT_NAMESPACES": f"other,{ns}",
           "PRECOG_SPEC": str(ROOT / "pipelines/specs/transactions.yaml")}
    try:
        result = CliRunner().invoke(app, ["setup", "-n", ns], env=env)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert f"namespace {ns}: Confluent wire format, schema registry" \
               f" {settings.schema_registry.url}" in lines
        assert f"subject {ns}.predictions-value: prediction v3 (ids" in result.output
        assert sum(ln.startswith(f"subject {ns}.") for ln in lines) == 11
        assert len([n for n in _registry(settings).get_subjects() if n.startswith(f"{ns}.")]) == 11
    finally:
        drop_namespace(settings)
        delete_subjects(settings)
