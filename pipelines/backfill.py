"""Feature backfill: fold a history into the online store, so live scoring continues from it.

The same :class:`~precog.features.Featurizer` as the score agent and the training pipeline,
over the history in (event time, event id) order; the states go to Redis in pipelined
chunks. Their idempotency watermark stays empty: a history file has no Kafka offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from precog.features import EntityState, Featurizer, sort_key
from precog.settings import Settings
from precog.spec import PipelineSpec


def fold_states(spec: PipelineSpec, events: Iterable[Mapping[str, Any]]) -> dict[str, EntityState]:
    """Entity states after every event, in the offline order.

    >>> from precog.spec import SPEC_DIR, load_spec
    >>> spec = load_spec(SPEC_DIR / "transactions.yaml")
    >>> ev = {"event_id": "e1", "card_id": "card-1", "merchant_id": "m1", "category": "fuel",
    ...       "amount": 40.0, "country": "DE", "channel": "pos", "event_time": 3_600_000}
    >>> states = fold_states(spec, [ev, {**ev, "event_id": "e2", "event_time": 7_200_000}])
    >>> states["card-1"].last_time, states["card-1"].applied
    (7200000, {})
    """
    featurizer = Featurizer(spec)
    entity = spec.event.entity_field
    states: dict[str, EntityState] = {}
    for event in sorted(events, key=sort_key(spec)):
        key = str(event[entity])
        _, states[key] = featurizer.featurize(states.get(key), event)
    return states


def backfill(
    settings: Settings,
    spec: PipelineSpec,
    history_dir: Path,
    chunk: int = 5000,
    log: Callable[[str], None] | None = None,
) -> int:
    """Write the states of ``history_dir`` to the namespace's online store; returns entities."""
    from scripts.simulate import read_history
    from services.feature_store import RedisOnlineStore

    say = log or (lambda _m: None)
    events, _ = read_history(history_dir)
    states = fold_states(spec, events)
    store = RedisOnlineStore(settings, spec)
    items = list(states.items())
    for i in range(0, len(items), chunk):
        store.write_sync(dict(items[i : i + chunk]))
    say(f"{len(events)} events folded into {len(states)} entity states in"
        f" {settings.redis.url} under {settings.redis_key('state', spec.name, '*')}")
    return len(states)
