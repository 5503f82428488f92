"""Drift end to end on the real stack: seeded predictions and outcomes -> worker (join, monitor)
-> ``concept_drift`` / ``data_drift`` alerts on ``{ns}.alerts`` and in ES ``{ns}-alerts``.

The unit tests (tests/unit/test_monitor_drift.py) pin the detectors on in-memory streams; here
the same kind of streams go through Kafka, the Faust join and monitor agents and
Elasticsearch, in a fresh namespace per test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from precog.avro import Codec
from precog.io.elasticsearch import elasticsearch_client
from precog.monitor.drift import ConceptDrift
from precog.settings import Settings
from tests.e2e.helpers import decode_all, read_topic, running_worker, wait_for

pytestmark = pytest.mark.e2e

TICK_S = 1.0
MODEL, VERSION = "fraud-lgbm", 1
DAY = 86_400_000

# -- concept drift: the unit test's stream -----------------------------------------------
N = 6000
K = 3000  # the error rate jumps from 0.10 to 0.30 at label K
SEED = 42
#: Stated detection delay D, in labels after the jump. In event order ADWIN (delta 0.002,
#: clock 32) fires on this stream at label 3167, 167 labels late (the unit test). On the real
#: stack the join agent's 4 partitions interleave, so the monitor gets the labels before the
#: jump, then those after it (the test waits for the first K labels before sending the rest),
#: each half in an order of its own. Over 12,000 seeded random orders of the two halves ADWIN
#: first fired 39..295 labels after the jump (always 7 mod 32: it looks for a cut every 32
#: labels; 231 in 55 orders, 263 in 8, 295 in 1). D = 320 = ten clock periods covers every
#: observed order; the in-order 167 is where the docs' "within 256 labels" comes from.
MAX_DELAY = 320


def _base_time() -> int:
    return int(time.time() * 1000) - 3 * DAY


def _prediction(i: int, t: int, score: float, label: int, threshold: float,
                features: list[dict[str, Any]], sha: str, namespace: str) -> dict[str, Any]:
    return {
        "prediction_id": f"p{i}", "event_id": f"e{i}", "entity_id": f"card-{i % 97}",
        "source": "transactions", "event_time": t, "scored_time": t + 5,
        "leader": {"model_id": MODEL, "version": VERSION, "role": "leader", "score": score,
                   "label": label, "threshold": threshold, "artifact_sha256": sha},
        "challengers": [],
        "features": features,
        "provenance": {"namespace": namespace, "spec": "transactions",
                       "event_schema": "precog.events.Transaction/v1",
                       "prediction_schema": "precog.predictions.Prediction/v1",
                       "code_version": "test", "source_topic": f"{namespace}.events.transactions",
                       "partition": 0, "offset": i, "worker": "test"},
    }


def concept_stream(seed: int, jump: bool, base: int,
                   namespace: str) -> tuple[list[dict], list[dict]]:
    """The unit test's ``labeled_stream`` as prediction.v1 + outcome.v1 records: decisions
    whose error rate is 0.10, or 0.30 from event K when ``jump``; outcome ``i`` at
    ``event_time + 500``. Same draws in the same order, so the same errors."""
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < 0.2).astype(int)
    rate = np.where(np.arange(N) >= K, 0.3 if jump else 0.1, 0.1)
    wrong = rng.random(N) < rate
    decision = np.where(wrong, 1 - y, y)
    score = np.clip(np.where(decision == 1, 0.7, 0.3) + rng.normal(0, 0.1, N), 0.01, 0.99)
    preds, outs = [], []
    for i in range(N):
        t = base + i * 1000
        preds.append(_prediction(i, t, float(score[i]), int(decision[i]), 0.5, [], "a" * 64,
                                 namespace))
        outs.append({"event_id": f"e{i}", "label": int(y[i]), "event_time": t,
                     "outcome_time": t + 500, "source": "chargebacks"})
    return preds, outs


# -- real-stack helpers --------------------------------------------------------------------
def produce(settings: Settings, topic: str, schema: str, records: list[dict]) -> None:
    """Avro records to ``{ns}.{topic}``, keyed by event id (predictions and outcomes are
    co-partitioned)."""
    codec = Codec.for_schema(schema)
    p = Producer(settings.kafka.producer_config())
    for r in records:
        p.produce(settings.topic(topic), key=r["event_id"].encode(), value=codec.encode(r))
        p.poll(0)
    assert p.flush(30) == 0


def es_client(settings: Settings) -> Elasticsearch:
    return elasticsearch_client(settings)


def es_alerts(es: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    index = settings.index("alerts")
    es.indices.refresh(index=index, ignore_unavailable=True)
    res = es.search(index=index, size=1000, ignore_unavailable=True,
                    sort=[{"detected_time": "asc"}])
    return [h["_source"] for h in res["hits"]["hits"]]


def monitored_labels(es: Elasticsearch, settings: Settings) -> int:
    """``n_labels`` of the newest cumulative metrics document of the model (0 before any)."""
    index = settings.index("metrics")
    es.indices.refresh(index=index, ignore_unavailable=True)
    res = es.search(index=index, size=1, ignore_unavailable=True,
                    query={"bool": {"filter": [{"term": {"window": "cumulative"}},
                                               {"term": {"model_id": MODEL}}]}},
                    sort=[{"computed_time": "desc"}])
    hits = res["hits"]["hits"]
    return int(hits[0]["_source"]["n_labels"]) if hits else 0


def alerts_on_topic(settings: Settings, expected: int) -> list[dict[str, Any]]:
    return decode_all(read_topic(settings, settings.topic("alerts"), expected, timeout=30,
                                 settle=1.0), "alert")


def by_kind(alerts: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["kind"] == kind]


def worker_consumed(settings: Settings, topic: str) -> bool:
    """Whether the worker's consumer group committed every record of ``topic`` (Faust
    commits an offset only after the agents processed the records before it)."""
    from confluent_kafka import Consumer

    name = settings.topic(topic)
    probe = Consumer({**settings.kafka.confluent_config(), "group.id": settings.group("probe")})
    try:
        parts = list(probe.list_topics(name, timeout=10).topics[name].partitions)
        high = {p: probe.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in parts}
    finally:
        probe.close()
    admin = AdminClient(settings.kafka.confluent_config())
    request = ConsumerGroupTopicPartitions(settings.group("worker"),
                                           [TopicPartition(name, p) for p in parts])
    got = admin.list_consumer_group_offsets([request])[settings.group("worker")].result()
    committed = {tp.partition: tp.offset for tp in got.topic_partitions}
    return all(h == 0 or committed.get(p, -1) >= h for p, h in high.items())


def drift_worker(settings: Settings, tmp: Path, agents: str, **env: str) -> Any:
    return running_worker(settings, tmp, agents=agents,
                          extra_env={"PRECOG_MONITOR_TICK_SECONDS": str(TICK_S), **env})


# -- concept drift -------------------------------------------------------------------------
@pytest.mark.parametrize("jump", [True, False], ids=["jump-at-3000", "no-jump"])
def test_concept_drift_alert_within_the_stated_delay_and_none_without_the_jump(
        settings: Settings, tmp_path: Path, jump: bool):
    """6000 labels of one leader, seed 42; with ``jump`` the error rate goes 0.10 -> 0.30 at
    label K = 3000 and a ``concept_drift`` alert (ADWIN) must fire after label K and within
    D = MAX_DELAY = 320 labels of it; without the jump (same length, same seed) none may fire.
    The worker's detections must also be exactly those of the pure detector run on the
    labeled topic in the order the monitor read it. No registered model is needed: concept
    drift uses only the labels (the monitor's registry lookup finds none and moves on)."""
    base = _base_time()
    preds, outs = concept_stream(SEED, jump, base, settings.namespace)
    es = es_client(settings)
    started = int(time.time() * 1000)
    with drift_worker(settings, tmp_path, "join,monitor") as w:
        produce(settings, "predictions", "prediction", preds)
        # the labels before the jump first, all of them joined, then the rest: the monitor
        # reads them (one partition, keyed by model id) in that order
        produce(settings, "outcomes", "outcome", outs[:K])
        first = read_topic(settings, settings.topic("labeled"), K, timeout=60, settle=0.5)
        assert len(first) == K, w.log_tail()
        produce(settings, "outcomes", "outcome", outs[K:])
        assert wait_for(lambda: monitored_labels(es, settings) == N, timeout=60), w.log_tail()
        time.sleep(2 * TICK_S + 0.5)  # two more ticks: nothing pending may be left
        indexed = es_alerts(es, settings)
        on_topic = alerts_on_topic(settings, len(indexed))
        labeled = read_topic(settings, settings.topic("labeled"), N, timeout=30, settle=0.5)
        log = w.log_tail()
    es.close()

    # the monitor's input: one partition (key = model id), the labels before the jump first
    assert len(labeled) == N and len({m.partition() for m in labeled}) == 1
    order = [int(r["event_id"][1:]) for r in decode_all(labeled, "labeled")]
    assert sorted(order[:K]) == list(range(K)) and sorted(order) == list(range(N))
    # the pure detector on that exact order fires where the worker's monitor did
    detector, fired = ConceptDrift(), []
    for pos, i in enumerate(order):
        if detector.update(int(preds[i]["leader"]["label"] != outs[i]["label"])):
            fired.append(pos)
    # ADWIN's: the calibration check reports under the same kind (docs/monitoring.md)
    concept = [a for a in by_kind(indexed, "concept_drift") if a["detector"] == "ADWIN"]
    assert [int(a["window"].removeprefix("labels#")) for a in concept] == fired
    assert {a["alert_id"]: a for a in on_topic} == {a["alert_id"]: a for a in indexed}
    if not jump:
        assert concept == [], log
        return
    assert concept, log
    alert = concept[0]
    assert (alert["namespace"], alert["detector"], alert["model_id"], alert["version"],
            alert["threshold"], alert["severity"]) == (
        settings.namespace, "ADWIN", MODEL, VERSION, 0.002, "critical")
    # statistic: the error rate of the last 128 labels (>= 0.17 at every detection in the
    # 12,000 orders)
    assert 0.15 < alert["statistic"] <= 1.0
    # the count of labels up to the detection: after the jump and within D of it
    index = int(alert["window"].removeprefix("labels#"))
    assert K < index <= K + MAX_DELAY, alert
    # event time: the outcome time of the label that fired it, one sent after the jump
    event = (alert["event_time"] - 500 - base) // 1000
    assert K <= event < N and alert["event_time"] == outs[event]["outcome_time"], alert
    assert started <= alert["detected_time"] <= int(time.time() * 1000)
    assert f"at label {index}" in alert["message"]
    moved = sum(1 for pos, i in enumerate(order) if pos != i)
    print(f"concept drift detected at label {index} ({index - K} after the jump);"
          f" {moved} of {N} labels reached the monitor out of event order")


# -- data drift ----------------------------------------------------------------------------
PSI_WINDOW = 500
HALF = 3 * PSI_WINDOW  # predictions before the shift, and after it
SHIFTED = "amount"
FACTOR = 3.0


def training_rows(spec: Any, history: Path, features: list[str]) -> np.ndarray:
    """The leader's training rows: the labelled history before the 20% holdout, exactly the
    rows its registry ``reference`` was computed from (precog.pipelines.train)."""
    from precog.pipelines.train import labeled_frame, time_split

    frame = labeled_frame(spec, history)
    train = ~time_split(frame.event_times, 0.2)
    return frame.X[train][:, [frame.names.index(f) for f in features]]


def test_data_drift_on_one_feature_alerts_for_that_feature_only(settings: Settings,
                                                                  tmp_path: Path):
    """A trained leader (its registry metadata holds the training reference); predictions whose
    feature rows are a seeded sample of its training rows, and from prediction 1500 on the
    same kind of rows with ``amount`` (and nothing else) multiplied by 3. PSI windows of 500
    (PRECOG_MONITOR_PSI_WINDOW): windows 0-2 before the shift, 3-5 after it. Exactly the
    three windows after the shift raise ``data_drift`` for ``amount``; no other feature and
    no window before the shift alerts."""
    from precog.pipelines.train import train

    from precog.registry import ModelRegistry
    from precog.simulate import write_history
    from precog.spec import load_spec

    spec = load_spec(settings.spec)
    write_history(tmp_path / "history", 8000, seed=1, progress=False,
                  spec=spec)
    metas = {m.model_id: m for m in train(settings, spec, tmp_path / "history",
                                          index=False, roles=False)}
    meta = metas[MODEL]
    assert meta.version == VERSION and meta.reference is not None
    model = ModelRegistry(settings.registry_dir).load(MODEL, VERSION)
    names = list(model.features)
    assert set(meta.reference.features) == set(names) and SHIFTED in names

    rows = training_rows(spec, tmp_path / "history", names)
    rng = np.random.default_rng(7)
    X = rows[rng.permutation(len(rows))[:2 * HALF]].copy()
    X[HALF:, names.index(SHIFTED)] *= FACTOR
    scores = model.predict_proba(X)
    base = _base_time()
    preds = [
        _prediction(i, base + i * 1000, float(s), int(s >= model.threshold), model.threshold,
                    [{"name": n, "value": float(v), "age_ms": 0} for n, v in zip(names, x,
                                                                               strict=True)],
                    model.artifact_sha256, settings.namespace)
        for i, (x, s) in enumerate(zip(X, scores, strict=True))
    ]

    es = es_client(settings)
    with drift_worker(settings, tmp_path, "monitor",
                      PRECOG_MONITOR_PSI_WINDOW=str(PSI_WINDOW)) as w:
        # the first half processed before the second is sent: each PSI window (in the
        # monitor's order across partitions) is then all unshifted or all shifted
        produce(settings, "predictions", "prediction", preds[:HALF])
        assert wait_for(lambda: worker_consumed(settings, "predictions"), timeout=60), \
            w.log_tail()
        produce(settings, "predictions", "prediction", preds[HALF:])
        want = [(SHIFTED, f"events#{k}x{PSI_WINDOW}") for k in (3, 4, 5)]

        def drift_alerts() -> list[tuple[str, str]]:
            got = [(a["feature"], a["window"]) for a in by_kind(es_alerts(es, settings),
                                                                 "data_drift")]
            return got if len(got) >= len(want) else []

        assert wait_for(drift_alerts, timeout=60), w.log_tail()
        assert wait_for(lambda: worker_consumed(settings, "predictions"), timeout=30)
        time.sleep(2 * TICK_S + 0.5)  # two more ticks: nothing pending may be left
        indexed = es_alerts(es, settings)
        on_topic = alerts_on_topic(settings, len(indexed))
        log = w.log_tail()
    es.close()

    assert {a["alert_id"]: a for a in on_topic} == {a["alert_id"]: a for a in indexed}
    data = by_kind(indexed, "data_drift")
    assert sorted((a["feature"], a["window"]) for a in data) == want, (data, log)
    for a in data:
        assert (a["namespace"], a["detector"], a["model_id"], a["version"], a["source"],
                a["threshold"]) == (settings.namespace, "PSI", MODEL, VERSION, "transactions",
                                    0.2)
        assert a["statistic"] > a["threshold"]
        # the window's event times are those of predictions after the shift
        assert base + HALF * 1000 <= a["event_time"] < base + 2 * HALF * 1000
    print("data drift PSI of", SHIFTED, [round(a["statistic"], 3) for a in data])
