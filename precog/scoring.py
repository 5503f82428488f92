"""Scoring policy: which models score a batch, and the records a scored event becomes.

(Over 400 lines: the prediction record, its served decision, its documents and the dead
letter of an event that does not become one are the one contract of the scoring path.)

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
import orjson

from precog.roles import ModelRef, Traffic
from precog.traffic import ArmPlan


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
    #: whose decision is served for each event (precog.traffic); shadow: the leader's
    plan: ArmPlan = field(default_factory=ArmPlan.shadow)

    @property
    def all(self) -> tuple[ScoringModel, ...]:
        return (self.leader, *self.challengers)

    def describe(self) -> str:
        parts = [f"leader {self.leader.model.model_id} v{self.leader.model.version}"]
        parts += [f"challenger {c.model.model_id} v{c.model.version}" for c in self.challengers]
        plan = self.plan
        if plan.policy != "shadow":
            parts.append(f"traffic {plan.policy} " + ", ".join(
                f"{n}={m}" for n, m in zip(plan.names, plan.models, strict=True)))
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
    traffic: Traffic | None = None,
    salt: str = "",
) -> ModelSet:
    """Bind loaded models to the spec's feature order, and the traffic split to them.

    A split naming a model that is not among them (a challenger refused at load) is not
    applied: the set serves shadow (:attr:`ModelSet.plan` says which).
    """
    refs = [ModelRef(m.model_id, int(m.version)) for m in (leader, *challengers)]
    try:
        plan = ArmPlan.of(traffic, refs, salt)
    except KeyError:
        plan = ArmPlan.shadow(refs[0])
    return ModelSet(
        revision=revision,
        leader=ScoringModel(leader, "leader", columns_for(leader.features, feature_names)),
        challengers=tuple(
            ScoringModel(c, "challenger", columns_for(c.features, feature_names))
            for c in challengers
        ),
        plan=plan,
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


#: The prediction schema records are written with (schemas/prediction.v3.avsc).
PREDICTION_SCHEMA = "precog.predictions.Prediction/v3"

#: The Avro ``long`` range: a feature age outside it is clamped, so encode never overflows.
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


def clamp_long(value: int) -> int:
    """``value`` clamped to the Avro ``long`` range.

    >>> clamp_long(2**70) == LONG_MAX, clamp_long(-(2**64)) == LONG_MIN, clamp_long(5)
    (True, True, 5)
    """
    return max(LONG_MIN, min(LONG_MAX, value))


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
    channel: str = "stream",
    bucket: int = -1,
) -> dict[str, Any]:
    """The prediction record (schemas/prediction.v3.avsc) of one scored event.

    ``scores`` are in ``models.all`` order (leader first). Feature ages are clamped to the
    Avro ``long`` range (validation bounds event times, so this is only a guard).
    ``bucket`` is the entity's traffic bucket (:func:`precog.traffic.bucket`; -1 under
    shadow): it chooses the arm, whose model's decision is ``served``.
    """
    leader, *challengers = models.all
    plan = models.plan
    arm = int(plan.arms_of(np.array([bucket]))[0])
    k = plan.model_index[arm]
    decider = models.all[k]
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
            {"name": n, "value": float(v), "age_ms": clamp_long(int(a))}
            for n, v, a in zip(feature_names, values, ages_ms, strict=True)
        ],
        "provenance": {
            "namespace": namespace,
            "spec": spec_name,
            "event_schema": event_schema,
            "prediction_schema": PREDICTION_SCHEMA,
            "code_version": code_version,
            "source_topic": origin.topic,
            "partition": int(origin.partition),
            "offset": int(origin.offset),
            "worker": worker,
            "channel": channel,
        },
        "served": {
            "policy": plan.policy,
            "arm": plan.names[arm],
            "decided_by": {"model_id": decider.model.model_id,
                           "version": int(decider.model.version)},
            "score": float(scores[k]),
            "label": int(scores[k] >= decider.model.threshold),
            "bucket": int(bucket),
        },
    }


def served_of(prediction: Mapping[str, Any]) -> dict[str, Any]:
    """The record's ``served`` part; for a record before v3 (null), the leader's decision.

    >>> served_of({"leader": {"model_id": "m", "version": 2, "score": 0.7, "label": 1},
    ...            "served": None})["decided_by"]
    {'model_id': 'm', 'version': 2}
    """
    served = prediction.get("served")
    if served is not None:
        return dict(served)
    leader = prediction["leader"]
    return {"policy": "shadow", "arm": "leader",
            "decided_by": {"model_id": leader["model_id"], "version": int(leader["version"])},
            "score": float(leader["score"]), "label": int(leader["label"]), "bucket": -1}


def document_id(prediction: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    """Elasticsearch ``_id`` of one (event, model) document: redelivery overwrites it.

    >>> document_id({"prediction_id": "p1"}, {"model_id": "m", "version": 3})
    'p1:m:3'
    """
    return f"{prediction['prediction_id']}:{model['model_id']}:{model['version']}"


def document_parts(
    prediction: Mapping[str, Any], indexed_time: int, amount_feature: str | None = None
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The ``{ns}-predictions`` documents of one event as the fields every one of them shares
    and, per model that scored the event, its ``_id`` and its own fields (docs/documents.md).

    The one place a document's fields are chosen: :func:`prediction_documents` merges the
    two, :func:`prediction_document_sources` serializes the shared part once per event. A
    field added to the prediction record goes into ``common`` (per event) or the model
    fields (per model) here, and both writers carry it; the two parts never share a key.
    ``amount_feature`` (the spec's ``business.amount_feature``) names the feature copied
    into the document's ``amount``, the business amount the dashboards sum.
    """
    leader = prediction["leader"]
    served = served_of(prediction)
    decider = (served["decided_by"]["model_id"], served["decided_by"]["version"])
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
        "policy": served["policy"],
        "arm": served["arm"],
        "served_model_id": served["decided_by"]["model_id"],
        "served_version": served["decided_by"]["version"],
        "served_label": served["label"],
        "features": features,
        "feature_ages_ms": ages,
        "provenance": prov,
    }
    if amount_feature is not None and amount_feature in features:
        common["amount"] = features[amount_feature]
    per_model = [(document_id(prediction, m), {
        "model_id": m["model_id"],
        "model_version": m["version"],
        "role": m["role"],
        "score": m["score"],
        "label": m["label"],
        "threshold": m["threshold"],
        "artifact_sha256": m["artifact_sha256"],
        "served": (m["model_id"], m["version"]) == decider,
    }) for m in (leader, *prediction["challengers"])]
    return common, per_model


