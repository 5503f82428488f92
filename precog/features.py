"""Feature engine: pure (entity state, event) -> (feature vector, new state), in event time.

(Over 400 lines: the per-event definition, the plan compiled from it for batches and the
offline frame must stay side by side; their bit-for-bit parity is the module's contract.)

The same :class:`Featurizer` serves the score agent online (entity state in Redis, one
micro-batch at a time, see :meth:`Featurizer.featurize_columns`) and the training pipeline
offline (:func:`build_training_frame`) through the same code, so online and offline
features are bit-identical for the same ordered event stream.

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
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
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
#: The partition of an item that did not come from a topic (``precog serve``): it is recorded
#: in the state by its event id (:attr:`EntityState.direct`), not by an offset.
DIRECT_PARTITION = -1
#: How many ids of such events an entity's state remembers (newest last).
DIRECT_IDS_KEPT = 64
#: How many ids of the events applied off a topic an entity's state remembers (newest
#: last), so that ``precog serve`` does not apply such an event again.
STREAMED_IDS_KEPT = 8


@dataclass(slots=True)
class EntityState:
    """What the feature engine remembers about one entity; JSON on the wire.

    ``counts`` and ``sums`` are decayed to ``last_time``; ``recent`` holds the most recent
    distinct values per novelty field (newest last); ``applied`` is the idempotency
    watermark: partition (as str) -> last applied Kafka offset; ``direct`` the ids of the
    last :data:`DIRECT_IDS_KEPT` events applied off the topic (``precog serve``), so that
    the same event arriving on the topic later is not applied again; ``streamed`` the ids of
    the last :data:`STREAMED_IDS_KEPT` events applied off a topic, so that the same event
    sent to ``precog serve`` later is not applied again. Each is written only when it is
    not empty.

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
    direct: list[str] = field(default_factory=list)
    streamed: list[str] = field(default_factory=list)

    def holds(self, event_id: str) -> bool:
        """Whether the event is known to be in this state (by its id, from either channel).

        >>> EntityState(direct=["r1"], streamed=["s1"]).holds("s1")
        True
        """
        return event_id in self.direct or event_id in self.streamed

    def to_bytes(self) -> bytes:
        """Compact, deterministic JSON (sorted keys; floats round-trip exactly)."""
        doc: dict[str, Any] = {
            "v": _STATE_VERSION,
            "t": self.last_time,
            "c": self.counts,
            "s": self.sums,
            "r": self.recent,
            "a": self.applied,
        }
        if self.direct:
            doc["e"] = self.direct
        if self.streamed:
            doc["i"] = self.streamed
        # orjson: same compact, sorted JSON; the states are read and written once per event
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityState:
        """Inverse of :meth:`to_bytes`."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:  # NaN/Infinity literals of the stdlib's json
            return cls._converted(json.loads(data))
        # what to_bytes wrote comes back typed (its floats as floats: orjson writes 1.0 as
        # "1.0") in objects nothing else holds, so they are the state's own
        c, s, a = doc["c"], doc["s"], doc["a"]
        if (all(type(v) is float for v in c.values())
                and all(type(v) is float for v in s.values())
                and all(type(v) is int for v in a.values())):
            return cls(doc["t"], c, s, doc["r"], a, doc.get("e", []), doc.get("i", []))
        return cls._converted(doc)

    @classmethod
    def _converted(cls, doc: dict[str, Any]) -> EntityState:
        """A state from a decoded document whose numbers may not be typed as written
        (another writer's JSON, the stdlib's NaN literals)."""
        return cls(
            last_time=doc["t"],
            counts={k: float(v) for k, v in doc["c"].items()},
            sums={k: float(v) for k, v in doc["s"].items()},
            recent={k: list(v) for k, v in doc["r"].items()},
            applied={k: int(v) for k, v in doc["a"].items()},
            direct=[str(e) for e in doc.get("e", ())],
            streamed=[str(e) for e in doc.get("i", ())],
        )


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True)
class FeatureColumns:
    """A batch's features as columns (:meth:`Featurizer.featurize_columns`).

    ``X[i, j]`` is feature ``j`` (spec order) of item ``i``. Its age is ``gaps_ms[i]`` (the
    event time minus the entity's previous event time, 0 for its first event) when
    ``stateful[j]``, else 0: :meth:`ages_ms`. ``changed`` holds the new states of the
    entities whose state moved (write those back).
    """

    X: np.ndarray
    gaps_ms: np.ndarray
    stateful: tuple[bool, ...]
    changed: dict[str, EntityState]

    def ages_ms(self) -> np.ndarray:
        """The features' ages (ms), an int64 matrix shaped like ``X``."""
        return _ages(self.stateful, self.gaps_ms)


def _ages(stateful: tuple[bool, ...], gaps_ms: np.ndarray) -> np.ndarray:
    """Per row and feature: the row's gap where the feature is stateful, else 0 (int64)."""
    return np.where(np.array(stateful, dtype=bool), gaps_ms[:, None], 0).astype(np.int64)


def _numbers(events: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    """The field of each event as float; NaN where it is missing."""
    return [math.nan if (v := e.get(name)) is None else float(v) for e in events]


def _strings(events: Sequence[Mapping[str, Any]], name: str) -> list[str | None]:
    """The field of each event as str; None where it is missing."""
    return [None if (v := e.get(name)) is None else str(v) for e in events]


def _transpose(seqs: Sequence[Sequence[Any]], n: int) -> list[tuple[Any, ...]]:
    """The transpose of ``seqs``, each ``n`` long (``n`` empty tuples when there are none)."""
    return list(zip(*seqs, strict=False)) if seqs else [()] * n  # equal lengths: built so


def _deinterleave(flat: list[float], width: int) -> list[list[float]]:
    """The ``width`` columns of rows laid out one after the other in ``flat``.

    >>> _deinterleave([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2)
    [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]
    """
    return [flat[k::width] for k in range(width)]


def _sum_key(field_name: str, horizon_ms: int) -> str:
    return f"{field_name}@{horizon_ms}"


@dataclass(slots=True)
class _Working:
    """One entity's state while a batch runs: the aggregates as lists in the plan's order.

    ``recent`` and ``applied`` are this object's own dicts (a novelty list is replaced when
    it changes, never changed in place: it may be the given state's); ``stored`` says whether
    the entity has a state (only then does the watermark apply); ``direct`` is replaced, never
    changed in place, like a novelty list; ``streamed`` is this object's own list.
    """

    last: int | None
    aggregates: Sequence[float]  # the counts, then the sums
    recent: dict[str, list[str]]
    applied: dict[str, int]
    stored: bool
    direct: list[str] = field(default_factory=list)
    streamed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Batch:
    """What the feature columns are read from: the events' fields and the chain's outputs."""

    events: Sequence[Mapping[str, Any]]
    times: list[int]
    numbers: dict[str, list[float]]
    gaps: list[int | None]  # None: the entity's first event
    aggregates: list[list[float]]  # per count key, then sum key: decayed, before each event
    novelty: list[list[float]]  # per novelty feature: its values


_Column = Callable[[_Batch], Sequence[float]]


class Featurizer:
    """Computes a spec's features from (entity state, event); holds no state itself.

    The spec is compiled once into a plan: the state's aggregates become lists indexed by
    position, and each feature one function from the batch to its column, so nothing per
    event looks at a feature's kind.
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.entity_field = spec.event.entity_field
        self.time_field = spec.event.time_field
        self.id_field = spec.event.id_field
        counts: dict[str, int] = {}  # key -> horizon (ms)
        sums: dict[str, tuple[str, int]] = {}  # key -> (field, horizon)
        keep: dict[str, int] = {}  # novelty field -> the largest capacity
        for f in spec.features:
            if isinstance(f, DecayedCountFeature | RatioToMeanFeature):
                counts.setdefault(str(parse_duration(f.horizon)), parse_duration(f.horizon))
            if isinstance(f, DecayedSumFeature | RatioToMeanFeature):
                h = parse_duration(f.horizon)
                sums.setdefault(_sum_key(f.field, h), (f.field, h))
            if isinstance(f, NoveltyFeature):
                keep[f.field] = max(f.capacity, keep.get(f.field, 0))
        self._count_keys = list(counts)
        self._sum_keys = list(sums)
        # the aggregates of a working state: the counts, then the sums (their half-lives)
        self._horizons = [*counts.values(), *(h for _, h in sums.values())]
        self._no_counts, self._no_sums = (0.0,) * len(counts), (0.0,) * len(sums)
        self._n_counts = len(counts)
        self._sum_fields = list(dict.fromkeys(name for name, _ in sums.values()))
        self._sum_x = [self._sum_fields.index(name) for name, _ in sums.values()]
        self._novelty_fields = list(keep)
        self._novelty_keep = [(name, k, keep[name]) for k, name in enumerate(keep)]
        novelty = [f for f in spec.features if isinstance(f, NoveltyFeature)]
        self._novelty_names = [f.name for f in novelty]
        # per novelty feature: (field, the field's position in _novelty_fields, capacity)
        self._novelty_reads = [(f.field, self._novelty_fields.index(f.field), f.capacity)
                               for f in novelty]
        self._number_fields = list(dict.fromkeys(
            [f.field for f in spec.features
             if isinstance(f, ValueFeature | Log1pFeature | RatioToMeanFeature)]
            + self._sum_fields
        ))
        plan = [self._column(f) for f in spec.features]
        self._columns = [column for column, _ in plan]
        #: per feature: whether its age is the gap since the entity's previous event
        self.stateful = tuple(stateful for _, stateful in plan)

    @property
    def names(self) -> list[str]:
        """Feature names in spec order."""
        return self.spec.feature_names

    def _column(self, f: Any) -> tuple[_Column, bool]:
        """How to compute one feature's column from a batch, and whether it is stateful."""
        if isinstance(f, ValueFeature):
            name = f.field
            return (lambda b: b.numbers[name]), False
        if isinstance(f, Log1pFeature):
            name = f.field
            return (lambda b: [math.log1p(max(x, 0.0)) for x in b.numbers[name]]), False
        if isinstance(f, EqualsFeature):
            name, value = f.field, f.value
            return (lambda b: [1.0 if str(e.get(name)) == value else 0.0
                               for e in b.events]), False
        if isinstance(f, HourOfDayFeature):
            return (lambda b: [float((t // _HOUR_MS) % 24) for t in b.times]), False
        if isinstance(f, DecayedCountFeature):
            c = self._count_keys.index(str(parse_duration(f.horizon)))
            return (lambda b: b.aggregates[c]), True
        if isinstance(f, DecayedSumFeature):
            s = len(self._count_keys) + self._sum_keys.index(
                _sum_key(f.field, parse_duration(f.horizon)))
            return (lambda b: b.aggregates[s]), True
        if isinstance(f, TimeSinceLastFeature):
            return (lambda b: [FIRST_EVENT_SECONDS if gap is None else gap / 1000.0
                               for gap in b.gaps]), True
        if isinstance(f, RatioToMeanFeature):
            name, h = f.field, parse_duration(f.horizon)
            c = self._count_keys.index(str(h))
            s = len(self._count_keys) + self._sum_keys.index(_sum_key(name, h))
            return (lambda b: [
                x / (total / count) if count > 0.0 and total > 0.0 else 1.0
                for x, count, total in zip(b.numbers[name], b.aggregates[c], b.aggregates[s],
                                           strict=True)
            ]), True
        if isinstance(f, NoveltyFeature):
            k = self._novelty_names.index(f.name)
            return (lambda b: b.novelty[k]), True
        raise TypeError(f"unknown feature kind {f!r}")  # pragma: no cover - spec validates

    def featurize(
        self, state: EntityState | None, event: Mapping[str, Any]
    ) -> tuple[FeatureVector, EntityState]:
        """Features of ``event`` given the entity's earlier events, and the state after it.

        Pure: ``state`` is not modified. The returned state carries ``state``'s watermark.
        """
        entity = str(event[self.entity_field])
        b, moved = self._run({entity: state}, [(event, 0, 0)], watermark=False)
        gap = b.gaps[0] or 0
        vector = FeatureVector([column(b)[0] for column in self._columns],
                               [gap if stateful else 0 for stateful in self.stateful])
        return vector, self._stored(moved[entity])

    def featurize_batch(
        self,
        states: Mapping[str, EntityState | None],
        items: Sequence[tuple[Mapping[str, Any], int, int]],
    ) -> tuple[list[FeatureVector], dict[str, EntityState]]:
        """:meth:`featurize_columns` as one :class:`FeatureVector` per item, and the new states.

        Same semantics (chaining, watermark, redeliveries) and values (``X``'s rows), built
        from the same columns without going through an array.
        """
        b, moved = self._run(states, items, watermark=True)
        rows = zip(*[column(b) for column in self._columns], strict=True)
        ages = _ages(self.stateful, self._gaps(b)).tolist()
        vectors = list(map(FeatureVector, map(list, rows), ages))
        return vectors, self._changed(moved)

    def featurize_columns(
        self,
        states: Mapping[str, EntityState | None],
        items: Sequence[tuple[Mapping[str, Any], int, int]],
    ) -> FeatureColumns:
        """Featurize (event, partition, offset) items in order, chaining each entity's state.

        Returns the items' features as columns and the new states of the entities that
        changed. An item whose (partition, offset) the entity's watermark already covers (a
        Kafka redelivery) does not update the state again; its features are computed from the
        state as it is, which already contains the event, so they may differ from the first
        delivery's (the prediction id, derived from the event id, stays the same).

        An item with partition :data:`DIRECT_PARTITION` (an event scored by ``precog serve``)
        is recorded by its event id instead (:attr:`EntityState.direct`), and a topic's item
        by its event id too (:attr:`EntityState.streamed`), besides the watermark: an item
        whose event id the entity's state holds (:meth:`EntityState.holds`) does not update
        the state, in either order; so neither does a topic's item whose event id its entity
        applied at another offset (a producer's re-send) among its last
        :data:`STREAMED_IDS_KEPT` events off the topic.
        """
        return self._featurize_columns(states, items, watermark=True)

    def _featurize_columns(
        self,
        states: Mapping[str, EntityState | None],
        items: Sequence[tuple[Mapping[str, Any], int, int]],
        watermark: bool,
    ) -> FeatureColumns:
        """:meth:`featurize_columns`; without ``watermark`` every item moves its entity."""
        b, moved = self._run(states, items, watermark)
        n = len(items)
        X = np.ascontiguousarray(np.array(
            [np.fromiter(column(b), np.float64, n) for column in self._columns],
            dtype=np.float64,
        ).reshape(len(self._columns), n).T)
        return FeatureColumns(X, self._gaps(b), self.stateful, self._changed(moved))

    def _gaps(self, b: _Batch) -> np.ndarray:
        return np.array([gap or 0 for gap in b.gaps], dtype=np.int64)

    def _changed(self, moved: Mapping[str, _Working]) -> dict[str, EntityState]:
        return {entity: self._stored(w) for entity, w in moved.items()}

    def _run(
        self,
        states: Mapping[str, EntityState | None],
        items: Sequence[tuple[Mapping[str, Any], int, int]],
        watermark: bool,
    ) -> tuple[_Batch, dict[str, _Working]]:
        """The batch the columns are read from, and the entities whose state moved."""
        events = [event for event, _, _ in items]
        b = _Batch(events, [int(e[self.time_field]) for e in events],
                   {name: _numbers(events, name) for name in self._number_fields}, [], [], [])
        return b, self._chain(states, items, watermark, b)

    def _chain(
        self,
        states: Mapping[str, EntityState | None],
        items: Sequence[tuple[Mapping[str, Any], int, int]],
        watermark: bool,
        b: _Batch,
    ) -> dict[str, _Working]:
        """Run the items through their entities' states; fills ``b``'s gaps, aggregates and
        novelty; returns the states that moved, in the order they first moved."""
        events, n = b.events, len(b.events)
        finite = [[x if math.isfinite(x) else 0.0 for x in b.numbers[name]]
                  for name in self._sum_fields]
        # what each event adds to the aggregates: 1 to every count, its value to every sum
        adds = _transpose([*([[1.0] * n] * len(self._count_keys)),
                           *(finite[i] for i in self._sum_x)], n)
        seen = _transpose([_strings(events, name) for name in self._novelty_fields], n)
        entities = [str(e[self.entity_field]) for e in events]
        parts = {p: str(p) for p in {p for _, p, _ in items}}
        horizons, reads, keep = self._horizons, self._novelty_reads, self._novelty_keep
        id_field = self.id_field
        nothing: Sequence[float] = (0.0,) * len(horizons)  # before an entity's first event
        work: dict[str, _Working] = {}
        moved: dict[str, _Working] = {}
        # the chain's outputs, item after item (k-th value of item i at i * width + k)
        gaps = b.gaps
        aggregates: list[float] = []
        novelty: list[float] = []
        flag = novelty.append
        now: Sequence[float]
        for (event, partition, offset), entity, t, add, values in zip(
            items, entities, b.times, adds, seen, strict=True
        ):
            w = work.get(entity)
            if w is None:
                state = states.get(entity)
                w = work[entity] = (_Working(None, (), {}, {}, False) if state is None
                                    else self._working(state))
            last = w.last
            if last is None:
                gap, now = None, nothing
            elif t > last:
                gap = t - last
                now = list(map(operator.mul, w.aggregates,
                               [0.5 ** (gap / h) for h in horizons]))
            else:  # same time, or out of order: decays by 0 (x * 1.0 == x)
                gap, now = 0, w.aggregates
            recent = w.recent
            for name, k, capacity in reads:
                value = values[k]
                kept = recent.get(name)
                if value is None:
                    flag(0.0)
                elif kept is None:
                    flag(1.0)
                elif len(kept) > capacity:
                    flag(0.0 if value in kept[-capacity:] else 1.0)
                else:
                    flag(0.0 if value in kept else 1.0)
            gaps.append(gap)
            aggregates.extend(now)
            if watermark:
                event_id = str(event[id_field])
                if partition == DIRECT_PARTITION:
                    if event_id in w.direct or event_id in w.streamed:
                        continue  # applied already: here before, or off the topic
                    w.direct = [*w.direct[-(DIRECT_IDS_KEPT - 1):], event_id]
                else:
                    part = parts[partition]
                    if w.stored and w.applied.get(part, -1) >= offset:
                        continue  # a redelivery: the state already contains this event
                    if event_id in w.streamed or (w.direct and event_id in w.direct):
                        continue  # applied already: at another offset (a re-send) or by serve
                    w.applied[part] = offset
                    streamed = w.streamed
                    streamed.append(event_id)
                    if len(streamed) > STREAMED_IDS_KEPT:
                        del streamed[0]
            # the state after the event: aggregates decayed to the newest time, plus it
            w.aggregates = list(map(operator.add, now, add))
            for name, k, capacity in keep:
                value = values[k]
                if value is not None:
                    kept = recent.get(name)
                    recent[name] = ([value] if kept is None
                                    else _remembered(kept, value, capacity))
            if last is None or t > last:
                w.last = t
            w.stored = True
            moved.setdefault(entity, w)
        b.aggregates = _deinterleave(aggregates, len(horizons))
        b.novelty = _deinterleave(novelty, len(reads))
        return moved

    def _working(self, state: EntityState) -> _Working:
        counts, sums = state.counts.get, state.sums.get
        return _Working(
            state.last_time,
            [*map(counts, self._count_keys, self._no_counts),
             *map(sums, self._sum_keys, self._no_sums)],  # .get(key, 0.0)
            dict(state.recent),  # its lists are replaced, never changed: see _remembered
            dict(state.applied),
            True,
            state.direct,
            list(state.streamed),
        )

    def _stored(self, w: _Working) -> EntityState:
        """The :class:`EntityState` of a working state (which is not used afterwards)."""
        # the counts, then the sums: plain zip (no strict=, whose keyword costs a dict per
        # call) stops at the count keys; the sums are the rest
        agg = w.aggregates
        return EntityState(w.last, dict(zip(self._count_keys, agg)),  # noqa: B905
                           dict(zip(self._sum_keys, agg[self._n_counts:])),  # noqa: B905
                           w.recent, w.applied, w.direct, w.streamed)


def _remembered(kept: list[str], value: str, capacity: int) -> list[str]:
    """The field's distinct recent values with ``value`` the newest, at most ``capacity``.

    Returns ``kept`` itself when nothing moves, else a new list: ``kept`` is never changed
    (it may be a list of the caller's state).

    >>> _remembered(["a", "b", "c"], "a", 3), _remembered(["a", "b", "c"], "d", 3)
    (['b', 'c', 'a'], ['b', 'c', 'd'])
    """
    n = kept.count(value)
    if n == 1 and kept[-1] == value and len(kept) <= capacity:
        return kept
    if n == 1:
        i = kept.index(value)
        new = kept[:i] + kept[i + 1 :]
    elif n:  # a state written elsewhere may hold a value twice
        new = [v for v in kept if v != value]
    else:
        new = kept[-(capacity - 1) :] if capacity > 1 else []
    new.append(value)
    return new[-capacity:] if len(new) > capacity else new


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
    # the online path without the watermark: one chain over the whole history
    items = [(event, 0, i) for i, event in enumerate(ordered)]
    columns = fz._featurize_columns({}, items, watermark=False)
    return TrainingFrame(
        X=columns.X,
        names=list(fz.names),
        event_ids=[str(e[fz.id_field]) for e in ordered],
        entity_ids=[str(e[fz.entity_field]) for e in ordered],
        event_times=np.array([int(e[fz.time_field]) for e in ordered], dtype=np.int64),
    )
