"""The scoring policy: one predict per model per batch, records match the Avro contract."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest

from precog.avro import Codec
from precog.errors import ModelError
from precog.scoring import (
    DLQ_ERROR_KEEP,
    DLQ_KEY_KEEP,
    DLQ_MESSAGE_LIMIT,
    DLQ_PAYLOAD_KEEP,
    DLQ_RESERVED_BYTES,
    LONG_MAX,
    LONG_MIN,
    EventContext,
    dead_letter,
    make_model_set,
    prediction_document_sources,
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


def _record(models, scores, ages_ms=(0, 10, 20)):
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
        ages_ms=list(ages_ms),
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


def test_document_sources_are_the_documents_as_json():
    _, _, models = _models()
    rec = _record(models, [0.7, 0.8])
    rec["entity_id"] = 'card "7"\\ \u00e9'  # escaped in the shared part
    for amount in (None, "a"):
        docs = prediction_documents(rec, indexed_time=5, amount_feature=amount)
        sources = prediction_document_sources(rec, indexed_time=5, amount_feature=amount)
        assert [i for i, _ in sources] == [i for i, _ in docs]
        assert [orjson.loads(src) for _, src in sources] == [d for _, d in docs]
    assert orjson.loads(sources[1][1])["amount"] == 1.0


def test_document_sources_refuse_a_field_both_shared_and_per_model(monkeypatch):
    import precog.scoring as scoring

    _, _, models = _models()
    rec = _record(models, [0.7, 0.8])
    real = scoring.document_parts

    def overlapping(*args):
        common, per_model = real(*args)
        return {**common, "score": 0.0}, per_model

    monkeypatch.setattr(scoring, "document_parts", overlapping)
    with pytest.raises(ValueError, match="score"):
        prediction_document_sources(rec, 5)


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


def test_feature_ages_beyond_the_avro_long_range_are_clamped_and_encode():
    _, _, models = _models()
    rec = _record(models, [0.7, 0.8], ages_ms=(2**64, -(2**64) - 5, 7))
    assert [f["age_ms"] for f in rec["features"]] == [LONG_MAX, LONG_MIN, 7]
    codec = Codec.for_schema("prediction")
    assert codec.decode(codec.encode(rec)) == rec


def _dead(payload, key=b"k", error=None):
    return dead_letter(origin=EventContext("prod.events.transactions", 1, 7), stage="validate",
                       error=error or ValueError("bad"), key=key, payload=payload,
                       failed_time=3)


def test_dead_letter_keeps_a_payload_that_fits_whole_with_its_size_and_sha256():
    fits = bytes(range(256)) * ((DLQ_MESSAGE_LIMIT - DLQ_RESERVED_BYTES) // 256) + b"x" * 64
    assert len(fits) == DLQ_MESSAGE_LIMIT - DLQ_RESERVED_BYTES == 967_232
    rec, headers = _dead(fits)
    h = dict(headers)
    assert rec["payload"] == fits and "precog.truncated" not in h
    assert h["precog.payload_size"] == b"967232"
    assert h["precog.payload_sha256"] == hashlib.sha256(fits).hexdigest().encode()
    assert h["precog.key_size"] == b"1" and h["precog.key_sha256"] == (
        hashlib.sha256(b"k").hexdigest().encode())
    assert len(Codec.for_schema("dead_letter").encode(rec)) < DLQ_MESSAGE_LIMIT


def test_dead_letter_cuts_a_payload_one_byte_too_large_to_its_first_64_kib():
    big = bytes(range(256)) * 3779  # 967_424 bytes: over the limit less the reserve
    rec, headers = _dead(big)
    h = dict(headers)
    assert rec["payload"] == big[:DLQ_PAYLOAD_KEEP] and len(rec["payload"]) == 65_536
    assert h["precog.payload_size"] == b"967424" and h["precog.truncated"] == b"payload"
    assert h["precog.payload_sha256"] == hashlib.sha256(big).hexdigest().encode()


def test_dead_letter_cuts_a_long_key_and_error_message_and_stays_sendable():
    key = b"K" * 1_000_000
    error = ValueError("\u00e9" * 600_000 + "\udc80")  # 1.2 MB, a lone surrogate
    rec, headers = _dead(b"p" * 2_000_000, key=key, error=error)
    h = dict(headers)
    assert rec["key"] == key[:DLQ_KEY_KEEP] and h["precog.key_size"] == b"1000000"
    assert h["precog.key_sha256"] == hashlib.sha256(key).hexdigest().encode()
    message = rec["error_message"].encode()
    assert len(message) <= DLQ_ERROR_KEEP and h["precog.error_message"] == message
    assert rec["error_message"].endswith("\u00e9... [truncated, 1200006 bytes]")
    assert len(rec["error_message"]) == 2063 and len(message) == 4096  # 2033 é + 30-byte mark
    assert h["precog.truncated"] == b"payload,key,error_message"
    data = Codec.for_schema("dead_letter").encode(rec)
    size = len(data) + len(rec["key"]) + sum(len(k) + len(v) for k, v in headers)
    assert size == 76_240 and size < DLQ_MESSAGE_LIMIT


def test_dead_letter_never_has_an_empty_reason():
    rec, headers = _dead(None, key=None, error=EOFError())
    assert rec["error_message"] == "EOFError()" and dict(headers)["precog.error_message"] == (
        b"EOFError()")
    assert not any(k.startswith(("precog.payload_", "precog.key_")) for k, _ in headers)
