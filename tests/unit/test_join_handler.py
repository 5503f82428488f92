"""The join agent's handler (``OutcomeJoin.handle``) with a dict for its table and a recording
producer: predictions and outcomes in; labeled records, dead letters and table entries out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from precog.services.agents.join import OutcomeJoin

from precog.avro import Codec
from precog.monitor.join import EARLY, JOINED, PENDING, labeled_records, pending_prediction
from precog.namespace import REKEYED_OUTCOMES_TOPIC
from precog.spec import PipelineSpec
from tests.unit.memory import MemoryStore, RecordingProducer, event
from tests.unit.test_score_events import HOUR, batch, run, runtime, seeded_events, spec

pytestmark = pytest.mark.unit
__all__ = ["spec"]  # the fixture


def scored(spec: PipelineSpec, n: int) -> list[bytes]:
    """Prediction records of the first ``n`` seeded events, from the score agent's batch."""
    rt, producer = runtime(spec), RecordingProducer()
    run(rt, MemoryStore(), producer, batch(seeded_events())[:n])
    return [s.value for s in producer.on(rt.settings.topic("predictions"))]


def outcome(event_id: str, event_time: int, label: int, after: int = HOUR) -> bytes:
    return Codec.for_schema("outcome").encode({
        "event_id": event_id, "label": label, "event_time": event_time,
        "outcome_time": event_time + after, "source": "chargebacks"})


def test_outcomes_join_their_predictions_into_labeled_records_sent_in_order(
    spec: PipelineSpec,
) -> None:
    rt, effects = runtime(spec), []
    producer, table = RecordingProducer(effects), {}
    join = OutcomeJoin(rt, table, producer)
    preds_topic = rt.settings.topic("predictions")
    outcomes_topic = rt.settings.topic(REKEYED_OUTCOMES_TOPIC)
    p0, p1 = scored(spec, 2)
    pred0 = Codec.for_schema("prediction").decode(p0)
    t0 = pred0["event_time"]

    async def feed() -> None:
        for offset, (topic, value) in enumerate([
            (preds_topic, p0),
            (preds_topic, p1),
            (outcomes_topic, outcome("e000", t0, 1)),
            (outcomes_topic, b"\x00 not an outcome"),
            (outcomes_topic, outcome("e000", t0, 1)),  # a duplicate
            (outcomes_topic, outcome("e999", t0, 0)),  # before its prediction
        ]):
            await join.handle(event(topic, 0, offset, value, key=b"k"))

    asyncio.run(feed())

    labeled = producer.on(rt.settings.topic("labeled"))
    expected = labeled_records(pending_prediction(pred0), {
        "event_id": "e000", "label": 1, "event_time": t0, "outcome_time": t0 + HOUR})
    assert [Codec.for_schema("labeled").decode(s.value) for s in labeled] == expected
    assert [s.key for s in labeled] == [b"amount-odds", b"burst-odds"]
    assert not any(s.acknowledged for s in labeled)  # handed to the producer, not awaited

    dead = producer.on(rt.settings.topic("dlq"))
    assert [(d.header("precog.offset"), d.header("precog.stage"), d.acknowledged)
            for d in dead] == [(b"3", b"join", True)]
    assert effects == [("send", rt.settings.topic("labeled"))] * 2 + [
        ("produce", rt.settings.topic("dlq"))]

    kinds: dict[str, Any] = {k: (v["kind"], v["partition"]) for k, v in table.items()}
    assert kinds == {"e000": (JOINED, 0), "e001": (PENDING, 0), "e999": (EARLY, 0)}
    pid = pred0["prediction_id"]
    assert join.updates == {
        f"{pid}:amount-odds:3": ({"outcome_label": 1, "outcome_time": t0 + HOUR}, 0),
        f"{pid}:burst-odds:1": ({"outcome_label": 1, "outcome_time": t0 + HOUR}, 0),
    }
    counters = join.state(0).counters.as_dict()
    assert {k: counters[k] for k in ("predictions", "outcomes", "joined_events",
                                     "duplicate_outcomes", "early_outcomes")} == {
        "predictions": 2, "outcomes": 3, "joined_events": 1, "duplicate_outcomes": 1,
        "early_outcomes": 1}
    joined = rt.metrics.registry.get_sample_value("precog_join_total",
                                                  {"result": "joined_events"})
    assert joined == 1.0


def test_a_restarted_join_recovers_its_pending_prediction_from_the_table(
    spec: PipelineSpec,
) -> None:
    rt = runtime(spec)
    table: dict[str, Any] = {}
    (p0,) = scored(spec, 1)
    t0 = Codec.for_schema("prediction").decode(p0)["event_time"]
    asyncio.run(OutcomeJoin(rt, table, RecordingProducer()).handle(
        event(rt.settings.topic("predictions"), 0, 0, p0)))

    producer = RecordingProducer()
    again = OutcomeJoin(runtime(spec), table, producer)
    asyncio.run(again.handle(event(rt.settings.topic(REKEYED_OUTCOMES_TOPIC), 0, 1,
                                   outcome("e000", t0, 0))))
    labeled = producer.on(rt.settings.topic("labeled"))
    assert [Codec.for_schema("labeled").decode(s.value)["outcome"] for s in labeled] == [0, 0]
