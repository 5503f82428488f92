"""A whole chunk's features at once, bit-identical to :meth:`Featurizer.featurize_columns`.

(Over 400 lines: the arrays of the states, the step loop and the columns read from them must
stay side by side; their bit-for-bit parity with the per-event chain is the module's contract.)

The per-event featurizer walks the items one by one. Here the items are grouped by entity
(a stable sort, so each entity keeps its order) and the entities' chains advance together,
one *step* at a time: step ``k`` applies every entity's ``k``-th event with numpy over the
entities that have one (the longest first, so they are a prefix of the state arrays).
Every value goes through the same IEEE operations in the same order as in the per-event
chain (``now = aggregate * 0.5 ** (gap / horizon)``, then ``+ add``), so the results are the
same bits. Two functions are not taken from numpy, whose SIMD versions of ``power`` and
``log1p`` differ from the C library's in the last bit on AVX-512 machines: the decay factors
and ``log1p`` are computed with Python's own (the per-event path's) functions.

The chain is the per-event one only while nothing of it is special, so an entity goes
through :meth:`Featurizer.featurize_columns` itself (from its start state, or from its
state at the step where few chains are left, ``TAIL``) when it has items of ``precog
serve`` (:data:`DIRECT_PARTITION`) or direct ids in its state, when an item would be taken
for a redelivery (its offset not above its entity's watermark) or for a re-send (an event
id twice in the entity's items, or one its state's streamed ids hold), when its state holds a
novelty list with a value twice or longer than the feature's capacity, or when a time is
beyond 2**52 ms. Entities are independent, so each row's features are the same either way.

>>> from precog.spec import SPEC_DIR, load_spec
>>> fz = Featurizer(load_spec(SPEC_DIR / "transactions.yaml"))
>>> ev = {"event_id": "e1", "card_id": "card-1", "merchant_id": "m1", "category": "fuel",
...       "amount": 40.0, "country": "DE", "channel": "pos", "event_time": 3_600_000}
>>> items = [(ev, 0, 0), ({**ev, "event_id": "e2", "event_time": 7_200_000}, 0, 1)]
>>> fast = featurize_chunk(fz, {}, items)
>>> slow = fz.featurize_columns({}, items)
>>> bool((fast.X == slow.X).all()), fast.changed == slow.changed
(True, True)

A batch run keeps one :class:`ColumnarChain`: the entities' states stay arrays from chunk to
chunk and become :class:`EntityState` objects only when asked (:meth:`ColumnarChain.state`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from precog import spec as kinds
from precog.features import (
    DIRECT_PARTITION,
    FIRST_EVENT_SECONDS,
    STREAMED_IDS_KEPT,
    EntityState,
    FeatureColumns,
    Featurizer,
)

#: Below this many chains left, the rest of each goes through the per-event chain (a numpy
#: step over a handful of entities costs more than the Python loop).
TAIL = 16
_HOUR_MS = 3_600_000
_EXACT_INT = 2**52  # times below: gaps below 2**53, exact as floats (gap / horizon is Python's)
_Item = tuple[Mapping[str, Any], int, int]


def _pow_half(ratios: np.ndarray) -> np.ndarray:
    """``0.5 ** r`` for each ``r``, with Python's float power (the per-event path's)."""
    flat = ratios.ravel().tolist()
    return np.fromiter(map(pow, repeat(0.5), flat), np.float64, len(flat)).reshape(ratios.shape)


def _log1p(x: np.ndarray) -> np.ndarray:
    """``math.log1p(max(x, 0.0))`` per value (``max`` keeps NaN and -0.0, as Python's does)."""
    kept = np.where(x < 0.0, 0.0, x).tolist()
    return np.fromiter(map(math.log1p, kept), np.float64, len(kept))


class _Codes:
    """A run's strings -> small ints, first seen first (``None`` -> -1), and back."""

    def __init__(self) -> None:
        self.index: dict[str | None, int] = {None: -1}
        self.values: list[str] = []

    def codes(self, values: list[str | None]) -> np.ndarray:
        index = self.index
        out = np.fromiter([index.setdefault(v, len(index) - 1) for v in values],
                          np.int64, len(values))
        if len(index) - 1 > len(self.values):
            self.values.extend(list(index)[len(self.values) + 1:])  # type: ignore[arg-type]
        return out


def _as_strings(values: list[Any]) -> list[Any]:
    """``str(v)`` of each value that is not None (the values themselves when all are str)."""
    if set(map(type, values)) <= {str, type(None)}:
        return values
    return [None if v is None else str(v) for v in values]


def featurize_chunk(fz: Featurizer, states: Mapping[str, EntityState | None],
                    items: Sequence[_Item]) -> FeatureColumns:
    """:meth:`Featurizer.featurize_columns` of ``items``, the same bits, computed per step.

    ``states`` is not modified; the returned ``changed`` holds the new states of the
    entities whose state moved, equal to the per-event path's.
    """
    chain = ColumnarChain(fz, states)
    cols = chain.featurize(items)
    moved = chain.moved
    changed = {e: state for e in dict.fromkeys(
        str(event[fz.entity_field]) for event, _, _ in items)
        if e in moved and (state := chain.state(e)) is not None}
    return FeatureColumns(cols.X, cols.gaps_ms, cols.stateful, changed)


class ColumnarChain:
    """A batch run's entity states as arrays, chained chunk after chunk (see the module).

    ``starts`` gives an entity's state before the run first sees it (read once, when it
    does; not modified). :meth:`featurize` returns the chunk's columns (``changed`` is
    empty: the chain keeps the states); :meth:`state` and :meth:`states` give them as
    :class:`EntityState` objects. A chunk that raises (a field that is not a number, ...)
    leaves the states as they were.
    """

    def __init__(self, fz: Featurizer, starts: Mapping[str, EntityState | None]) -> None:
        self.fz, self.starts = fz, starts
        self.row: dict[str, int] = {}  # entities whose state is in the arrays
        self.objects: dict[str, EntityState | None] = {}  # the others seen so far
        self.codes = [_Codes() for _ in fz._novelty_fields]
        self.widths = [capacity for _, _, capacity in fz._novelty_keep]
        self.moved: set[str] = set()  # the entities the last chunk moved
        self.size = 0
        self.has_last = np.zeros(0, dtype=bool)
        self.last = np.zeros(0, dtype=np.int64)
        self.agg = np.zeros((0, len(fz._horizons)), dtype=np.float64)
        self.recent = [np.zeros((0, w), dtype=np.int64) for w in self.widths]
        self.touched = [np.zeros(0, dtype=bool) for _ in self.widths]
        self.stored = np.zeros(0, dtype=bool)  # has a state (moved, or a start state)
        self.moved_ever = np.zeros(0, dtype=bool)
        self.base: list[EntityState | None] = []  # the start state of each row
        self.applied: list[dict[str, int]] = []
        self.streamed: list[list[str]] = []  # the ids of the last events applied (newest last)

    # -- states in and out --------------------------------------------------------------
    def state(self, entity: str) -> EntityState | None:
        """The entity's state now (its start state if the run has not seen it)."""
        r = self.row.get(entity)
        if r is not None:
            return self._export(r)
        if entity in self.objects:
            return self.objects[entity]
        return self.starts.get(entity)

    def states(self) -> dict[str, EntityState | None]:
        """Every entity the run has seen, and its state now."""
        out = dict(self.objects)
        out.update((entity, self._export(r)) for entity, r in self.row.items())
        return out

    def _clean(self, state: EntityState | None) -> bool:
        """Whether a state can go into the arrays (the plain chain applies to it)."""
        if state is None:
            return True
        if state.direct or (state.last_time is not None and abs(state.last_time) >= _EXACT_INT):
            return False
        for (name, _, capacity) in self.fz._novelty_keep:
            kept = state.recent.get(name)
            if kept is not None and (len(kept) > capacity or len(set(kept)) != len(kept)):
                return False
        return True

    def _grow(self, need: int) -> None:
        cap = len(self.last)
        if need <= cap:
            return
        new = max(need, 2 * cap, 1024)

        def more(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, dtype=a.dtype)
            out[:cap] = a
            return out

        self.has_last, self.last = more(self.has_last, False), more(self.last, 0)
        self.agg = more(self.agg, 0.0)
        self.recent = [more(a, -1) for a in self.recent]
        self.touched = [more(a, False) for a in self.touched]
        self.stored, self.moved_ever = more(self.stored, False), more(self.moved_ever, False)

    def _import(self, entity: str, state: EntityState | None) -> int:
        r = self.size
        self._grow(r + 1)
        self.size += 1
        self.row[entity] = r
        self.base.append(state)
        self.applied.append({} if state is None else dict(state.applied))
        self.streamed.append([] if state is None else list(state.streamed))
        self.has_last[r], self.last[r], self.agg[r] = False, 0, 0.0
        self.stored[r], self.moved_ever[r] = state is not None, False
        for f in range(len(self.widths)):
            self.recent[f][r], self.touched[f][r] = -1, False
        if state is None:
            return r
        if state.last_time is not None:
            self.has_last[r], self.last[r] = True, state.last_time
        fz = self.fz
        self.agg[r] = ([state.counts.get(k, 0.0) for k in fz._count_keys]
                       + [state.sums.get(k, 0.0) for k in fz._sum_keys])
        for f, (name, _, width) in enumerate(fz._novelty_keep):
            kept = state.recent.get(name)
            if kept:
                self.recent[f][r, width - len(kept):] = self.codes[f].codes(list(kept))
        return r

    def _export(self, r: int, *, has_last: bool | None = None, last: int = 0,
                agg: np.ndarray | None = None, recent: list[np.ndarray] | None = None,
                touched: list[bool] | None = None, applied: dict[str, int] | None = None,
                streamed: list[str] | None = None, moved: bool | None = None
                ) -> EntityState | None:
        """Row ``r`` as the state the per-event chain would hold (or the given values)."""
        if moved is None:
            moved = bool(self.moved_ever[r])
        if not moved:
            return self.base[r]  # never moved: the start state itself
        fz = self.fz
        if has_last is None:
            has_last, last = bool(self.has_last[r]), int(self.last[r])
            agg = self.agg[r]
            recent = [a[r] for a in self.recent]
            touched = [bool(a[r]) for a in self.touched]
            applied, streamed = self.applied[r], self.streamed[r]
        assert agg is not None and recent is not None and touched is not None
        base = self.base[r]
        kept = {} if base is None else dict(base.recent)
        for f, (name, _, _) in enumerate(fz._novelty_keep):
            if touched[f]:
                values = self.codes[f].values
                kept[name] = [values[v] for v in recent[f].tolist() if v >= 0]
        values = agg.tolist()
        n_counts = len(fz._count_keys)
        return EntityState(last if has_last else None,
                           dict(zip(fz._count_keys, values[:n_counts], strict=True)),
                           dict(zip(fz._sum_keys, values[n_counts:], strict=True)),
                           kept, dict(applied or {}), [], list(streamed or ()))

    def _to_objects(self, entity: str) -> None:
        r = self.row.pop(entity)
        self.objects[entity] = self._export(r)

    # -- one chunk ----------------------------------------------------------------------
    def featurize(self, items: Sequence[_Item]) -> FeatureColumns:
        """The features of ``items`` (in order), chaining each entity's state."""
        fz = self.fz
        if not items:
            self.moved = set()
            return FeatureColumns(np.empty((0, len(fz.names))), np.empty(0, np.int64),
                                  fz.stateful, {})
        ch = _Chunk(self, items)  # every field read here: what raises, raises before a change
        rows, slow = self._place(ch)
        out = _Outputs(ch.n, len(fz._horizons), len(fz._novelty_reads))
        fast_items = np.flatnonzero(~slow[ch.entity_codes])
        steps = _Steps(self, ch, rows, fast_items, out) if len(fast_items) else None
        slow_states = {ch.entities[c]: self.objects[ch.entities[c]]
                       for c in np.flatnonzero(slow).tolist()}
        parts = [np.flatnonzero(slow[ch.entity_codes])]
        if steps is not None:
            for entity, state, rest in steps.handed:  # chains finished per event, mid-way
                slow_states[entity] = state
                parts.append(rest)
        idx = np.sort(np.concatenate(parts))
        moved: set[str] = set()
        if len(idx):
            cols = fz.featurize_columns(slow_states, [items[i] for i in idx.tolist()])
            out.X_slow, out.slow_rows, out.gaps[idx] = cols.X, idx, cols.gaps_ms
        X = ch.columns(out)
        # nothing raised: commit the chunk's states
        if steps is not None:
            moved |= steps.commit()
        if len(idx):
            self.objects.update(slow_states)
            self.objects.update(cols.changed)
            moved |= set(cols.changed)
        self.moved = moved
        return FeatureColumns(X, out.gaps, fz.stateful, {})

    def _place(self, ch: _Chunk) -> tuple[np.ndarray, np.ndarray]:
        """Per chunk entity: its row in the arrays (-1: none), and whether it goes per event."""
        n_ent = len(ch.entities)
        rows = np.full(n_ent, -1, dtype=np.int64)
        slow = np.zeros(n_ent, dtype=bool)
        for c, entity in enumerate(ch.entities):
            r = self.row.get(entity)
            if r is None:
                state = (self.objects[entity] if entity in self.objects
                         else self.starts.get(entity))
                if not self._clean(state):
                    self.objects[entity] = state
                    slow[c] = True
                    continue
                self.objects.pop(entity, None)
                r = self._import(entity, state)
            rows[c] = r
        codes, parts, offsets = ch.entity_codes, ch.partitions, ch.offsets
        special = np.zeros(n_ent, dtype=bool)
        special[codes[(parts == DIRECT_PARTITION) | (offsets < 0)
                      | (np.abs(ch.times) >= _EXACT_INT)]] = True
        # a redelivery: an offset not above the one before it, or the watermark
        order = np.lexsort((np.arange(ch.n), parts, codes))
        ce, pe, oe = codes[order], parts[order], offsets[order]
        same = (ce[1:] == ce[:-1]) & (pe[1:] == pe[:-1])
        special[ce[1:][same & (oe[1:] <= oe[:-1])]] = True
        firsts = np.flatnonzero(np.concatenate(([True], ~same)))
        for ci, pi, oi in zip(ce[firsts].tolist(), pe[firsts].tolist(), oe[firsts].tolist(),
                              strict=True):
            r = int(rows[ci])
            if r >= 0 and self.stored[r] and self.applied[r].get(str(pi), -1) >= oi:
                special[ci] = True
        for ci in self._resent(ch, rows):
            special[ci] = True
        for ci in np.flatnonzero(special & ~slow).tolist():
            self._to_objects(ch.entities[ci])
            rows[ci], slow[ci] = -1, True
        return rows, slow


    def _resent(self, ch: _Chunk, rows: np.ndarray) -> list[int]:
        """The chunk entities with an event id applied already: twice in the chunk, or among
        the ids their state keeps (a producer's re-send at another offset)."""
        ids = [ch.event_id(i) for i in range(ch.n)]
        codes = ch.entity_codes.tolist()
        found: set[int] = set()
        pairs = list(zip(codes, ids, strict=True))
        if len(set(pairs)) < ch.n:
            seen: set[tuple[int, str]] = set()
            for pair in pairs:
                if pair in seen:
                    found.add(pair[0])
                seen.add(pair)
        kept = {c: self.streamed[r] for c, r in enumerate(rows.tolist())
                if r >= 0 and self.streamed[r]}
        if kept:
            found.update(c for c, e in pairs if c in kept and e in kept[c])
        return sorted(found)


class _Chunk:
    """One chunk's fields as columns (entities, times, numbers, novelty codes)."""

    def __init__(self, chain: ColumnarChain, items: Sequence[_Item]) -> None:
        fz = chain.fz
        events = [event for event, _, _ in items]
        self.fz, self.events, self.n = fz, events, len(items)
        n = self.n
        index: dict[str, int] = {}
        names = _as_strings([e[fz.entity_field] for e in events])
        self.entity_codes = np.fromiter([index.setdefault(e, len(index)) for e in names],
                                        np.int64, n)
        self.entities = list(index)
        raw = [e[fz.time_field] for e in events]
        if set(map(type, raw)) != {int}:
            raw = [int(t) for t in raw]
        self.times = np.array(raw, dtype=np.int64)
        self.partitions = np.fromiter((p for _, p, _ in items), np.int64, n)
        self.offsets = np.fromiter((o for _, _, o in items), np.int64, n)
        self.numbers = {name: np.array([math.nan if (v := e.get(name)) is None else float(v)
                                        for e in events], dtype=np.float64)
                        for name in fz._number_fields}
        self.novelty = [codes.codes(_as_strings([e.get(name) for e in events]))
                        for name, codes in zip(fz._novelty_fields, chain.codes, strict=True)]
        self.equals: dict[tuple[str, Any], np.ndarray] = {}
        for f in fz.spec.features:
            if isinstance(f, kinds.EqualsFeature) and (f.field, f.value) not in self.equals:
                self.equals[(f.field, f.value)] = np.fromiter(
                    (1.0 if str(e.get(f.field)) == f.value else 0.0 for e in events),
                    np.float64, n)

    def event_id(self, i: int) -> str:
        """The id of the chunk's ``i``-th event (as the state records it)."""
        return str(self.events[i][self.fz.id_field])

    def columns(self, out: _Outputs) -> np.ndarray:
        """The feature matrix, in the spec's order."""
        fz, n = self.fz, self.n
        X = np.empty((n, len(fz.spec.features)), dtype=np.float64)
        with np.errstate(all="ignore"):
            for j, f in enumerate(fz.spec.features):
                X[:, j] = self._column(f, out)
        if out.slow_rows is not None:
            X[out.slow_rows] = out.X_slow
        return X

    def _column(self, f: Any, out: _Outputs) -> np.ndarray:
        fz = self.fz
        if isinstance(f, kinds.ValueFeature):
            return self.numbers[f.field]
        if isinstance(f, kinds.Log1pFeature):
            return _log1p(self.numbers[f.field])
        if isinstance(f, kinds.EqualsFeature):
            return self.equals[(f.field, f.value)]
        if isinstance(f, kinds.HourOfDayFeature):
            return ((self.times // _HOUR_MS) % 24).astype(np.float64)
        if isinstance(f, kinds.DecayedCountFeature):
            return out.aggregates[:, self._count_column(f.horizon)]
        if isinstance(f, kinds.DecayedSumFeature):
            return out.aggregates[:, self._sum_column(f.field, f.horizon)]
        if isinstance(f, kinds.TimeSinceLastFeature):
            return np.where(out.first, FIRST_EVENT_SECONDS, out.gaps / 1000.0)
        if isinstance(f, kinds.RatioToMeanFeature):
            count = out.aggregates[:, self._count_column(f.horizon)]
            total = out.aggregates[:, self._sum_column(f.field, f.horizon)]
            x = self.numbers[f.field]
            return np.where((count > 0.0) & (total > 0.0), x / (total / count), 1.0)
        if isinstance(f, kinds.NoveltyFeature):
            return out.novelty[:, fz._novelty_names.index(f.name)]
        raise TypeError(f"unknown feature kind {f!r}")  # pragma: no cover - spec validates

    def _count_column(self, horizon: str) -> int:
        return self.fz._count_keys.index(str(kinds.parse_duration(horizon)))

    def _sum_column(self, field_name: str, horizon: str) -> int:
        fz = self.fz
        key = f"{field_name}@{kinds.parse_duration(horizon)}"
        return len(fz._count_keys) + fz._sum_keys.index(key)


class _Outputs:
    """The chain's outputs per item (item order)."""

    def __init__(self, n: int, n_aggregates: int, n_novelty: int) -> None:
        self.gaps = np.zeros(n, dtype=np.int64)
        self.first = np.zeros(n, dtype=bool)
        self.aggregates = np.zeros((n, n_aggregates), dtype=np.float64)
        self.novelty = np.zeros((n, n_novelty), dtype=np.float64)
        self.X_slow: np.ndarray | None = None
        self.slow_rows: np.ndarray | None = None


class _Steps:
    """The chains of a chunk's array entities advanced together, on copies of their rows."""

    def __init__(self, chain: ColumnarChain, ch: _Chunk, rows: np.ndarray,
                 items: np.ndarray, out: _Outputs) -> None:
        fz = chain.fz
        self.chain, self.ch = chain, ch
        order = items[np.argsort(ch.entity_codes[items], kind="stable")]  # by entity
        ent = ch.entity_codes[order]
        bound = np.concatenate(([True], ent[1:] != ent[:-1]))
        seg_start = np.flatnonzero(bound)
        step = np.arange(len(order)) - seg_start[np.cumsum(bound) - 1]  # k-th of its entity
        length = np.diff(np.append(seg_start, len(order)))
        by_len = np.argsort(-length, kind="stable")  # longest chains first: a prefix
        self.ents, self.length = ent[seg_start][by_len], length[by_len]
        rank = np.empty(len(ch.entities), dtype=np.int64)
        rank[self.ents] = np.arange(len(self.ents))
        sm = order[np.lexsort((rank[ent], step))]  # step-major: step k of every chain
        self.sm = sm
        self.step_of = np.empty(ch.n, dtype=np.int64)
        self.step_of[order] = step
        active = np.bincount(step)
        bounds = np.concatenate(([0], np.cumsum(active)))
        self.rows = R = rows[self.ents]
        self.has, self.last = chain.has_last[R], chain.last[R]
        self.agg = chain.agg[R]
        self.recent = [a[R] for a in chain.recent]
        self.touched = [a[R] for a in chain.touched]
        horizons = np.array(fz._horizons, dtype=np.int64)
        distinct, which = np.unique(horizons, return_inverse=True)
        n_counts = len(fz._count_keys)
        adds = np.ones((ch.n, len(horizons)), dtype=np.float64)
        for j, x in enumerate(fz._sum_x):
            v = ch.numbers[fz._sum_fields[x]]
            adds[:, n_counts + j] = np.where(np.isfinite(v), v, 0.0)
        reads = [(fz._novelty_fields.index(name), k, capacity)
                 for k, (name, _, capacity) in enumerate(fz._novelty_reads)]
        self.handed: list[tuple[str, EntityState | None, np.ndarray]] = []
        self.done = len(active)
        for k in range(len(active)):
            m = int(active[k])
            if m < TAIL:
                self.done = k
                self._hand_over(bounds[k], k, m)
                break
            r = sm[bounds[k]:bounds[k + 1]]
            t = ch.times[r]
            has, last = self.has[:m], self.last[:m]
            newer = has & (t > last)
            out.gaps[r] = np.where(newer, t - last, 0)
            out.first[r] = ~has
            agg = self.agg[:m]
            now = agg.copy()
            if newer.any():
                d = _pow_half((t - last)[newer][:, None] / distinct[None, :])[:, which]
                now[newer] = agg[newer] * d
            now[~has] = 0.0
            out.aggregates[r] = now
            self.agg[:m] = now + adds[r]
            self.last[:m] = np.where(newer | ~has, t, last)
            self.has[:m] = True
            for f, recent in enumerate(self.recent):
                v = ch.novelty[f][r]
                width = recent.shape[1]
                kept = recent[:m]
                eq = kept == v[:, None]
                seen = v >= 0
                for x, kcol, capacity in reads:
                    if x == f:
                        hit = eq[:, width - capacity:].any(axis=1)
                        out.novelty[r, kcol] = np.where(seen & ~hit, 1.0, 0.0)
                if seen.any():
                    q = np.where(eq.any(axis=1), eq.argmax(axis=1), 0)
                    at = np.arange(width)
                    src = np.minimum(at[None, :] + (at[None, :] >= q[:, None]), width - 1)
                    shifted = np.take_along_axis(kept, src, axis=1)
                    shifted[:, -1] = v
                    recent[:m] = np.where(seen[:, None], shifted, kept)
                    self.touched[f][:m] |= seen

    def _watermarks(self, c: int, upto: int) -> tuple[dict[str, int], list[str]]:
        """Chain ``c``'s watermark and streamed ids after its first ``upto`` items."""
        chain, ch = self.chain, self.ch
        r = int(self.rows[c])
        applied, streamed = dict(chain.applied[r]), list(chain.streamed[r])
        mine = np.flatnonzero(ch.entity_codes == self.ents[c])
        mine = mine[self.step_of[mine] < upto]
        for p, o in zip(ch.partitions[mine].tolist(), ch.offsets[mine].tolist(), strict=True):
            applied[str(p)] = o
        streamed.extend(ch.event_id(i) for i in mine.tolist())
        return applied, streamed[-STREAMED_IDS_KEPT:]

    def _hand_over(self, start: int, k: int, m: int) -> None:
        """The chains still running at step ``k`` go on per event from their state now."""
        chain, ch = self.chain, self.ch
        left = self.sm[start:]
        codes = ch.entity_codes[left]
        for c in range(m):
            r = int(self.rows[c])
            if k == 0:
                state = chain._export(r)
            else:
                applied, streamed = self._watermarks(c, k)
                state = chain._export(
                    r, has_last=bool(self.has[c]), last=int(self.last[c]), agg=self.agg[c],
                    recent=[a[c] for a in self.recent],
                    touched=[bool(a[c]) for a in self.touched],
                    applied=applied, streamed=streamed, moved=True)
            self.handed.append((ch.entities[int(self.ents[c])], state,
                                np.sort(left[codes == self.ents[c]])))

    def commit(self) -> set[str]:
        """Write the finished chains back into the chain's arrays; returns the entities moved."""
        chain, ch = self.chain, self.ch
        done = np.flatnonzero(self.length <= self.done) if self.handed else np.arange(
            len(self.ents))
        R = self.rows[done]
        chain.has_last[R], chain.last[R], chain.agg[R] = (self.has[done], self.last[done],
                                                           self.agg[done])
        for f in range(len(chain.recent)):
            chain.recent[f][R], chain.touched[f][R] = self.recent[f][done], self.touched[f][done]
        chain.stored[R] = chain.moved_ever[R] = True
        # watermarks: each (entity, partition)'s last offset in the chunk
        finished = np.zeros(len(ch.entities), dtype=bool)
        finished[self.ents[done]] = True
        sel = np.flatnonzero(finished[ch.entity_codes])
        row_of = np.full(len(ch.entities), -1, dtype=np.int64)
        row_of[self.ents] = self.rows
        for i, r, p, o in zip(sel.tolist(), row_of[ch.entity_codes[sel]].tolist(),
                              ch.partitions[sel].tolist(), ch.offsets[sel].tolist(),
                              strict=True):
            chain.applied[r][str(p)] = o
            streamed = chain.streamed[r]
            streamed.append(ch.event_id(i))
            if len(streamed) > STREAMED_IDS_KEPT:
                del streamed[0]
        moved = {ch.entities[e] for e in self.ents[done].tolist()}
        for entity, state, _ in self.handed:
            chain.row.pop(entity)
            chain.objects[entity] = state
        return moved
