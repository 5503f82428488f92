"""Join policies of delayed outcomes: each policy with its exact counts."""

from __future__ import annotations

import pytest

from precog.avro import Codec
from precog.monitor.join import JoinState

pytestmark = pytest.mark.unit

WINDOW = 1_000


def pred(event_id: str, t: int, score: float = 0.8, challenger: bool = True) -> dict:
    leader = {"model_id": "lead", "version": 2, "role": "leader", "score": score,
              "label": int(score >= 0.5), "threshold": 0.5, "artifact_sha256": "a" * 64}
    chal = {"model_id": "chal", "version": 1, "role": "challenger", "score": 1 - score,
            "label": int(1 - score >= 0.5), "threshold": 0.5, "artifact_sha256": "b" * 64}
    return {"prediction_id": f"p-{event_id}", "event_id": event_id, "entity_id": "card-1",
            "source": "transactions", "event_time": t, "scored_time": t + 3,
            "leader": leader, "challengers": [chal] if challenger else [],
            "features": [{"name": "amount", "value": 12.5, "age_ms": 0}]}


def outcome(event_id: str, t: int, at: int, label: int = 1) -> dict:
    return {"event_id": event_id, "label": label, "event_time": t, "outcome_time": at,
            "source": "chargebacks"}


def test_prediction_then_outcome_joins_one_record_per_model():
    s = JoinState(WINDOW)
    assert s.on_prediction(pred("e1", 100)).labeled == []
    out = s.on_outcome(outcome("e1", 100, 400, label=1))
    assert [(r["model_id"], r["version"], r["role"], r["score"], r["label"], r["outcome"])
            for r in out.labeled] == [("lead", 2, "leader", 0.8, 1, 1),
                                      ("chal", 1, "challenger", 0.19999999999999996, 0, 1)]
    rec = out.labeled[0]
    assert (rec["event_time"], rec["scored_time"], rec["outcome_time"],
            rec["label_latency_ms"]) == (100, 103, 400, 300)
    assert rec["prediction_id"] == "p-e1" and rec["features"] == {"amount": 12.5}
    assert s.counters.joined_events == 1 and s.counters.labeled_records == 2


def test_labeled_records_match_the_schema():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 100))
    codec = Codec.for_schema("labeled")
    for rec in s.on_outcome(outcome("e1", 100, 400)).labeled:
        assert codec.decode(codec.encode(rec)) == rec


def test_outcome_before_prediction_is_held_then_joined():
    s = JoinState(WINDOW)
    assert s.on_outcome(outcome("e1", 100, 150)).labeled == []
    assert s.counters.early_outcomes == 1 and len(s) == 1
    out = s.on_prediction(pred("e1", 100))
    assert [r["model_id"] for r in out.labeled] == ["lead", "chal"]
    assert out.labeled[0]["label_latency_ms"] == 50
    assert s.counters.joined_events == 1


def test_duplicate_outcomes_are_counted_once():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 100))
    assert len(s.on_outcome(outcome("e1", 100, 300)).labeled) == 2
    assert s.on_outcome(outcome("e1", 100, 300)).labeled == []
    assert s.on_outcome(outcome("e1", 100, 350, label=0)).labeled == []
    # duplicates of an outcome that is still waiting for its prediction
    s.on_outcome(outcome("e2", 200, 300))
    s.on_outcome(outcome("e2", 200, 310))
    assert len(s.on_prediction(pred("e2", 200)).labeled) == 2
    c = s.counters
    assert (c.outcomes, c.duplicate_outcomes, c.joined_events, c.labeled_records) == (5, 3, 2, 4)


def test_late_outcome_is_counted_reported_and_not_joined():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 100))
    out = s.on_outcome(outcome("e1", 100, 100 + WINDOW + 1))
    assert out.labeled == [] and [o["event_id"] for o in out.late] == ["e1"]
    assert s.counters.late_outcomes == 1 and s.counters.joined_events == 0


