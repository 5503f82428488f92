"""The feature definitions of docs/features.md, one event at a time: the tests' oracle.

Deliberately the plainest reading of the definitions (dicts keyed like
:class:`~precog.features.EntityState`, one ``isinstance`` chain per feature per event), so
that the compiled, columnar :class:`~precog.features.Featurizer` can be checked against it
bit for bit. Not used by precog itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from precog.features import FIRST_EVENT_SECONDS, STREAMED_IDS_KEPT, EntityState
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


def _number(event: Mapping[str, Any], name: str) -> float:
    v = event.get(name)
    return math.nan if v is None else float(v)


def reference_featurize(
    spec: PipelineSpec, state: EntityState | None, event: Mapping[str, Any]
) -> tuple[list[float], list[int], EntityState]:
    """(values, ages, new state) of one event; ``state`` is not modified."""
    state = state or EntityState()
    t = int(event[spec.event.time_field])
    counts: dict[str, float] = {}  # decayed to t, before the event
    sums: dict[str, float] = {}
    capacities: dict[str, int] = {}
    gap = None if state.last_time is None else max(0, t - state.last_time)
    for f in spec.features:
        if isinstance(f, DecayedCountFeature | DecayedSumFeature | RatioToMeanFeature):
            h = parse_duration(f.horizon)
            factor = 0.0 if gap is None else 0.5 ** (gap / h)
        if isinstance(f, DecayedCountFeature | RatioToMeanFeature):
            counts[str(h)] = 0.0 if gap is None else state.counts.get(str(h), 0.0) * factor
        if isinstance(f, DecayedSumFeature | RatioToMeanFeature):
            key = f"{f.field}@{h}"
            sums[key] = 0.0 if gap is None else state.sums.get(key, 0.0) * factor
        if isinstance(f, NoveltyFeature):
            capacities[f.field] = max(f.capacity, capacities.get(f.field, 0))
    values: list[float] = []
    ages: list[int] = []
    for f in spec.features:
        h = parse_duration(getattr(f, "horizon", 0))
        stateful = True
        if isinstance(f, ValueFeature):
            value, stateful = _number(event, f.field), False
        elif isinstance(f, Log1pFeature):
            value, stateful = math.log1p(max(_number(event, f.field), 0.0)), False
        elif isinstance(f, EqualsFeature):
            value, stateful = (1.0 if str(event.get(f.field)) == f.value else 0.0), False
        elif isinstance(f, HourOfDayFeature):
            value, stateful = float((t // 3_600_000) % 24), False
        elif isinstance(f, DecayedCountFeature):
            value = counts[str(h)]
        elif isinstance(f, DecayedSumFeature):
            value = sums[f"{f.field}@{h}"]
        elif isinstance(f, TimeSinceLastFeature):
            value = FIRST_EVENT_SECONDS if gap is None else gap / 1000.0
        elif isinstance(f, RatioToMeanFeature):
            count, total = counts[str(h)], sums[f"{f.field}@{h}"]
            x = _number(event, f.field)
            value = x / (total / count) if count > 0.0 and total > 0.0 else 1.0
        else:
            assert isinstance(f, NoveltyFeature)
            v = event.get(f.field)
            seen = state.recent.get(f.field, [])[-f.capacity :]
            value = 0.0 if v is None or str(v) in seen else 1.0
        values.append(value)
        ages.append((gap or 0) if stateful else 0)
    new_sums = {}
    for key, s in sums.items():
        x = _number(event, key.rsplit("@", 1)[0])
        new_sums[key] = s + (x if math.isfinite(x) else 0.0)
    recent = {k: list(v) for k, v in state.recent.items()}
    for name, capacity in capacities.items():
        v = event.get(name)
        if v is not None:
            kept = [r for r in recent.get(name, []) if r != str(v)] + [str(v)]
            recent[name] = kept[-capacity:]
    last = t if state.last_time is None else max(state.last_time, t)
    new = EntityState(last, {k: c + 1.0 for k, c in counts.items()}, new_sums, recent,
                      dict(state.applied), list(state.direct), list(state.streamed))
    return values, ages, new


def reference_batch(
    spec: PipelineSpec,
    states: Mapping[str, EntityState | None],
    items: Sequence[tuple[Mapping[str, Any], int, int]],
) -> tuple[list[list[float]], list[list[int]], dict[str, EntityState]]:
    """Values, ages and changed states of (event, partition, offset) items (watermarked)."""
    changed: dict[str, EntityState] = {}
    rows, ages = [], []
    for event, partition, offset in items:
        entity = str(event[spec.event.entity_field])
        state = changed[entity] if entity in changed else states.get(entity)
        values, age, new = reference_featurize(spec, state, event)
        rows.append(values)
        ages.append(age)
        if state is not None and state.applied.get(str(partition), -1) >= offset:
            continue  # a redelivery
        if state is not None and str(event[spec.event.id_field]) in state.streamed:
            continue  # a re-send at another offset
        new.applied[str(partition)] = offset
        new.streamed = [*new.streamed, str(event[spec.event.id_field])][-STREAMED_IDS_KEPT:]
        changed[entity] = new
    return rows, ages, changed
