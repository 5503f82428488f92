"""Scoring policy: which models score a batch, and the records a scored event becomes.

Pure: no Kafka, Redis or Elasticsearch here. The score agent decodes, featurizes, calls
:func:`score_batch` and :func:`prediction_record`, and sends; the index agent turns each
prediction into documents with :func:`prediction_documents`.

>>> prediction_id("transactions", "e-1") == prediction_id("transactions", "e-1")
True
>>> len(prediction_id("transactions", "e-1"))
24
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Scorer(Protocol):
    """What the scoring path needs of a loaded model (see precog.models.LoadedModel)."""

    model_id: str
    version: int
    features: list[str]
    threshold: float
    artifact_sha256: str

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model plus the columns of the spec's feature vector it reads."""

    model: Scorer
    role: str
    columns: tuple[int, ...]

    @property
    def key(self) -> tuple[str, int]:
        return (self.model.model_id, self.model.version)


@dataclass(frozen=True)
class ModelSet:
    """The models that score one batch: exactly one leader, any number of challengers.

    A batch is always scored by one ModelSet, so every event has exactly one leader version;
    the worker swaps the whole set between batches when the roles change.
    """

    revision: int
    leader: ScoringModel
    challengers: tuple[ScoringModel, ...] = field(default_factory=tuple)

    @property
    def all(self) -> tuple[ScoringModel, ...]:
        return (self.leader, *self.challengers)

    def describe(self) -> str:
        parts = [f"leader {self.leader.model.model_id} v{self.leader.model.version}"]
        parts += [f"challenger {c.model.model_id} v{c.model.version}" for c in self.challengers]
        return f"revision {self.revision}: " + ", ".join(parts)


def columns_for(model_features: Sequence[str], feature_names: Sequence[str]) -> tuple[int, ...]:
    """Indices of a model's features in the spec's feature vector.

    >>> columns_for(["b", "d"], ["a", "b", "c", "d"])
    (1, 3)
    """
    position = {name: i for i, name in enumerate(feature_names)}
    missing = [f for f in model_features if f not in position]
    if missing:
        from precog.errors import ModelError

        raise ModelError(f"model needs features the spec does not compute: {missing}")
    return tuple(position[f] for f in model_features)


def make_model_set(
    revision: int,
    leader: Scorer,
    challengers: Sequence[Scorer],
    feature_names: Sequence[str],
) -> ModelSet:
    """Bind loaded models to the spec's feature order."""
    return ModelSet(
        revision=revision,
        leader=ScoringModel(leader, "leader", columns_for(leader.features, feature_names)),
        challengers=tuple(
            ScoringModel(c, "challenger", columns_for(c.features, feature_names))
            for c in challengers
        ),
    )


def score_batch(models: ModelSet, X: np.ndarray) -> list[np.ndarray]:
    """One ``predict_proba`` call per model for the whole batch, in ``models.all`` order."""
    return [
        np.asarray(m.model.predict_proba(X[:, m.columns]), dtype=np.float64) for m in models.all
    ]


def prediction_id(spec_name: str, event_id: str) -> str:
    """Deterministic prediction id: a redelivered event gets the same id."""
    return hashlib.blake2b(f"{spec_name}\x00{event_id}".encode(), digest_size=12).hexdigest()


def _model_score(m: ScoringModel, score: float) -> dict[str, Any]:
    return {
        "model_id": m.model.model_id,
        "version": int(m.model.version),
        "role": m.role,
        "score": float(score),
        "label": int(score >= m.model.threshold),
        "threshold": float(m.model.threshold),
        "artifact_sha256": m.model.artifact_sha256,
    }


@dataclass(frozen=True)
class EventContext:
    """Where an event came from: for provenance and dead letters."""

    topic: str
    partition: int
    offset: int