def test_outcome_exactly_at_the_window_end_is_joined():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 100))
    assert len(s.on_outcome(outcome("e1", 100, 100 + WINDOW)).labeled) == 2


def test_late_outcome_before_its_prediction_is_not_held():
    s = JoinState(WINDOW)
    out = s.on_outcome(outcome("e1", 100, 100 + WINDOW + 5))
    assert len(out.late) == 1 and len(s) == 0
    assert s.on_prediction(pred("e1", 100)).labeled == []


def test_unlabeled_predictions_expire_after_the_window():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 100))
    s.on_prediction(pred("e2", 500))
    assert s.expire(100 + WINDOW).expired == []
    out = s.expire(100 + WINDOW + 1)
    assert [e["event_id"] for e in out.expired] == ["e1"]
    assert s.counters.expired_unlabeled == 1 and list(s.pending()) == ["e2"]
    # its outcome now arrives late: counted, not joined
    assert s.on_outcome(outcome("e1", 100, 100 + WINDOW + 2)).labeled == []
    assert s.counters.late_outcomes == 1


def test_orphan_outcomes_expire_and_joined_markers_are_dropped():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 0))
    s.on_outcome(outcome("e1", 0, 10))
    s.on_outcome(outcome("e9", 0, 20))  # its prediction never comes
    assert len(s) == 2
    s.expire(WINDOW + 1)
    assert len(s) == 0 and s.store == {}
    assert s.counters.expired_orphan_outcomes == 1 and s.counters.expired_unlabeled == 0


def test_duplicate_prediction_is_ignored():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 100))
    s.on_prediction(pred("e1", 100))
    assert len(s.on_outcome(outcome("e1", 100, 200)).labeled) == 2
    s.on_prediction(pred("e1", 100))  # redelivered after the join
    assert s.counters.duplicate_predictions == 2 and s.counters.predictions == 1


def test_max_entries_evicts_the_oldest_and_counts():
    s = JoinState(WINDOW, max_entries=3)
    for i in range(5):
        out = s.on_prediction(pred(f"e{i}", 100 + i))
    assert len(s) == 3 and sorted(s.pending()) == ["e2", "e3", "e4"]
    assert s.counters.evicted == 2 and [e["event_id"] for e in out.evicted] == ["e1"]


def test_state_in_a_store_survives_a_restart():
    store: dict = {}
    s = JoinState(WINDOW, store=store)
    s.on_prediction(pred("e1", 100))
    s.on_prediction(pred("e2", 200))
    s.on_outcome(outcome("e2", 200, 300))
    s.on_outcome(outcome("e3", 300, 310))
    restarted = JoinState(WINDOW, store=dict(store))
    assert len(restarted) == 3
    assert len(restarted.on_outcome(outcome("e1", 100, 900)).labeled) == 2
    assert restarted.on_outcome(outcome("e2", 200, 300)).labeled == []  # still deduplicated
    assert len(restarted.on_prediction(pred("e3", 300)).labeled) == 2
    restarted.expire(10_000)
    assert len(restarted) == 0


def test_expiry_with_grace_keeps_entries_longer():
    s = JoinState(WINDOW, grace_ms=500)
    s.on_prediction(pred("e1", 0))
    s.expire(WINDOW + 400)
    assert list(s.pending()) == ["e1"]
    s.expire(WINDOW + 501)
    assert list(s.pending()) == []


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        JoinState(0)


def test_an_outcome_far_in_the_future_does_not_expire_other_predictions():
    s = JoinState(WINDOW)
    s.on_prediction(pred("e1", 100))
    s.on_prediction(pred("e2", 200))
    assert s.on_outcome(outcome("e2", 200, 200 + 5 * WINDOW)).late  # late, reported
    s.expire()
    assert len(s.on_outcome(outcome("e1", 100, 900)).labeled) == 2
