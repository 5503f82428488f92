"""The scoring policy: one predict per model per batch, records match the Avro contract."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from precog.avro import Codec
from precog.errors import ModelError
from precog.scoring import (
    EventContext,
    dead_letter,
    make_model_set,
    prediction_documents,
    prediction_id,
    prediction_record,
    score_batch,
)

pytestmark = pytest.mark.unit

NAMES = ["a", "b", "c"]


@dataclass
class LinearScorer:
    """A tiny deterministic model: score = sigmoid(w . x); counts its predict calls."""

    model_id: str
    version: int
    features: list[str]
    weights: list[float]
    threshold: float = 0.5
    artifact_sha256: str = "0" * 64
    calls: list[int] = field(default_factory=list)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(len(X))
        assert X.shape[1] == len(self.features)
        return 1.0 / (1.0 + np.exp(-(X @ np.array(self.weights))))


def _models():
    leader = LinearScorer("lead", 2, ["a", "b", "c"], [1.0, -1.0, 0.5])
    challenger = LinearScorer("chal", 1, ["c", "a"], [2.0, 0.0], threshold=0.9)
    return leader, challenger, make_model_set(7, leader, [challenger], NAMES)


def test_one_predict_call_per_model_per_batch_with_its_own_columns():
    leader, challenger, models = _models()
    X = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 2.0]])
    scores = score_batch(models, X)
    assert leader.calls == [3] and challenger.calls == [3]
    expected_leader = 1 / (1 + np.exp(-(X @ np.array([1.0, -1.0, 0.5]))))
    expected_challenger = 1 / (1 + np.exp(-(X[:, [0]] * 0 + X[:, [2]] * 2.0).ravel()))
    np.testing.assert_array_equal(scores[0], expected_leader)
    np.testing.assert_array_equal(scores[1], expected_challenger)


def test_model_needing_unknown_feature_is_refused():
    bad = LinearScorer("bad", 1, ["zzz"], [1.0])
    with pytest.raises(ModelError, match="zzz"):
        make_model_set(1, bad, [], NAMES)


def _record(models, scores):
    return prediction_record(
        spec_name="transactions",
        event_id="e-42",
        entity_id="card-1",
        event_time=1_700_000_000_000,
        scored_time=1_700_000_000_500,
        models=models,
        scores=scores,
        feature_names=NAMES,
        values=[1.0, 2.0, 3.0],
        ages_ms=[0, 10, 20],
        origin=EventContext("prod.events.transactions", 3, 99),
        namespace="prod",
        event_schema="precog.events.Transaction/v1",
        code_version="abc123",
        worker="host:1",
    )


def test_prediction_record_round_trips_through_the_avro_contract():
    _, _, models = _models()
    rec = _record(models, [0.7, 0.8])
    codec = Codec.for_schema("prediction")
    assert codec.decode(codec.encode(rec)) == rec
    assert rec["leader"] == {
        "model_id": "lead", "version": 2, "role": "leader", "score": 0.7, "label": 1,
        "threshold": 0.5, "artifact_sha256": "0" * 64,
    }
    assert rec["challengers"][0]["label"] == 0  # 0.8 < its 0.9 threshold
    assert rec["prediction_id"] == prediction_id("transactions", "e-42")
    assert rec["provenance"]["offset"] == 99


def test_one_document_per_model_with_deterministic_ids():
    _, _, models = _models()
    rec = _record(models, [0.7, 0.8])
    docs = prediction_documents(rec, indexed_time=5)
    pid = rec["prediction_id"]
    assert [d[0] for d in docs] == [f"{pid}:lead:2", f"{pid}:chal:1"]
    leader_doc, challenger_doc = docs[0][1], docs[1][1]
    assert leader_doc["role"] == "leader" and challenger_doc["role"] == "challenger"
    assert challenger_doc["leader_model_id"] == "lead" and challenger_doc["leader_label"] == 1
    assert leader_doc["features"] == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert leader_doc["feature_ages_ms"] == {"a": 0, "b": 10, "c": 20}
    assert "namespace" not in leader_doc["provenance"] and leader_doc["namespace"] == "prod"
    assert prediction_documents(rec, indexed_time=5) == docs


def test_dead_letter_names_where_and_why():
    rec, headers = dead_letter(
        origin=EventContext("prod.events.transactions", 1, 7),
        stage="decode",
        error=ValueError("bad bytes"),
        key=b"k",
        payload=b"\x00",
        failed_time=3,
    )
    h = dict(headers)
    assert h["precog.source_topic"] == b"prod.events.transactions"
    assert h["precog.partition"] == b"1" and h["precog.offset"] == b"7"
    assert h["precog.error_class"] == b"ValueError" and h["precog.error_message"] == b"bad bytes"
    codec = Codec.for_schema("dead_letter")
    assert codec.decode(codec.encode(rec)) == rec
