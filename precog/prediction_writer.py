"""Prediction records encoded straight from a scored batch's columns.

The score agent used to build one nested dict per event (:func:`precog.scoring.prediction_record`,
about 45 us) and hand it to fastavro (about 40 us): most of that is the same bytes every
time. In one batch the models, thresholds, artifact hashes, feature names, namespace, spec,
schemas, code version and worker do not change; only the ids, times, scores, labels,
feature values, one feature age per event and the offsets do. :class:`PredictionWriter`
writes the constant parts once per model set and per batch, and per event joins them with
the few variable pieces, which come from numpy columns (doubles as little-endian bytes,
longs as zig-zag varints computed for the whole column at once). The ``served`` part (v3)
is constant per traffic arm but for the served score, label and the entity's bucket.

The bytes are the Avro binary encoding of ``schemas/prediction.v3.avsc``, byte for byte what
fastavro writes for the record :func:`~precog.scoring.prediction_record` builds: the
schema and the downstream contract do not change. The writer is compiled for that one
schema (checked by fingerprint when it is made) and proves itself on a sample record
against the codec before first use; ``tests/unit/test_prediction_writer.py`` compares it
with fastavro on seeded and hostile batches.

>>> zigzag_varints(np.array([0, -1, 1, 63, -64, 64, 300]))
[b'\\x00', b'\\x01', b'\\x02', b'~', b'\\x7f', b'\\x80\\x01', b'\\xd8\\x04']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from precog.avro import Codec
from precog.errors import SchemaError
from precog.scoring import (
    LONG_MAX,
    PREDICTION_SCHEMA,
    EventContext,
    ModelSet,
    ScoringModel,
    prediction_id,
    prediction_record,
)

#: the schema this writer is compiled for; another version needs its own writer
PREDICTION_LABEL = PREDICTION_SCHEMA

#: up to this many rows (a REST request) the encoders go row by row: numpy's per-call setup
#: costs more than it saves there (one row: 201 -> 69 us to encode)
_JOIN_ROWS = 8
_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)  # the ten 7-bit groups of a 64-bit varint


def _varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Avro ``long`` bytes of an int column: an (n, 10) uint8 matrix and each row's length."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    z = ((v << 1) ^ (v >> 63)).astype(np.uint64)
    groups = ((z[:, None] >> _SHIFTS[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    # significant groups: 1 + index of the highest non-zero group (0 encodes as one byte)
    nonzero = groups != 0
    last = np.where(nonzero.any(axis=1), 9 - np.argmax(nonzero[:, ::-1], axis=1), 0)
    groups |= (np.arange(10)[None, :] < last[:, None]).astype(np.uint8) << 7
    return groups, last + 1


def zigzag_varints(values: np.ndarray) -> list[bytes]:
    """Avro ``long`` encoding (zig-zag, then base-128 varint) of every value of an int column."""
    if len(values) <= _JOIN_ROWS:
        return [_long(v) for v in np.asarray(values, dtype=np.int64).reshape(-1).tolist()]
    groups, lengths = _varint_matrix(values)
    buf = groups.tobytes()
    return [buf[10 * i: 10 * i + n] for i, n in enumerate(lengths.tolist())]


def _rows(columns: Sequence[bytes | np.ndarray], n: int) -> list[bytes]:
    """``n`` byte strings, row ``i`` the concatenation of every column's row ``i``.

    A column is constant ``bytes`` (the same in every row) or an (n, k) uint8 array.
    """
    if n == 0:
        return []
    if n <= _JOIN_ROWS:
        return [b"".join([c if isinstance(c, bytes) else c[i].tobytes() for c in columns])
                for i in range(n)]
    # adjacent constants as one block, each block copied into its columns of one matrix (a
    # broadcast view per constant and an hstack cost 0.2-0.4 ms of numpy set-up per batch)
    blocks: list[bytes | np.ndarray] = []
    for c in columns:
        if isinstance(c, bytes) and blocks and isinstance(blocks[-1], bytes):
            blocks[-1] += c
        else:
            blocks.append(c)
    width = sum(len(c) if isinstance(c, bytes) else c.shape[1] for c in blocks)
    matrix = np.empty((n, width), dtype=np.uint8)
    at = 0
    for c in blocks:
        if isinstance(c, bytes):
            k = len(c)
            matrix[:, at:at + k] = np.frombuffer(c, dtype=np.uint8)
        else:
            k = c.shape[1]
            matrix[:, at:at + k] = c
        at += k
    buf = matrix.tobytes()
    return [buf[width * i: width * (i + 1)] for i in range(n)]


def _doubles(column: np.ndarray) -> np.ndarray:
    """An (n,) float column as its (n, 8) little-endian bytes."""
    return np.ascontiguousarray(column, dtype="<f8").reshape(-1, 1).view(np.uint8)


def _long(n: int) -> bytes:
    """One Avro ``long`` (a Python int in the signed 64-bit range)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = [_long(i) for i in range(1024)]  # string lengths and partitions, looked up


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    n = len(raw)
    return (_SMALL[n] if n < 1024 else _long(n)) + raw


