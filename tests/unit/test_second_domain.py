"""A second domain needs no code change: its schema and spec live outside the package.

Meter readings (an entity id, a numeric value, an event time, a site) are written as an
``.avsc`` and a spec into a temporary directory; the spec's ``schema_dirs`` points at the
schema. From there the generic code alone loads the spec, encodes and decodes events,
writes and checks a history (``precog history write`` from CSV), featurizes, trains and
registers both models, scores a batch through the score agent's handler with in-memory
adapters, and builds the index documents and dashboards in the domain's own words.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from precog.pipelines.train import labeled_frame, train_models
from precog.services.agents.score import score_events
from precog.services.runtime import Runtime
from typer.testing import CliRunner

from precog import resources
from precog.avro import Codec
from precog.cli import app
from precog.dashboards import dashboards
from precog.errors import ConfigError
from precog.features import Featurizer, build_training_frame
from precog.history import check_history
from precog.registry import ModelRegistry
from precog.scoring import make_model_set, prediction_documents
from precog.settings import Settings
from precog.simulate import simulator_name
from precog.spec import load_spec
from tests.unit.memory import MemoryStore, RecordingProducer, event

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000
HOUR = 3_600_000

SCHEMA = {
    "type": "record", "name": "MeterReading", "namespace": "example.meters",
    "doc": "One electricity meter reading.",
    "fields": [
        {"name": "reading_id", "type": "string"},
        {"name": "meter_id", "type": "string"},
        {"name": "site", "type": "string"},
        {"name": "kwh", "type": "double"},
        {"name": "read_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}

SPEC = """\
name: meters
description: Electricity meter readings scored for tampering; inspections arrive later.
schema_dirs: [avro]
event:
  schema_name: meter_reading
  topic: events.meters
  id_field: reading_id
  entity_field: meter_id
  time_field: read_time
  checks:
    kwh: {min: 0, max: 10000}
    meter_id: {pattern: "^meter-[0-9]+$"}
features:
  - {name: kwh, kind: value, field: kwh}
  - {name: log_kwh, kind: log1p, field: kwh}
  - {name: hour_of_day, kind: hour_of_day}
  - {name: readings_24h, kind: decayed_count, horizon: 24h}
  - {name: kwh_vs_mean, kind: ratio_to_mean, field: kwh, horizon: 7d}
  - {name: new_site, kind: novelty, field: site, capacity: 3}
models:
  - {model_id: tamper-lgbm, algorithm: lightgbm, role: leader,
     params: {num_leaves: 7, n_estimators: 40, min_child_samples: 5}}
  - {model_id: tamper-logreg, algorithm: sklearn-logistic, role: challenger,
     features: [kwh_vs_mean, new_site]}
outcome: {label_window: 3d}
business: {event_noun: readings, positive_noun: tampering}
"""


def _readings(n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded readings of 12 meters; a tampered reading is far below the meter's usual."""
    rng = random.Random(seed)
    usual = {m: rng.uniform(20, 80) for m in range(12)}
    events, outcomes, t = [], [], T0 - 20 * 24 * HOUR
    for i in range(n):
        t += rng.randint(1, 2 * HOUR)
        m = rng.randrange(12)
        tampered = rng.random() < 0.15
        kwh = usual[m] * (rng.uniform(0.05, 0.3) if tampered else rng.uniform(0.8, 1.2))
        site = f"site-{m % 3}" if not tampered else f"site-{rng.randrange(3, 9)}"
        events.append({"reading_id": f"r{i:05d}", "meter_id": f"meter-{m}", "site": site,
                       "kwh": round(kwh, 3), "read_time": t})
        outcomes.append({"event_id": f"r{i:05d}", "label": int(tampered), "event_time": t,
                         "outcome_time": t + 2 * HOUR, "source": "inspections"})
    return events, outcomes


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    header = list(rows[0])
    path.write_text("\n".join([",".join(header)] + [",".join(str(r[k]) for k in header)
                                                   for r in rows]) + "\n")
    return path


@pytest.fixture
def domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The domain's directory outside the package; schema lookups reset afterwards."""
    monkeypatch.setattr(resources, "_spec_schema_dirs", [])
    (tmp_path / "avro").mkdir()
    (tmp_path / "avro" / "meter_reading.v1.avsc").write_text(json.dumps(SCHEMA))
    (tmp_path / "meters.yaml").write_text(SPEC)
    assert not str(tmp_path).startswith(str(resources.schema_dir().parent))
    return tmp_path


