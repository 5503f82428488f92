"""`precog retrain` on the real stack: the training set from topics equals the offline one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from precog.pipelines.retrain import read_topic_data
from precog.pipelines.train import labeled_frame
from precog.services.lifecycle import recent_decisions
from precog.services.model_control import read_roles
from typer.testing import CliRunner

from precog.avro import Codec
from precog.cli import app
from precog.history import read_history
from precog.registry import ModelRegistry
from precog.roles import ModelRef
from precog.settings import Settings
from precog.spec import load_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from precog.simulate import write_history

    out = tmp_path_factory.mktemp("history")
    write_history(out, 3000, seed=8, end_ms=1_760_000_000_000, progress=False)
    return out


def _cli(settings: Settings, *args: str) -> str:
    env = {"PRECOG_NAMESPACE": settings.namespace,
           "PRECOG_REGISTRY_DIR": str(settings.registry_dir), "PRECOG_SPEC": str(settings.spec)}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _produce(settings: Settings, topic: str, schema: str, records: list[dict], key: str) -> None:
    codec = Codec.for_schema(schema)
    producer = Producer(settings.kafka.producer_config(acks="all"))
    for r in records:
        producer.produce(settings.topic(topic), key=str(r[key]).encode(), value=codec.encode(r))
    assert producer.flush(30) == 0


def test_retrain_from_topics_registers_challengers_with_their_data_window(settings, history):
    _cli(settings, "train", "--history", str(history), "--seed", "1")
    spec = load_spec(settings.spec)
    events, outcomes = read_history(history, spec)
    rng = np.random.default_rng(2)
    shuffled = [events[i] for i in rng.permutation(len(events))]  # arrival order is not time
    started = int(time.time() * 1000)
    _produce(settings, spec.event.topic, spec.event.schema_name, shuffled, "card_id")
    _produce(settings, spec.outcome.topic, spec.outcome.schema_name, outcomes, "event_id")
    until = int(time.time() * 1000) + 1

    # the frame from the topics is the offline one, bit for bit
    data = read_topic_data(settings, spec, started - 1, until)
    offline = labeled_frame(spec, history)
    assert data.frame.event_ids == offline.event_ids
    assert np.array_equal(data.frame.X, offline.X)
    assert np.array_equal(data.frame.y, offline.y)
    assert data.events_read == len(events) and data.invalid == 0
    assert sum(b - a for a, b in data.offsets.values()) == len(events)

    out = _cli(settings, "retrain", "run", "--since", str(started - 1), "--until", str(until),
               "--max-challengers", "3", "--seed", "1")
    assert ": registered:" in out
    roles = read_roles(settings, spec.name)
    assert roles.leader == ModelRef("fraud-lgbm", 1)  # never directly the leader
    assert roles.challengers == (ModelRef("fraud-logreg", 1), ModelRef("fraud-lgbm", 2),
                                 ModelRef("fraud-logreg", 2))
    meta = ModelRegistry(settings.registry_dir).get("fraud-lgbm", 2)
    assert settings.topic(spec.event.topic) in meta.training_source
    assert f"received {started - 1}..{until}" in meta.training_source
    assert meta.training_window_start == int(offline.event_times.min())
    v1 = ModelRegistry(settings.registry_dir).get("fraud-lgbm", 1)
    assert meta.training_data_sha256 == v1.training_data_sha256  # the same rows

    (audit,) = [d for d in recent_decisions(settings, spec.name) if d["kind"] == "retrain"]
    assert audit["action"] == "registered" and audit["policy"] == "manual"
    assert {(c["model_id"], c["version"]) for c in audit["candidates"]} == {
        ("fraud-lgbm", 2), ("fraud-logreg", 2)}
    lgbm = next(c for c in audit["candidates"] if c["model_id"] == "fraud-lgbm")
    assert lgbm["value"] == meta.holdout.f1 and lgbm["leader_value"] == v1.holdout.f1

    # the cap: three challengers already, a run would add two more
    again = _cli(settings, "retrain", "run", "--since", str(started - 1), "--until", str(until),
                 "--max-challengers", "3")
    assert ": skipped: 3 challengers already" in again
    assert read_roles(settings, spec.name).revision == roles.revision


def test_a_drift_alert_triggers_exactly_one_run_within_the_cooldown(settings, history, es_client):
    from precog.pipelines.retrain_triggers import check

    from precog.monitor.alerts import make_alert
    from precog.spec import RetrainingSpec

    _cli(settings, "train", "--history", str(history), "--seed", "1")
    spec = load_spec(settings.spec).model_copy(update={"retraining": RetrainingSpec(
        triggers=["concept_drift"], window="3650d", cooldown="1d", max_challengers=5)})
    events, outcomes = read_history(history, spec)
    _produce(settings, spec.event.topic, spec.event.schema_name, events, "card_id")
    _produce(settings, spec.outcome.topic, spec.outcome.schema_name, outcomes, "event_id")
    now = int(time.time() * 1000)
    assert check(settings, spec, now_ms=now) is None  # no alert yet: nothing runs
    alert = make_alert(settings.namespace, "concept_drift", "ADWIN", model_id="fraud-lgbm",
                       version=1, window="labels#10", statistic=0.3, threshold=0.002,
                       message="error rate up", event_time=now, detected_time=now)
    es_client.index(index=settings.index("alerts"), id=alert["alert_id"], document=alert,
                    refresh="wait_for")

    first = check(settings, spec, now_ms=now + 1000)
    assert first is not None and first["action"] == "registered"
    assert first["policy"].startswith(f"concept_drift: alert {alert['alert_id']}")
    es_client.indices.refresh(index=settings.index("decisions"))
    # the same alert, and a new one, within the cool-down: no second run
    later = {**alert, "alert_id": "a2", "detected_time": now + 5000}
    es_client.index(index=settings.index("alerts"), id="a2", document=later, refresh="wait_for")
    assert check(settings, spec, now_ms=now + 10_000) is None
    runs = [d for d in recent_decisions(settings, spec.name) if d["kind"] == "retrain"]
    assert len(runs) == 1
    assert len(read_roles(settings, spec.name).challengers) == 3
