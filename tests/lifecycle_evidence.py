"""Seeded labelled evidence for the promotion policy's tests: ``labeled.v1`` records on a topic."""

from __future__ import annotations

import numpy as np
from confluent_kafka import Producer

from precog.avro import Codec
from precog.roles import ModelRef
from precog.settings import Settings

LGBM, LOGREG = ModelRef("fraud-lgbm", 1), ModelRef("fraud-logreg", 1)
HOUR = 3_600_000


def produce_labels(settings: Settings, n: int, *, better: ModelRef | None, now: int,
                   seed: int) -> None:
    """labeled.v1 records of ``n`` events in the last day, ``better`` clearly the better model
    (None: both equally good)."""
    rng = np.random.default_rng(seed)
    codec = Codec.for_schema("labeled")
    producer = Producer(settings.kafka.producer_config(acks="all"))
    y = (rng.random(n) < 0.2).astype(int)
    z = 2.0 * y - 1.0
    for i in range(n):
        t = now - 20 * HOUR + int(i * 18 * HOUR / n)
        for ref in (LGBM, LOGREG):
            edge = 1.2 if better is None else 1.8 if ref == better else 0.6
            s = float(1 / (1 + np.exp(-(edge * z[i] + rng.normal() - 1.0))))
            rec = {"model_id": ref.model_id, "version": ref.version, "role": "x",
                   "prediction_id": f"p{seed}-{i}", "event_id": f"e{seed}-{i}",
                   "entity_id": "card-1", "source": "", "event_time": t, "scored_time": t,
                   "outcome_time": t + 1000, "score": s, "label": int(s >= 0.5),
                   "outcome": int(y[i]), "label_latency_ms": 1000, "features": None}
            producer.produce(settings.topic("labeled"), key=ref.model_id.encode(),
                             value=codec.encode(rec))
    assert producer.flush(30) == 0
