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
    from precog.history import read_history

    say = log or (lambda _m: None)
    events, _ = read_history(history_dir, spec)
    states = fold_states(spec, events)
    address = write_states(settings, spec, states, f"precog backfill --history {history_dir}",
                           chunk)
    say(f"{len(events)} events folded into {len(states)} entity states in"
        f" {address} under {settings.redis_key('state', spec.name, '*')}")
    return len(states)


def write_states(settings: Settings, spec: PipelineSpec, states: Mapping[str, EntityState],
                 by: str, chunk: int = 5000) -> str:
    """Write ``states`` in pipelined chunks, then the state marker; the store's address.

    The marker goes last: a worker waiting on lost state resumes only once every state is
    back (docs/features.md).
    """
    from precog.services.feature_store import RedisOnlineStore

    store = RedisOnlineStore(settings, spec)
    items = list(states.items())
    for i in range(0, len(items), chunk):
        store.write_sync(dict(items[i : i + chunk]))
    store.write_marker_sync(by)
    return store.address


def rebuild_from_topic(
    settings: Settings,
    spec: PipelineSpec,
    *,
    group: str | None = None,
    chunk: int = 5000,
    settle_s: float = 3.0,
    log: Callable[[str], None] | None = None,
) -> int:
    """Rebuild every entity's state from the retained events topic; returns entities.

    Folds the events the score agent's group has committed (per partition, from the first
    retained offset up to the committed one, in offset order) through the worker's own
    validation and :meth:`~precog.features.Featurizer.featurize_batch`, so the states and
    their offset watermarks equal what the worker had written; then writes them and the
    state marker, and a worker waiting on lost state resumes. Idempotent: running it twice
    writes the same states. The committed offsets are read until they stop moving
    (``settle_s`` apart), so a batch the worker finished just before is included.
    """
    import time

    from precog.services.feature_store import committed_offsets

    say = log or (lambda _m: None)
    group = group or settings.group("score")  # the score agent commits the events topic
    committed = committed_offsets(settings, group, spec.event.topic)
    for _ in range(10):
        time.sleep(settle_s)
        again = committed_offsets(settings, group, spec.event.topic)
        if again == committed:
            break
        committed = again
    topic = settings.topic(spec.event.topic)
    say(f"rebuilding from {topic} up to the offsets committed by {group}: "
        + (", ".join(f"p{p}<{o}" for p, o in sorted(committed.items())) or "none"))
    featurizer = Featurizer(spec)
    states: dict[str, EntityState | None] = {}
    changed: dict[str, EntityState] = {}
    folded = 0
    for partition, end in sorted(committed.items()):
        items = list(_valid_items(settings, spec, topic, partition, end))
        _, new = featurizer.featurize_batch(states, items)
        states.update(new)
        changed.update(new)
        folded += len(items)
        say(f"  partition {partition}: {len(items)} valid events folded")
    address = write_states(settings, spec, changed, f"precog backfill --from-topic {topic}",
                           chunk)
    say(f"{folded} events folded into {len(changed)} entity states in {address}; "
        "state marker written")
    return len(changed)


def _valid_items(
    settings: Settings, spec: PipelineSpec, topic: str, partition: int, end: int
) -> Iterable[tuple[dict[str, Any], int, int]]:
    """``(record, partition, offset)`` of the valid events of ``topic[partition]`` below ``end``.

    The worker's own decode and checks; the skew check uses the record's Kafka timestamp
    as "now" (about when the worker saw it).
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaException

    from precog.avro import Codec
    from precog.errors import EventError
    from precog.io import kafka
    from precog.validation import check_event

    codec = Codec.for_schema(spec.event.schema_name)
    consumer = kafka.reader(settings, "precog-rebuild")
    todo = {(topic, partition): (OFFSET_BEGINNING, end)}
    try:
        for msg in kafka.read_ranges(consumer, todo, idle_timeout=30.0, batch=1000, poll=5.0):
            try:
                record = codec.decode(msg.value())
            except EventError:
                continue
            _, ts = msg.timestamp()
            if not check_event(spec, record, ts):
                yield record, partition, msg.offset()
    except TimeoutError:
        raise RuntimeError(f"{topic}[{partition}]: nothing read for 30 s before "
                           f"offset {end}") from None
    except KafkaException as exc:
        raise RuntimeError(f"reading {topic}[{partition}]: {exc.args[0]}") from None
    finally:
        consumer.close()