def _double(x: float) -> bytes:
    return np.array([x], dtype="<f8").tobytes()


@dataclass(frozen=True)
class BatchRows:
    """The variable part of a scored batch: one entry per event, in batch order.

    ``X`` holds the feature values (spec order); ``gaps_ms`` each event's feature age for
    the features ``stateful`` marks (the others have age 0), ``scores`` one array per model
    in ``models.all`` order, ``buckets`` each entity's traffic bucket
    (:meth:`precog.traffic.ArmPlan.buckets`; None: -1 for every row, shadow).
    """

    event_ids: Sequence[str]
    entity_ids: Sequence[str]
    event_times: np.ndarray
    X: np.ndarray
    gaps_ms: np.ndarray
    scores: Sequence[np.ndarray]
    origins: Sequence[EventContext]
    stateful: Sequence[bool]
    buckets: np.ndarray | None = None

    def bucket_column(self) -> np.ndarray:
        if self.buckets is None:
            return np.full(len(self.event_ids), -1, dtype=np.int64)
        return np.asarray(self.buckets, dtype=np.int64)


class PredictionWriter:
    """Encodes a batch's prediction records (single-object Avro) for one model set."""

    def __init__(
        self,
        codec: Codec,
        models: ModelSet,
        feature_names: Sequence[str],
        *,
        spec_name: str,
        namespace: str,
        event_schema: str,
        code_version: str,
        worker: str,
        channel: str = "stream",
    ) -> None:
        if codec.writer.label != PREDICTION_LABEL:
            raise SchemaError(f"the prediction writer is compiled for {PREDICTION_LABEL},"
                              f" the codec writes {codec.writer.label}")
        self.models = models
        self.spec_name = spec_name
        self._context = dict(spec_name=spec_name, namespace=namespace, event_schema=event_schema,
                             code_version=code_version, worker=worker, channel=channel)
        self._header = codec.encode_header()
        self._source = _string(spec_name)
        self._model_parts = [self._model_bytes(m) for m in models.all]
        n_ch = len(models.challengers)
        self._challengers_head = _long(n_ch) if n_ch else b""
        self._features_head = _long(len(feature_names)) if feature_names else b""
        self._names = [_string(n) for n in feature_names]
        self._prov_head = b"".join(_string(s) for s in (
            namespace, spec_name, event_schema, PREDICTION_LABEL, code_version))
        self._tail = _string(worker) + _string(channel)  # the provenance's last two fields
        plan = models.plan
        # per arm: union branch 1 (a Served record), policy, arm, decided_by
        self._served_heads = [
            b"\x02" + _string(plan.policy) + _string(name)
            + _string(models.all[k].model.model_id) + _long(int(models.all[k].model.version))
            for name, k in zip(plan.names, plan.model_index, strict=True)]
        self._topics: dict[str, bytes] = {}
        self._check_against(codec, feature_names)

    @staticmethod
    def _model_bytes(m: ScoringModel) -> tuple[bytes, float, bytes]:
        """(bytes before the score, threshold, bytes after the label) of one model."""
        role = 0 if m.role == "leader" else 1  # enum Role: ["leader", "challenger"]
        before = _string(m.model.model_id) + _long(int(m.model.version)) + _long(role)
        after = _double(float(m.model.threshold)) + _string(m.model.artifact_sha256)
        return before, float(m.model.threshold), after

    def _check_against(self, codec: Codec, feature_names: Sequence[str]) -> None:
        """Encode one sample record both ways; refuse to run if the bytes differ."""
        n = len(feature_names)
        rows = BatchRows(
            event_ids=["e-\u00e9"], entity_ids=["ent"], event_times=np.array([1_700_000_000_000]),
            X=np.linspace(-1.5, 2.5, n).reshape(1, n), gaps_ms=np.array([123_456]),
            scores=[np.array([0.25 + 0.1 * i]) for i in range(len(self.models.all))],
            origins=[EventContext("topic", 3, 2**40)], stateful=[j % 2 == 0 for j in range(n)],
            buckets=np.array([-1 if self.models.plan.policy == "shadow" else 9_999]),
        )
        mine = self.encode(rows, scored_time=1_700_000_000_500)[0]
        theirs = codec.encode(self.record(rows, 0, scored_time=1_700_000_000_500,
                                          feature_names=feature_names))
        if mine != theirs:  # pragma: no cover - a schema or fastavro change
            raise SchemaError("the compiled prediction writer disagrees with the codec;"
                              " the prediction schema changed without a new writer")

    def record(self, rows: BatchRows, i: int, *, scored_time: int,
               feature_names: Sequence[str]) -> dict[str, Any]:
        """Row ``i`` as the dict :func:`~precog.scoring.prediction_record` builds (for tests)."""
        return prediction_record(
            event_id=str(rows.event_ids[i]), entity_id=str(rows.entity_ids[i]),
            event_time=int(rows.event_times[i]), scored_time=scored_time, models=self.models,
            scores=[float(s[i]) for s in rows.scores], feature_names=feature_names,
            values=[float(x) for x in rows.X[i]],
            ages_ms=[int(rows.gaps_ms[i]) if s else 0 for s in rows.stateful],
            origin=rows.origins[i], bucket=int(rows.bucket_column()[i]), **self._context,
        )

    def encode(self, rows: BatchRows, scored_time: int) -> list[bytes | Exception]:
        """The encoded record of every row, or the exception that row raised (a bad string).

        A failure is per row: its neighbours are encoded as usual.
        """
        n = len(rows.event_ids)
        if n == 0:
            return []
        times = zigzag_varints(rows.event_times)
        offsets = zigzag_varints(np.array([o.offset for o in rows.origins], dtype=np.int64))
        scored = _long(int(scored_time))
        models = self._models_section(rows, n)
        features = self._features_section(rows, n)
        served = self._served_section(rows, n)
        topics = self._topics
        out: list[bytes | Exception] = []
        for i in range(n):
            try:
                eid = str(rows.event_ids[i])
                origin = rows.origins[i]
                topic = topics.get(origin.topic)
                if topic is None:
                    topic = topics[origin.topic] = _string(origin.topic)
                partition = int(origin.partition)
                out.append(b"".join((
                    self._header, _string(prediction_id(self.spec_name, eid)), _string(eid),
                    _string(str(rows.entity_ids[i])), self._source, times[i], scored,
                    models[i], features[i], self._prov_head, topic,
                    _SMALL[partition] if 0 <= partition < 1024 else _long(partition),
                    offsets[i], self._tail, served[i],
                )))
            except (ValueError, TypeError) as exc:  # e.g. a lone surrogate in an id
                out.append(exc)
        return out

    def _models_section(self, rows: BatchRows, n: int) -> list[bytes]:
        """Leader and challengers array of every row: fixed width, one numpy pass."""
        columns: list[bytes | np.ndarray] = []
        for m, ((before, threshold, after), s) in enumerate(
                zip(self._model_parts, rows.scores, strict=True)):
            if m == 1:
                columns.append(self._challengers_head)
            s = np.asarray(s, dtype=np.float64).reshape(-1)
            columns += (before, _doubles(s), ((s >= threshold).astype(np.uint8) << 1)[:, None],
                        after)
        columns.append(b"\x00")  # end of the challengers array
        return _rows(columns, n)

    def _served_section(self, rows: BatchRows, n: int) -> list[bytes]:
        """The ``served`` union of every row: rows grouped by arm, one numpy pass per arm."""
        plan = self.models.plan
        column = rows.bucket_column()
        arms = plan.arms_of(column)
        tails = zigzag_varints(column)
        out: list[bytes] = [b""] * n
        for a in np.unique(arms).tolist():
            idx = np.flatnonzero(arms == a)
            k = plan.model_index[a]
            s = np.asarray(rows.scores[k], dtype=np.float64).reshape(-1)[idx]
            threshold = self._model_parts[k][1]
            label = ((s >= threshold).astype(np.uint8) << 1)[:, None]
            columns: list[bytes | np.ndarray] = [self._served_heads[a], _doubles(s), label]
            for i, row in zip(idx.tolist(), _rows(columns, len(idx)), strict=True):
                out[i] = row + tails[i]
        return out

    def _features_section(self, rows: BatchRows, n: int) -> list[bytes]:
        """The features array of every row; rows grouped by the byte length of their age."""
        if not self._names:
            return [b"\x00"] * n
        X = np.asarray(rows.X, dtype=np.float64)
        if len(rows.stateful) != len(self._names):
            raise ValueError(f"{len(rows.stateful)} stateful flags for {len(self._names)} features")
        gaps, lengths = _varint_matrix(np.minimum(np.asarray(rows.gaps_ms, dtype=np.int64),
                                                  LONG_MAX))
        out: list[bytes] = [b""] * n
        for length in np.unique(lengths).tolist():
            idx = np.flatnonzero(lengths == length)
            age = gaps[idx, :length]
            columns: list[bytes | np.ndarray] = [self._features_head]
            for j, name in enumerate(self._names):
                columns += (name, _doubles(X[idx, j]), age if rows.stateful[j] else b"\x00")
            columns.append(b"\x00")
            for i, row in zip(idx.tolist(), _rows(columns, len(idx)), strict=True):
                out[i] = row
        return out
