"""Per-arm metrics on the real stack: a worker (score, join, monitor) under a canary split set
at runtime with `precog models traffic`; the per-arm metrics the monitor publishes (the
``{ns}-metrics`` documents with ``arm`` set, and the ``{ns}.metrics`` records) equal
scikit-learn computed offline on exactly that arm's joined events, recomputed from the
decoded predictions and outcomes topics."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer
from precog.services.model_control import read_roles
from sklearn import metrics as skm

from precog.avro import Codec
from precog.io.elasticsearch import elasticsearch_client
from precog.settings import Settings
from precog.simulate import SimConfig, produce_live
from precog.spec import parse_duration
from tests.e2e.helpers import decode_all, read_topic, wait_for
from tests.e2e.test_outcomes_e2e import worker as ready_worker
from tests.e2e.test_scoring_e2e import _trained
from tests.integration.test_lifecycle import _cli

pytestmark = pytest.mark.e2e

EVENTS, PERCENT = 600, 40
ARM_MODEL = {"canary": "fraud-logreg", "leader": "fraud-lgbm"}


def _outcomes(settings: Settings, predictions: list[dict[str, Any]], seed: int) -> None:
    """One seeded outcome per event but every 10th (the 20th ones twice, the second one
    ignored by the join), correlated with the leader's score; a minute after the event."""
    rng = np.random.default_rng(seed)
    codec = Codec.for_schema("outcome")
    producer = Producer(settings.kafka.producer_config())
    for i, p in enumerate(predictions):
        if i % 10 == 9:
            continue
        y = int(rng.random() < 0.15 + 0.7 * p["leader"]["score"])
        out = {"event_id": p["event_id"], "label": y, "event_time": p["event_time"],
               "outcome_time": p["event_time"] + 60_000, "source": "chargebacks"}
        for o in ([out, {**out, "label": 1 - y, "outcome_time": out["outcome_time"] + 5}]
                  if i % 20 == 0 else [out]):
            producer.produce(settings.topic("outcomes"), key=p["event_id"].encode(),
                             value=codec.encode(o))
    assert producer.flush(30) == 0


def _joined(predictions: list[dict[str, Any]], outcomes: list[dict[str, Any]],
            window_ms: int) -> dict[str, int]:
    """Event id -> label of its first outcome within the label window, as the join takes it
    (outcomes of one event share a partition, so topic order is their order)."""
    event_time = {p["event_id"]: p["event_time"] for p in predictions}
    first: dict[str, int] = {}
    for o in outcomes:
        if o["event_id"] in first or o["event_id"] not in event_time:
            continue
        if o["outcome_time"] <= event_time[o["event_id"]] + window_ms:
            first[o["event_id"]] = int(o["label"])
    return first


def _sklearn(y: list[int], d: list[int], s: list[float]) -> dict[str, float]:
    return {"accuracy": skm.accuracy_score(y, d), "precision": skm.precision_score(y, d),
            "recall": skm.recall_score(y, d), "f1": skm.f1_score(y, d),
            "roc_auc": skm.roc_auc_score(y, s), "log_loss": skm.log_loss(y, s, labels=[0, 1])}


