"""Entity feature state rebuilt from a warm-up range, so the first replayed event sees the
features production saw.

The warm-up events run through the same :class:`~precog.features.Featurizer` the score
agent uses, in each partition's offset order (an entity lives in one partition), skipping
what the score agent would have dead-lettered (undecodable or invalid records). The
states' idempotency watermark (``applied``) is cleared: its offsets belong to the
production topic, and the parallel topic's offsets start elsewhere, so keeping it would
make the parallel worker skip updates it must apply.

>>> from precog.avro import Codec
>>> from precog.spec import SPEC_DIR, load_spec
>>> spec = load_spec(SPEC_DIR / "transactions.yaml")
>>> ev = {"event_id": "e1", "card_id": "card-1", "customer_id": "c1", "merchant_id": "m1",
...       "category": "fuel", "amount": 40.0, "currency": "EUR", "country": "DE",
...       "channel": "pos", "event_time": 1_700_000_000_000}
>>> codec = Codec.for_schema("transaction")
>>> result = rebuild_states(spec, [(codec.encode(ev), 1_700_000_000_000),
...                                (b"junk", 1_700_000_000_001)])
>>> result.events, result.skipped, result.states["card-1"].last_time
(1, 1, 1700000000000)
>>> result.states["card-1"].applied
{}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from precog.avro import Codec
from precog.errors import EventError
from precog.features import EntityState, Featurizer
from precog.spec import PipelineSpec
from precog.validation import check_event


@dataclass
class WarmupResult:
    """States by entity id, events folded in, records skipped as the worker would have."""

    states: dict[str, EntityState] = field(default_factory=dict)
    events: int = 0
    skipped: int = 0


def rebuild_states(
    spec: PipelineSpec,
    records: Iterable[tuple[bytes | None, int]],
    into: WarmupResult | None = None,
) -> WarmupResult:
    """Fold ``(value, record timestamp ms)`` records into entity states (watermarks empty).

    The record timestamp stands in for the worker's clock in the event-time skew check.
    Pass ``into`` to continue a previous call (records arrive in chunks).
    """
    out = into or WarmupResult()
    featurizer = Featurizer(spec)
    codec = Codec.for_schema(spec.event.schema_name)
    entity_field = spec.event.entity_field
    for value, timestamp in records:
        try:
            event = codec.decode(value)
        except EventError:
            out.skipped += 1
            continue
        if check_event(spec, event, timestamp):
            out.skipped += 1
            continue
        entity = str(event[entity_field])
        _, new = featurizer.featurize(out.states.get(entity), event)
        new.applied = {}
        out.states[entity] = new
        out.events += 1
    return out
