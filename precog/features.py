"""Feature engine: pure (entity state, event) -> (feature vector, new state), in event time.

The same :class:`Featurizer` serves the score agent online (entity state in Redis, one
micro-batch at a time, see :meth:`Featurizer.featurize_batch`) and the training pipeline
offline (:func:`build_training_frame`), so online and offline features are bit-identical
for the same ordered event stream.

Definitions (all in *event* time, never the wall clock):

* decayed aggregates use exponential decay with the spec's ``horizon`` as **half-life**:
  an event ``dt`` milliseconds older than the current one weighs ``0.5 ** (dt / horizon)``;
* stateful features see only the entity's *earlier* events: the current event is added
  to the state after its features were computed;
* a feature's age is the event time minus the entity's previous event time (the newest
  state the value depends on); event-only features (value, log1p, equals, hour_of_day)
  and every feature of an entity's first event have age 0;
* an event older than the entity's last event (out of order) decays by 0: its gap is
  clamped to 0 and the state keeps the newer time.

>>> from precog.spec import SPEC_DIR, load_spec
>>> fz = Featurizer(load_spec(SPEC_DIR / "transactions.yaml"))
>>> ev = {"event_id": "e1", "card_id": "card-1", "merchant_id": "m1", "category": "fuel",
...       "amount": 40.0, "country": "DE", "channel": "pos", "event_time": 3_600_000}
>>> vec, state = fz.featurize(None, ev)
>>> dict(zip(fz.names, vec.values))["count_1h"], state.last_time
(0.0, 3600000)
>>> vec2, state2 = fz.featurize(state, {**ev, "event_id": "e2", "event_time": 7_200_000})
>>> dict(zip(fz.names, vec2.values))["count_1h"], vec2.ages_ms[fz.names.index("count_1h")]
(0.5, 3600000)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from precog.spec import (
    DecayedCountFeature,
    DecayedSumFeature,
    EqualsFeature,
    HourOfDayFeature,
    Log1pFeature,
    NoveltyFeature,
    PipelineSpec,
    RatioToMeanFeature,
    TimeSinceLastFeature,
    ValueFeature,
    parse_duration,
)

#: ``time_since_last`` of an entity's first event: one year, in seconds.
FIRST_EVENT_SECONDS = 365 * 86_400.0
_HOUR_MS = 3_600_000
_STATE_VERSION = 1


@dataclass
class EntityState:
    """What the feature engine remembers about one entity; JSON on the wire.

    ``counts`` and ``sums`` are decayed to ``last_time``; ``recent`` holds the most recent
    distinct values per novelty field (newest last); ``applied`` is the idempotency
    watermark: partition (as str) -> last applied Kafka offset.

    >>> s = EntityState(last_time=5, counts={"3600000": 1.5}, recent={"country": ["DE"]})
    >>> EntityState.from_bytes(s.to_bytes()) == s
    True
    >>> s.to_bytes()
    b'{"a":{},"c":{"3600000":1.5},"r":{"country":["DE"]},"s":{},"t":5,"v":1}'
    """

    last_time: int | None = None
    counts: dict[str, float] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    recent: dict[str, list[str]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Compact, deterministic JSON (sorted keys; floats round-trip exactly)."""
        doc = {
            "v": _STATE_VERSION,
            "t": self.last_time,
            "c": self.counts,
            "s": self.sums,
            "r": self.recent,
            "a": self.applied,
        }
        # orjson: same compact, sorted JSON; the states are read and written once per event
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityState:
        """Inverse of :meth:`to_bytes`."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:  # NaN/Infinity literals of the stdlib's json
            doc = json.loads(data)
        return cls(
            last_time=doc["t"],
            counts={k: float(v) for k, v in doc["c"].items()},
            sums={k: float(v) for k, v in doc["s"].items()},
            recent={k: list(v) for k, v in doc["r"].items()},
            applied={k: int(v) for k, v in doc["a"].items()},
        )


@dataclass(frozen=True)
class FeatureVector:
    """Feature values and their ages (ms), in the spec's feature order."""

    values: list[float]
    ages_ms: list[int]


@dataclass(frozen=True)
class TrainingFrame:
    """Features of a historic event stream, rows in (event time, event id) order."""

    X: np.ndarray
    names: list[str]
    event_ids: list[str]
    entity_ids: list[str]
    event_times: np.ndarray