def test_the_schema_is_found_only_through_the_spec(domain: Path) -> None:
    with pytest.raises(Exception, match="no schema named 'meter_reading'"):
        Codec.for_schema("meter_reading")
    spec = load_spec(domain / "meters.yaml")
    assert spec.schema_dirs == [(domain / "avro").resolve()]
    codec = Codec.for_schema("meter_reading")
    reading = {"reading_id": "r1", "meter_id": "meter-1", "site": "site-0", "kwh": 12.5,
               "read_time": T0}
    assert codec.decode(codec.encode(reading)) == reading
    assert codec.writer.label.startswith("example.meters.MeterReading")
    with pytest.raises(ConfigError, match="spec meters names no simulator"):
        simulator_name(spec)


def test_history_train_and_score_with_no_code_change(domain: Path) -> None:
    spec = load_spec(domain / "meters.yaml")
    events, outcomes = _readings(600, seed=3)

    # a history from CSV files, through the CLI, checked as training reads it
    res = CliRunner().invoke(app, [
        "history", "write", "--spec", str(domain / "meters.yaml"),
        "--from", str(_csv(domain / "readings.csv", events)),
        "--outcomes", str(_csv(domain / "inspections.csv", outcomes)),
        "--out", str(domain / "history")])
    assert res.exit_code == 0, res.output
    check = check_history(domain / "history", spec)
    assert (check.events, check.outcomes, check.positives) == (
        600, 600, sum(o["label"] for o in outcomes))

    # offline features and training
    frame = labeled_frame(spec, domain / "history")
    assert frame.names == spec.feature_names and len(frame.y) == 600
    trained = train_models(spec, frame, 0.25, seed=0, code="test")
    auc = {t.model_spec.model_id: t.fields["holdout"].roc_auc for t in trained}
    assert auc["tamper-lgbm"] > 0.95 and auc["tamper-logreg"] > 0.9, auc
    registry = ModelRegistry(domain / "registry")
    for t in trained:
        registry.register(t.model_spec.model_id, t.model_spec.algorithm, t.artifact, **t.fields)
    models = make_model_set(1, registry.load("tamper-lgbm", 1),
                            [registry.load("tamper-logreg", 1)], spec.feature_names)

    # live scoring: the score agent's handler with an in-memory store and producer
    live = events[-8:]
    codec = Codec.for_schema("meter_reading")
    batch = [event("unit.events.meters", 0, i, codec.encode(e), key=e["meter_id"].encode(),
                   timestamp=e["read_time"] / 1000) for i, e in enumerate(live)]
    rt = Runtime(settings=Settings(namespace="unit"), spec=spec, app=None,  # type: ignore[arg-type]
                 models=models)
    store, producer = MemoryStore([]), RecordingProducer([])
    assert asyncio.run(score_events(rt, store, producer, Featurizer(spec), batch)) == 8
    preds = [Codec.for_schema("prediction").decode(s.value)
             for s in producer.on(rt.settings.topic("predictions"))]
    assert [p["event_id"] for p in preds] == [e["reading_id"] for e in live]
    assert {p["source"] for p in preds} == {"meters"}
    assert sorted(store.states()) == sorted({e["meter_id"] for e in live})
    offline = build_training_frame(spec, live)  # fresh state: the same as the empty store
    online = np.array([[f["value"] for f in p["features"]] for p in preds])
    assert np.allclose(online, offline.X)
    leader_scores = registry.load("tamper-lgbm", 1).predict_proba(offline.X)
    assert [p["leader"]["score"] for p in preds] == pytest.approx(leader_scores.tolist())

    # the index documents and the dashboards, in the domain's words, without an amount
    docs = prediction_documents(preds[0], indexed_time=T0, amount_feature=None)
    assert [d["model_id"] for _, d in docs] == ["tamper-lgbm", "tamper-logreg"]
    assert all("amount" not in d for _, d in docs)
    business = dashboards(spec.feature_names, spec.business)[-1]
    assert business.panels[0].title == "Flagged readings"


def test_a_spec_without_its_schema_dir_says_so(domain: Path) -> None:
    (domain / "bad.yaml").write_text(SPEC.replace("schema_dirs: [avro]", "schema_dirs: [nope]"))
    with pytest.raises(ConfigError, match="schema_dirs not found: .*nope"):
        load_spec(domain / "bad.yaml")