def test_per_arm_metrics_of_a_canary_equal_scikit_learn_on_each_arms_events(
        settings: Settings, tmp_path: Path):
    spec, _ = _trained(settings, tmp_path, events=6000, seed=1)
    settings = settings.model_copy(update={"monitor": settings.monitor.model_copy(
        update={"tick_seconds": 1.0})})
    with ready_worker(settings, tmp_path, agents="control,score,join,monitor") as worker:
        print("health at start:", worker.health())
        before = read_roles(settings, spec.name).revision
        shown = _cli(settings, "models", "traffic", "--canary", "fraud-logreg:1",
                     "--percent", str(PERCENT))
        assert f"canary fraud-logreg v1 {PERCENT}%" in shown
        revision = read_roles(settings, spec.name).revision
        assert revision == before + 1
        assert wait_for(lambda: (worker.health()[1].get("models") or {}).get("revision")
                        == revision, timeout=30), (worker.health(), worker.log_tail())
        # outcomes of the simulator itself take simulated days (scale 1.0): none is sent
        summary = produce_live(settings, spec, EVENTS, 400.0, SimConfig(seed=9), progress=False,
                               outcome_delay_scale=1.0, outcome_wait_s=0)
        assert summary.outcomes_sent == 0
        predictions = decode_all(read_topic(settings, settings.topic("predictions"),
                                            summary.valid, timeout=90), "prediction")
        assert len({p["event_id"] for p in predictions}) == len(predictions) == summary.valid
        _outcomes(settings, predictions, seed=4)
        outcomes = decode_all(read_topic(settings, settings.topic("outcomes"), 1, timeout=30,
                                         settle=2.0), "outcome")
        labels = _joined(predictions, outcomes, parse_duration(spec.outcome.label_window))

        # offline: each arm's served decisions on its joined events
        arms: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        scored: dict[str, int] = defaultdict(int)
        for p in predictions:
            served = p["served"]
            assert served["policy"] == "canary"  # the split was live before the first event
            arm = served["arm"]
            assert served["decided_by"]["model_id"] == ARM_MODEL[arm]
            scored[arm] += 1
            if p["event_id"] in labels:
                arms[arm]["y"].append(labels[p["event_id"]])
                arms[arm]["d"].append(served["label"])
                arms[arm]["s"].append(served["score"])
        assert set(arms) == {"canary", "leader"}
        assert all(len(a["y"]) > 100 and 0 < sum(a["y"]) < len(a["y"]) for a in arms.values())

        es = elasticsearch_client(settings)
        index = settings.index("metrics")

        def published() -> dict[str, dict[str, Any]] | None:
            """The newest cumulative document of each arm, once it counts every label."""
            es.indices.refresh(index=index)
            hits = es.search(index=index, size=200, query={"bool": {"filter": [
                {"term": {"window": "cumulative"}}, {"exists": {"field": "arm"}}]}},
                sort=[{"computed_time": "desc"}])["hits"]["hits"]
            got: dict[str, dict[str, Any]] = {}
            for h in hits:
                got.setdefault(h["_source"]["arm"], h["_source"])
            done = all(got.get(a, {}).get("n_labels") == len(arms[a]["y"]) for a in arms)
            return got if done else None

        docs = wait_for(published, timeout=60)
        assert docs, worker.log_tail()
        records = decode_all(read_topic(settings, settings.topic("metrics"), 1, timeout=30,
                                        settle=2.0), "metrics")
        es.close()

    for arm, a in arms.items():
        doc = docs[arm]
        assert (doc["model_id"], doc["version"]) == (ARM_MODEL[arm], 1)
        want = _sklearn(a["y"], a["d"], a["s"])
        for k in ("accuracy", "precision", "recall", "f1"):  # ratios of the same counts
            assert doc[k] == want[k], (arm, k, doc[k], want[k])
        for k in ("roc_auc", "log_loss"):
            assert doc[k] == pytest.approx(want[k], rel=1e-12), (arm, k)
        assert doc["label_coverage"] == pytest.approx(len(a["y"]) / scored[arm], rel=1e-12)
        # the metrics topic carries the same record as the document
        (rec,) = [r for r in records if r["arm"] == arm and r["window"] == "cumulative"
                  and r["computed_time"] == doc["computed_time"]]
        assert {k: rec[k] for k in doc} == doc
    # the models' own metrics cover every joined event they scored, whatever the arm
    model_docs = [r for r in records if r["arm"] is None and r["window"] == "cumulative"]
    newest = {r["model_id"]: r for r in sorted(model_docs, key=lambda r: r["computed_time"])}
    assert {m: r["n_labels"] for m, r in newest.items()} == {
        "fraud-lgbm": len(labels), "fraud-logreg": len(labels)}