def _number(event: Mapping[str, Any], name: str) -> float:
    """The field as float; NaN when it is missing."""
    v = event.get(name)
    return math.nan if v is None else float(v)


def _sum_key(field_name: str, horizon_ms: int) -> str:
    return f"{field_name}@{horizon_ms}"


@dataclass
class _Now:
    """The state's aggregates decayed to the current event's time (before adding it)."""

    counts: dict[str, float]
    sums: dict[str, float]
    gap_ms: int | None  # None for the entity's first event


class Featurizer:
    """Computes a spec's features from (entity state, event); holds no state itself."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.entity_field = spec.event.entity_field
        self.time_field = spec.event.time_field
        self.id_field = spec.event.id_field
        self._count_horizons: dict[str, int] = {}
        self._sum_fields: dict[str, tuple[str, int]] = {}
        self._novelty: dict[str, int] = {}
        self._plan = [(f, parse_duration(getattr(f, "horizon", 0))) for f in spec.features]
        for f in spec.features:
            if isinstance(f, DecayedCountFeature):
                h = parse_duration(f.horizon)
                self._count_horizons[str(h)] = h
            elif isinstance(f, DecayedSumFeature | RatioToMeanFeature):
                h = parse_duration(f.horizon)
                self._sum_fields[_sum_key(f.field, h)] = (f.field, h)
                if isinstance(f, RatioToMeanFeature):
                    self._count_horizons[str(h)] = h
            elif isinstance(f, NoveltyFeature):
                self._novelty[f.field] = max(f.capacity, self._novelty.get(f.field, 0))

    @property
    def names(self) -> list[str]:
        """Feature names in spec order."""
        return self.spec.feature_names

    def featurize(
        self, state: EntityState | None, event: Mapping[str, Any]
    ) -> tuple[FeatureVector, EntityState]:
        """Features of ``event`` given the entity's earlier events, and the state after it.

        Pure: ``state`` is not modified. The returned state carries ``state``'s watermark.
        """
        state = state or EntityState()
        t = int(event[self.time_field])
        now = self._decay(state, t)
        age = now.gap_ms or 0
        values: list[float] = []
        ages: list[int] = []
        for f, h in self._plan:
            value, stateful = self._feature(f, h, state, event, t, now)
            values.append(value)
            ages.append(age if stateful else 0)
        return FeatureVector(values, ages), self._advance(state, event, t, now)

    def featurize_batch(
        self,
        states: Mapping[str, EntityState | None],
        items: Sequence[tuple[Mapping[str, Any], int, int]],
    ) -> tuple[list[FeatureVector], dict[str, EntityState]]:
        """Featurize (event, partition, offset) items in order, chaining each entity's state.

        Returns one vector per item and the new states of the entities that changed.
        An item whose (partition, offset) the entity's watermark already covers (a Kafka
        redelivery) does not update the state again; its features are computed from the
        state as it is, which already contains the event, so they may differ from the
        first delivery's (the prediction id, derived from the event id, stays the same).
        """
        changed: dict[str, EntityState] = {}
        vectors: list[FeatureVector] = []
        for event, partition, offset in items:
            entity = str(event[self.entity_field])
            state = changed[entity] if entity in changed else states.get(entity)
            vector, new = self.featurize(state, event)
            vectors.append(vector)
            part = str(partition)
            if state is not None and state.applied.get(part, -1) >= offset:
                continue
            new.applied[part] = offset
            changed[entity] = new
        return vectors, changed

    def _decay(self, state: EntityState, t: int) -> _Now:
        if state.last_time is None:
            return _Now({}, {}, None)
        gap = max(0, t - state.last_time)
        factors = {h: 0.5 ** (gap / h) for h in {*self._count_horizons.values()}}
        for _, h in self._sum_fields.values():
            factors.setdefault(h, 0.5 ** (gap / h))
        counts = {k: state.counts.get(k, 0.0) * factors[h] for k, h in self._count_horizons.items()}
        sums = {k: state.sums.get(k, 0.0) * factors[h] for k, (_, h) in self._sum_fields.items()}
        return _Now(counts, sums, gap)

    def _feature(
        self, f: Any, h: int, state: EntityState, event: Mapping[str, Any], t: int, now: _Now
    ) -> tuple[float, bool]:
        """One feature's value and whether it depends on the entity state (``h``: horizon)."""
        if isinstance(f, ValueFeature):
            return _number(event, f.field), False
        if isinstance(f, Log1pFeature):
            return math.log1p(max(_number(event, f.field), 0.0)), False
        if isinstance(f, EqualsFeature):
            return (1.0 if str(event.get(f.field)) == f.value else 0.0), False
        if isinstance(f, HourOfDayFeature):
            return float((t // _HOUR_MS) % 24), False
        if isinstance(f, DecayedCountFeature):
            return now.counts.get(str(h), 0.0), True
        if isinstance(f, DecayedSumFeature):
            return now.sums.get(_sum_key(f.field, h), 0.0), True
        if isinstance(f, TimeSinceLastFeature):
            gap = now.gap_ms
            return (FIRST_EVENT_SECONDS if gap is None else gap / 1000.0), True
        if isinstance(f, RatioToMeanFeature):
            count = now.counts.get(str(h), 0.0)
            total = now.sums.get(_sum_key(f.field, h), 0.0)
            x = _number(event, f.field)
            return (x / (total / count) if count > 0.0 and total > 0.0 else 1.0), True
        if isinstance(f, NoveltyFeature):
            value = event.get(f.field)
            seen = state.recent.get(f.field, [])[-f.capacity :]
            return (0.0 if value is None or str(value) in seen else 1.0), True
        raise TypeError(f"unknown feature kind {f!r}")  # pragma: no cover - spec validates

    def _advance(
        self, state: EntityState, event: Mapping[str, Any], t: int, now: _Now
    ) -> EntityState:
        """The state after adding ``event``: aggregates decayed to the newest time, +1."""
        counts = {k: now.counts.get(k, 0.0) + 1.0 for k in self._count_horizons}
        sums = {}
        for k, (name, _) in self._sum_fields.items():
            x = _number(event, name)
            sums[k] = now.sums.get(k, 0.0) + (x if math.isfinite(x) else 0.0)
        recent = {k: list(v) for k, v in state.recent.items()}
        for name, capacity in self._novelty.items():
            value = event.get(name)
            if value is None:
                continue
            kept = [v for v in recent.get(name, []) if v != str(value)]
            kept.append(str(value))
            recent[name] = kept[-capacity:]
        last = t if state.last_time is None else max(state.last_time, t)
        return EntityState(last, counts, sums, recent, dict(state.applied))


def sort_key(spec: PipelineSpec) -> Any:
    """The offline order of events: (event time, event id)."""
    time_field, id_field = spec.event.time_field, spec.event.id_field
    return lambda e: (int(e[time_field]), str(e[id_field]))


def build_training_frame(spec: PipelineSpec, events: Iterable[Mapping[str, Any]]) -> TrainingFrame:
    """Features of historic events, computed per entity in (event time, event id) order.

    >>> from precog.spec import SPEC_DIR, load_spec
    >>> spec = load_spec(SPEC_DIR / "transactions.yaml")
    >>> ev = {"event_id": "e1", "card_id": "card-1", "merchant_id": "m1", "category": "fuel",
    ...       "amount": 40.0, "country": "DE", "channel": "pos", "event_time": 0}
    >>> frame = build_training_frame(spec, [{**ev, "event_id": "e2", "event_time": 60_000}, ev])
    >>> frame.X.shape, frame.event_ids, frame.X[1, frame.names.index("seconds_since_last")]
    ((2, 14), ['e1', 'e2'], np.float64(60.0))
    """
    fz = Featurizer(spec)
    ordered = sorted(events, key=sort_key(spec))
    states: dict[str, EntityState] = {}
    X = np.empty((len(ordered), len(fz.names)), dtype=np.float64)
    entity_ids: list[str] = []
    for i, event in enumerate(ordered):
        entity = str(event[fz.entity_field])
        vector, states[entity] = fz.featurize(states.get(entity), event)
        X[i] = vector.values
        entity_ids.append(entity)
    return TrainingFrame(
        X=X,
        names=list(fz.names),
        event_ids=[str(e[fz.id_field]) for e in ordered],
        entity_ids=entity_ids,
        event_times=np.array([int(e[fz.time_field]) for e in ordered], dtype=np.int64),
    )
