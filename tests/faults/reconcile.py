"""Account for every event of a fault scenario from Kafka itself, independently of the worker.

Every offset of the events topic must end as a prediction (its provenance names the
event's partition and offset) or a dead letter (it names the source partition and
offset). Lost = offsets with neither; duplicates = extra predictions of one offset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from precog.avro import Codec
from precog.io import kafka
from precog.settings import Settings


def read_all(settings: Settings, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` up to its current end (all partitions)."""
    try:
        return list(kafka.read_to_end(settings, topic, "precog-reconcile", idle_timeout=timeout))
    except TimeoutError as exc:
        raise AssertionError(f"{topic}: not read to its end ({exc})") from None


@dataclass
class Reconciliation:
    events: int
    predicted: int
    dead_letters: int
    lost: list[tuple[int, int]] = field(default_factory=list)
    duplicates: int = 0
    both: list[tuple[int, int]] = field(default_factory=list)

    def row(self) -> str:
        return (f"events {self.events}, predicted {self.predicted}, dead letters "
                f"{self.dead_letters}, lost {len(self.lost)}, duplicates {self.duplicates}")


def reconcile(settings: Settings, events_topic: str) -> Reconciliation:
    """Offsets of ``events_topic`` against predictions and dead letters (see module doc)."""
    events = read_all(settings, events_topic)
    pred_codec, dlq_codec = Codec.for_schema("prediction"), Codec.for_schema("dead_letter")
    predicted: Counter[tuple[int, int]] = Counter()
    for m in read_all(settings, settings.topic("predictions")):
        prov = pred_codec.decode(m.value())["provenance"]
        if prov["source_topic"] == events_topic:
            predicted[(prov["partition"], prov["offset"])] += 1
    dead: set[tuple[int, int]] = set()
    for m in read_all(settings, settings.topic("dlq")):
        rec = dlq_codec.decode(m.value())
        if rec["source_topic"] == events_topic:
            dead.add((rec["partition"], rec["offset"]))
    offsets = {(m.partition(), m.offset()) for m in events}
    return Reconciliation(
        events=len(offsets),
        predicted=len(predicted),
        dead_letters=len(dead),
        lost=sorted(offsets - set(predicted) - dead),
        duplicates=sum(n - 1 for n in predicted.values()),
        both=sorted(set(predicted) & dead),
    )
