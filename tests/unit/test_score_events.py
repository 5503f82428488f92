"""The score agent's batch (``score_events``) with an in-memory store and a recording producer.

Seeded events in; out, exactly: the predictions (features equal to the offline training
frame's, scores recomputed from them), the dead letters with their stage, the entity
states written, and the order of the effects (read, dead letters, predictions, write).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from precog.services.agents.score import score_events
from precog.services.feature_store import StateLost
from precog.services.runtime import Runtime

from precog.avro import Codec
from precog.errors import ServiceUnavailable
from precog.features import STREAMED_IDS_KEPT, EntityState, Featurizer, build_training_frame
from precog.scoring import ModelSet, make_model_set, prediction_id
from precog.settings import Settings
from precog.spec import SPEC_DIR, PipelineSpec, load_spec
from tests.unit.memory import MemoryStore, RecordingProducer, Sent, event

pytestmark = pytest.mark.unit

HOUR = 3_600_000
T0 = 1_790_000_000_000  # September 2026: inside the spec's event-time bounds
SOURCE = "unit.events.transactions"
GARBAGE_AT, INVALID_AT = 5, 11


@dataclass
class Odds:
    """A model whose score is x / (x + scale) of its one feature (exact to recompute)."""

    model_id: str
    version: int
    features: list[str]
    scale: float
    threshold: float = 0.5
    artifact_sha256: str = "f" * 64

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return X[:, 0] / (X[:, 0] + self.scale)


LEADER = Odds("amount-odds", 3, ["amount"], 100.0)
CHALLENGER = Odds("burst-odds", 1, ["count_24h"], 1.0, threshold=0.7)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC_DIR / "transactions.yaml")


def models(spec: PipelineSpec) -> ModelSet:
    return make_model_set(4, LEADER, [CHALLENGER], spec.feature_names)


def runtime(spec: PipelineSpec, es: Any = None) -> Runtime:
    # app=None: the handler under test must not touch the Faust app
    return Runtime(settings=Settings(namespace="unit"), spec=spec, app=None,  # type: ignore[arg-type]
                   models=models(spec), _es=es)


def seeded_events(n: int = 30, seed: int = 13) -> list[dict[str, Any]]:
    """Transactions of four cards in strictly increasing time (offline order = offsets)."""
    rng = random.Random(seed)
    t, out = T0, []
    for i in range(n):
        t += rng.choice([1, 500, 60_000, HOUR, 5 * HOUR])
        out.append({"event_id": f"e{i:03d}", "card_id": f"card-{rng.randrange(4)}",
                    "customer_id": "c1", "merchant_id": f"m{rng.randrange(6)}",
                    "category": rng.choice(["fuel", "grocery", "travel"]),
                    "amount": round(rng.lognormvariate(3, 1), 2), "currency": "EUR",
                    "country": rng.choice(["DE", "FR"]),
                    "channel": rng.choice(["pos", "online", "atm"]), "event_time": t})
    return out


def batch(valid: list[dict[str, Any]]) -> list[Any]:
    """The valid events as Kafka records, with a garbage and an invalid record among them."""
    codec = Codec.for_schema("transaction")
    values = [codec.encode(e) for e in valid]
    values.insert(GARBAGE_AT, b"\x00 not an event")
    values.insert(INVALID_AT, codec.encode({**valid[0], "event_id": "bad", "amount": -5.0}))
    return [event(SOURCE, 0, offset, value, key=b"k", timestamp=T0 / 1000)
            for offset, value in enumerate(values)]


def valid_offsets() -> list[int]:
    return [o for o in range(32) if o not in (GARBAGE_AT, INVALID_AT)]


def final_states(spec: PipelineSpec, valid: list[dict[str, Any]],
                 offsets: list[int] | None = None) -> dict[str, EntityState]:
    """Each card's state after its events, chained offline, with its offset watermark and
    the ids of its last events off the topic."""
    fz = Featurizer(spec)
    states: dict[str, EntityState] = {}
    for ev, offset in zip(valid, valid_offsets() if offsets is None else offsets, strict=True):
        card = ev["card_id"]
        before = states.get(card)
        _, states[card] = fz.featurize(before, ev)
        states[card].applied = {"0": offset}
        ids = [] if before is None else before.streamed
        states[card].streamed = [*ids, ev["event_id"]][-STREAMED_IDS_KEPT:]
    return states


def run(rt: Runtime, store: MemoryStore, producer: RecordingProducer, events: list[Any]) -> int:
    return asyncio.run(score_events(rt, store, producer, Featurizer(rt.spec), events))


def decoded(sent: list[Sent], schema: str) -> list[dict[str, Any]]:
    codec = Codec.for_schema(schema)
    return [codec.decode(s.value) for s in sent]


def test_a_batch_publishes_offline_features_and_exact_scores_then_writes_the_states(
    spec: PipelineSpec,
) -> None:
    rt, effects = runtime(spec), []
    store, producer = MemoryStore(effects), RecordingProducer(effects)
    valid = seeded_events()

    assert run(rt, store, producer, batch(valid)) == 30

    settings = rt.settings
    preds = decoded(producer.on(settings.topic("predictions")), "prediction")
    frame = build_training_frame(spec, valid)
    assert [p["event_id"] for p in preds] == frame.event_ids == [e["event_id"] for e in valid]
    for p, row, ev, offset in zip(preds, frame.X, valid, valid_offsets(), strict=True):
        assert [f["name"] for f in p["features"]] == frame.names
        assert [f["value"] for f in p["features"]] == row.tolist()
        amount, burst = row[frame.names.index("amount")], row[frame.names.index("count_24h")]
        assert p["leader"]["score"] == amount / (amount + 100.0)
        assert p["leader"]["label"] == int(amount / (amount + 100.0) >= 0.5)
        assert [c["score"] for c in p["challengers"]] == [burst / (burst + 1.0)]
        assert p["prediction_id"] == prediction_id("transactions", ev["event_id"])
        assert (p["provenance"]["source_topic"], p["provenance"]["offset"]) == (SOURCE, offset)
    assert all(s.acknowledged for s in producer.sent)
    assert [s.key for s in producer.on(settings.topic("predictions"))] == [
        e["event_id"].encode() for e in valid]

    dead = producer.on(settings.topic("dlq"))
    assert [(d.header("precog.offset"), d.header("precog.stage")) for d in dead] == [
        (str(GARBAGE_AT).encode(), b"decode"), (str(INVALID_AT).encode(), b"validate")]
    assert [r["error_class"] for r in decoded(dead, "dead_letter")] == [
        "DecodeError", "ValidationError"]

    assert store.writes == [final_states(spec, valid)]
    assert effects == [
        ("read", ",".join(dict.fromkeys(e["card_id"] for e in valid))),
        ("produce", settings.topic("dlq")),
        ("produce", settings.topic("predictions")),
        ("write", "card-0,card-1,card-2,card-3"),
    ]


def test_a_redelivered_batch_keeps_its_prediction_ids_and_moves_no_state(
    spec: PipelineSpec,
) -> None:
    rt, store = runtime(spec), MemoryStore()
    valid = seeded_events()
    run(rt, store, RecordingProducer(), batch(valid))
    first = store.states()

    again = RecordingProducer()
    assert run(rt, store, again, batch(valid)) == 30
    preds = decoded(again.on(rt.settings.topic("predictions")), "prediction")
    assert [p["prediction_id"] for p in preds] == [
        prediction_id("transactions", e["event_id"]) for e in valid]
    assert store.states() == first  # the offset watermark: nothing applied twice
    assert store.writes[1] == {}


def test_records_too_large_to_publish_go_to_the_dlq_and_leave_every_state_alone(
    spec: PipelineSpec,
) -> None:
    rt, effects = runtime(spec), []
    store, producer = MemoryStore(effects), RecordingProducer(effects, record_limit=100)

    assert run(rt, store, producer, batch(seeded_events())) == 0

    dead = producer.on(rt.settings.topic("dlq"))
    stages = [d.header("precog.stage") for d in dead]
    assert stages == [b"decode", b"validate"] + [b"encode"] * 30
    assert [r["error_class"] for r in decoded(dead, "dead_letter")][2:] == ["RecordTooLarge"] * 30
    assert producer.on(rt.settings.topic("predictions")) == []
    assert store.writes == [] and store.data == {}
    assert [e[0] for e in effects] == ["read", "produce"]


def test_one_record_too_large_is_dropped_and_the_batch_featurized_again_without_it(
    spec: PipelineSpec,
) -> None:
    valid = seeded_events(8)
    big = {**valid[3], "event_id": "e" * 200}  # its prediction is ~400 bytes longer
    plain = RecordingProducer()
    run(runtime(spec), MemoryStore(), plain, batch(seeded_events(8))[:5])
    limit = max(len(r.key or b"") + len(r.value) for r in plain.sent) + 100
    codec = Codec.for_schema("transaction")
    events = [event(SOURCE, 0, o, codec.encode(e)) for o, e in enumerate(
        [*valid[:3], big, *valid[3:]])]
    rt, store, producer = runtime(spec), MemoryStore(), RecordingProducer(record_limit=limit)

    assert run(rt, store, producer, events) == 8

    dead = producer.on(rt.settings.topic("dlq"))
    assert [(d.header("precog.offset"), d.header("precog.stage")) for d in dead] == [
        (b"3", b"encode")]
    preds = decoded(producer.on(rt.settings.topic("predictions")), "prediction")
    frame = build_training_frame(spec, valid)  # as if the big record had never come
    assert [p["event_id"] for p in preds] == frame.event_ids
    assert [[f["value"] for f in p["features"]] for p in preds] == frame.X.tolist()
    assert store.states() == final_states(spec, valid, [0, 1, 2, 4, 5, 6, 7, 8])


def test_an_unavailable_store_is_waited_for_and_the_batch_comes_out_the_same(
    spec: PipelineSpec,
) -> None:
    down = ServiceUnavailable("redis", "memory://", "refused")
    rt, effects = runtime(spec), []
    store = MemoryStore(effects, read_failures=[down, down], write_failures=[down])
    producer = RecordingProducer(effects)
    valid = seeded_events()

    assert run(rt, store, producer, batch(valid)) == 30

    plain_store, plain = MemoryStore(), RecordingProducer()
    run(runtime(spec), plain_store, plain, batch(valid))
    strip = lambda sent: [(s.topic, s.key, s.headers) for s in sent]  # noqa: E731
    assert strip(producer.sent) == strip(plain.sent)
    assert store.states() == plain_store.states()
    assert [e[0] for e in effects] == ["read", "produce", "produce", "write"]
    assert rt.health.problems() == {}  # recovered


def test_a_failing_state_write_raises_after_the_predictions_and_writes_nothing(
    spec: PipelineSpec,
) -> None:
    rt, effects = runtime(spec), []
    store = MemoryStore(effects, write_failures=[RuntimeError("a bug")])
    producer = RecordingProducer(effects)

    with pytest.raises(RuntimeError, match="a bug"):
        run(rt, store, producer, batch(seeded_events()))

    assert [e[0] for e in effects] == ["read", "produce", "produce"]
    assert store.data == {}
    assert rt.health.problems() == {}  # a bug is not waited for: the caller stops the worker


class Documents:
    """Elasticsearch's ``index`` call, kept."""

    def __init__(self) -> None:
        self.indexed: list[tuple[str, str]] = []

    async def index(self, index: str, id: str, document: dict[str, Any]) -> None:
        self.indexed.append((index, id))


def test_lost_state_alerts_once_waits_held_and_scores_when_it_is_back(
    spec: PipelineSpec,
) -> None:
    docs = Documents()
    rt, effects = runtime(spec, es=docs), []
    lost = StateLost("memory://", "unit:state-marker:transactions")
    store = MemoryStore(effects, read_failures=[lost, lost, lost])
    producer = RecordingProducer(effects)

    assert run(rt, store, producer, batch(seeded_events())) == 30

    alerts = decoded(producer.on(rt.settings.topic("alerts")), "alert")
    assert [(a["kind"], a["detector"]) for a in alerts] == [("quality", "feature_state_lost")]
    assert docs.indexed == [(rt.settings.index("alerts"), alerts[0]["alert_id"])]
    assert [e[0] for e in effects] == ["produce", "read", "produce", "produce", "write"]
    assert rt.health.problems() == {}
