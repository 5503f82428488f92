"""In-memory adapters for the agents' handlers: an online store, a recording producer, events.

Each adapter satisfies the interface the worker's real one does
(:class:`precog.services.feature_store.OnlineStore`,
:class:`precog.services.reliability.Producer`) and appends what it does to a shared
``effects`` list, so a test can assert the order of a batch's effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from precog.services.feature_store import StateLost
from precog.services.reliability import RECORD_OVERHEAD, OutRecord

from precog.features import EntityState

#: Faust's default ``producer_max_request_size``
MAX_REQUEST = 1_000_000


@dataclass
class Sent:
    """One record a handler gave the producer; ``acknowledged`` when it was waited for."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Any
    timestamp: float | None
    acknowledged: bool

    def header(self, name: str) -> bytes:
        return dict(self.headers)[name]


@dataclass
class RecordingProducer:
    """A :class:`~precog.services.reliability.Producer` that keeps every record in order."""

    effects: list[tuple[str, str]] = field(default_factory=list)
    record_limit: int = MAX_REQUEST - RECORD_OVERHEAD
    sent: list[Sent] = field(default_factory=list)

    async def produce(self, topic: str, records: Sequence[OutRecord], what: str) -> None:
        self._keep(topic, records, acknowledged=True)
        self.effects.append(("produce", topic))

    async def send(self, topic: str, records: Sequence[OutRecord]) -> None:
        self._keep(topic, records, acknowledged=False)
        self.effects.append(("send", topic))

    def _keep(self, topic: str, records: Sequence[OutRecord], *, acknowledged: bool) -> None:
        for key, value, headers, timestamp in records:
            self.sent.append(Sent(topic, key, value, headers, timestamp, acknowledged))

    def on(self, topic: str) -> list[Sent]:
        """The records sent to ``topic``, in order."""
        return [s for s in self.sent if s.topic == topic]


@dataclass
class MemoryStore:
    """An :class:`~precog.services.feature_store.OnlineStore` in a dict.

    States are kept as bytes (as Redis keeps them), so a handler never shares an object
    with the store. ``read_failures`` and ``write_failures`` are raised, one per call, before
    the call does anything; ``marker`` False makes a marker-checked read raise
    :class:`StateLost`.
    """

    effects: list[tuple[str, str]] = field(default_factory=list)
    data: dict[str, bytes] = field(default_factory=dict)
    marker: bool = True
    read_failures: list[BaseException] = field(default_factory=list)
    write_failures: list[BaseException] = field(default_factory=list)
    writes: list[dict[str, EntityState]] = field(default_factory=list)

    def states(self) -> dict[str, EntityState]:
        return {e: EntityState.from_bytes(v) for e, v in self.data.items()}

    async def read(
        self, entity_ids: Sequence[str], *, check_marker: bool = False
    ) -> dict[str, EntityState | None]:
        if self.read_failures:
            raise self.read_failures.pop(0)
        self.effects.append(("read", ",".join(entity_ids)))
        if check_marker and not self.marker:
            raise StateLost("memory://", "marker")
        return {e: EntityState.from_bytes(self.data[e]) if e in self.data else None
                for e in dict.fromkeys(entity_ids)}

    async def write(self, states: Mapping[str, EntityState]) -> None:
        if self.write_failures:
            raise self.write_failures.pop(0)
        self.effects.append(("write", ",".join(sorted(states))))
        self.writes.append(dict(states))
        self.data.update({e: s.to_bytes() for e, s in states.items()})


def event(topic: str, partition: int, offset: int, value: bytes, key: bytes | None = None,
          timestamp: float | None = None) -> Any:
    """A Faust event as the handlers read it: ``event.message`` and its fields."""
    return SimpleNamespace(message=SimpleNamespace(
        topic=topic, partition=partition, offset=offset, key=key, value=value,
        timestamp=timestamp))