def prediction_record(
    *,
    spec_name: str,
    event_id: str,
    entity_id: str,
    event_time: int,
    scored_time: int,
    models: ModelSet,
    scores: Sequence[float],
    feature_names: Sequence[str],
    values: Sequence[float],
    ages_ms: Sequence[int],
    origin: EventContext,
    namespace: str,
    event_schema: str,
    code_version: str,
    worker: str,
) -> dict[str, Any]:
    """The prediction record (schemas/prediction.v1.avsc) of one scored event.

    ``scores`` are in ``models.all`` order (leader first).
    """
    leader, *challengers = models.all
    return {
        "prediction_id": prediction_id(spec_name, event_id),
        "event_id": event_id,
        "entity_id": entity_id,
        "source": spec_name,
        "event_time": int(event_time),
        "scored_time": int(scored_time),
        "leader": _model_score(leader, scores[0]),
        "challengers": [_model_score(m, s) for m, s in zip(challengers, scores[1:], strict=True)],
        "features": [
            {"name": n, "value": float(v), "age_ms": int(a)}
            for n, v, a in zip(feature_names, values, ages_ms, strict=True)
        ],
        "provenance": {
            "namespace": namespace,
            "spec": spec_name,
            "event_schema": event_schema,
            "prediction_schema": "precog.predictions.Prediction/v1",
            "code_version": code_version,
            "source_topic": origin.topic,
            "partition": int(origin.partition),
            "offset": int(origin.offset),
            "worker": worker,
        },
    }


def document_id(prediction: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    """Elasticsearch ``_id`` of one (event, model) document: redelivery overwrites it.

    >>> document_id({"prediction_id": "p1"}, {"model_id": "m", "version": 3})
    'p1:m:3'
    """
    return f"{prediction['prediction_id']}:{model['model_id']}:{model['version']}"


def prediction_documents(
    prediction: Mapping[str, Any], indexed_time: int, amount_feature: str = "amount"
) -> list[tuple[str, dict[str, Any]]]:
    """One ``{ns}-predictions`` document per model that scored the event (docs/documents.md)."""
    leader = prediction["leader"]
    features = {f["name"]: f["value"] for f in prediction["features"]}
    ages = {f["name"]: f["age_ms"] for f in prediction["features"]}
    prov = dict(prediction["provenance"])
    namespace = prov.pop("namespace")
    common: dict[str, Any] = {
        "prediction_id": prediction["prediction_id"],
        "event_id": prediction["event_id"],
        "entity_id": prediction["entity_id"],
        "source": prediction["source"],
        "namespace": namespace,
        "event_time": prediction["event_time"],
        "scored_time": prediction["scored_time"],
        "indexed_time": indexed_time,
        "leader_model_id": leader["model_id"],
        "leader_version": leader["version"],
        "leader_label": leader["label"],
        "features": features,
        "feature_ages_ms": ages,
        "provenance": prov,
    }
    if amount_feature in features:
        common["amount"] = features[amount_feature]
    docs = []
    for m in (leader, *prediction["challengers"]):
        doc = {
            **common,
            "model_id": m["model_id"],
            "model_version": m["version"],
            "role": m["role"],
            "score": m["score"],
            "label": m["label"],
            "threshold": m["threshold"],
            "artifact_sha256": m["artifact_sha256"],
        }
        docs.append((document_id(prediction, m), doc))
    return docs


def dead_letter(
    *,
    origin: EventContext,
    stage: str,
    error: BaseException,
    key: bytes | None,
    payload: bytes | None,
    failed_time: int,
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The dead-letter record (schemas/dead_letter.v1.avsc) and its Kafka headers."""
    record: dict[str, Any] = {
        "source_topic": origin.topic,
        "partition": int(origin.partition),
        "offset": int(origin.offset),
        "stage": stage,
        "error_class": type(error).__name__,
        "error_message": str(error)[:2000],
        "failed_time": int(failed_time),
        "key": key,
        "payload": payload,
    }
    error_class, error_message = record["error_class"], record["error_message"]
    headers = [
        ("precog.source_topic", origin.topic.encode()),
        ("precog.partition", str(origin.partition).encode()),
        ("precog.offset", str(origin.offset).encode()),
        ("precog.stage", stage.encode()),
        ("precog.error_class", error_class.encode()),
        ("precog.error_message", error_message.encode()),
    ]
    return record, headers