def prediction_documents(
    prediction: Mapping[str, Any], indexed_time: int, amount_feature: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """One ``{ns}-predictions`` document per model that scored the event (docs/documents.md)."""
    common, per_model = document_parts(prediction, indexed_time, amount_feature)
    return [(doc_id, {**common, **own}) for doc_id, own in per_model]


def prediction_document_sources(
    prediction: Mapping[str, Any], indexed_time: int, amount_feature: str | None = None
) -> list[tuple[str, bytes]]:
    """:func:`prediction_documents` as JSON (orjson), the shared fields serialized once.

    Each source is the JSON object of the same document (``orjson.loads`` gives
    :func:`prediction_documents`' dict): the shared part's object with the model's fields
    spliced in before its closing brace, so the features, their ages and the provenance are
    serialized once per event instead of once per model (the index agent's bulk body).
    """
    common, per_model = document_parts(prediction, indexed_time, amount_feature)
    head = orjson.dumps(common)[:-1] + b","
    out = []
    for doc_id, own in per_model:
        if not common.keys().isdisjoint(own):
            raise ValueError(f"document fields both shared and per model: "
                             f"{sorted(common.keys() & own.keys())}")
        out.append((doc_id, head + orjson.dumps(own)[1:]))
    return out


#: Kafka's default ``message.max.bytes`` (broker and librdkafka): every dead letter fits.
DLQ_MESSAGE_LIMIT = 1_000_000
#: Room kept below the limit for the Kafka key, headers, framing and the small fields.
DLQ_RESERVED_BYTES = 32 * 1024
#: A payload that does not fit keeps this many leading bytes (plus its size and sha256).
DLQ_PAYLOAD_KEEP = 64 * 1024
#: The longest key and error message a dead letter carries (UTF-8 bytes).
DLQ_KEY_KEEP = 1024
DLQ_ERROR_KEEP = 4 * 1024


def encoded_fits(n_bytes: int, limit: int = DLQ_MESSAGE_LIMIT,
                 reserved: int = DLQ_RESERVED_BYTES) -> bool:
    """Whether ``n_bytes`` of payload still leave ``reserved`` bytes under ``limit``.

    >>> encoded_fits(900_000), encoded_fits(1_000_000), encoded_fits(0, limit=100, reserved=100)
    (True, False, True)
    """
    return n_bytes + reserved <= limit


def _cut_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` as valid UTF-8 of at most ``limit`` bytes, and whether it had to be cut.

    >>> _cut_text("short", 10), _cut_text("a" * 40, 30)
    (('short', False), ('aaaaa... [truncated, 40 bytes]', True))
    """
    raw = text.encode("utf-8", "backslashreplace")  # lone surrogates would not encode
    if len(raw) <= limit:
        return raw.decode("utf-8"), False
    mark = f"... [truncated, {len(raw)} bytes]"
    return raw[: max(limit - len(mark), 0)].decode("utf-8", "ignore") + mark, True


def _digest_headers(name: str, data: bytes) -> list[tuple[str, bytes]]:
    return [
        (f"precog.{name}_size", str(len(data)).encode()),
        (f"precog.{name}_sha256", hashlib.sha256(data).hexdigest().encode()),
    ]


def dead_letter(
    *,
    origin: EventContext,
    stage: str,
    error: BaseException,
    key: bytes | None,
    payload: bytes | None,
    failed_time: int,
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The dead-letter record (schemas/dead_letter.v1.avsc) and its Kafka headers.

    Always sendable under :data:`DLQ_MESSAGE_LIMIT`: the error message is cut to
    :data:`DLQ_ERROR_KEEP` bytes and the key to :data:`DLQ_KEY_KEEP`; a payload that would
    not fit keeps its first :data:`DLQ_PAYLOAD_KEEP` bytes. The headers always carry the
    original size and sha256 of the payload and the key (``precog.payload_size``,
    ``precog.payload_sha256``, ``precog.key_size``, ``precog.key_sha256``) and, when
    something was cut, ``precog.truncated`` names it (e.g. ``payload,key``). Send the
    record's ``key`` as the Kafka key, not the original one.

    >>> origin = EventContext("prod.events.transactions", 0, 5)
    >>> rec, headers = dead_letter(origin=origin, stage="decode", error=ValueError("x"),
    ...                            key=b"k", payload=bytes(2_000_000), failed_time=1)
    >>> len(rec["payload"]), dict(headers)["precog.payload_size"], dict(headers)["precog.truncated"]
    (65536, b'2000000', b'payload')
    """
    message, message_cut = _cut_text(str(error) or repr(error), DLQ_ERROR_KEEP)
    truncated: list[str] = []
    headers = [
        ("precog.source_topic", origin.topic.encode()),
        ("precog.partition", str(origin.partition).encode()),
        ("precog.offset", str(origin.offset).encode()),
        ("precog.stage", stage.encode()),
        ("precog.error_class", type(error).__name__.encode()),
        ("precog.error_message", message.encode()),
    ]
    kept_payload = payload
    if payload is not None:
        headers += _digest_headers("payload", payload)
        if not encoded_fits(len(payload)):
            kept_payload = payload[:DLQ_PAYLOAD_KEEP]
            truncated.append("payload")
    kept_key = key
    if key is not None:
        headers += _digest_headers("key", key)
        if len(key) > DLQ_KEY_KEEP:
            kept_key = key[:DLQ_KEY_KEEP]
            truncated.append("key")
    if message_cut:
        truncated.append("error_message")
    if truncated:
        headers.append(("precog.truncated", ",".join(truncated).encode()))
    record: dict[str, Any] = {
        "source_topic": origin.topic,
        "partition": int(origin.partition),
        "offset": int(origin.offset),
        "stage": stage,
        "error_class": type(error).__name__,
        "error_message": message,
        "failed_time": int(failed_time),
        "key": kept_key,
        "payload": kept_payload,
    }
    return record, headers
