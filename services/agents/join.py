"""The join agent: ``{ns}.predictions`` + ``{ns}.outcomes`` -> ``{ns}.labeled`` and outcome fields
on the prediction documents.

Both topics must be keyed by event id *and* partitioned alike, so that one agent consumes
them together and every event id is handled by one partition. Predictions are (the
worker's producer, murmur2); outcomes come from outside, and a producer with another
partitioner (librdkafka's default CRC32, a custom one) would put an outcome on another
partition than its prediction: with two workers most outcomes would never join. So the
join reads outcomes through an internal repartition topic, ``{ns}.outcomes-rekeyed``, as
Kafka Streams does: the re-key agent decodes each outcome, produces it keyed by its join
key with murmur2 (acknowledged before its offset is released), and dead-letters what it
cannot decode. The join state
(:class:`precog.monitor.join.JoinState`) lives in a Faust table: every change is written
to the table's changelog topic on the partition of the event being processed, so a
restarted worker recovers its pending predictions, early outcomes and dedup markers.
One ``JoinState`` per partition keeps its watermark and expiry index; expiry runs
inside the stream (Faust writes table changes only while processing an event).

Prediction documents get ``outcome_label``/``outcome_time`` by partial update of
``{prediction_id}:{model_id}:{version}``; a document the index agent has not written yet
(404) is retried on the next flush, for a bounded number of attempts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust
from precog.services.agents.index import update_documents
from precog.services.dlq import Failed, send_dead_letter, send_dead_letters
from precog.services.reliability import (
    AppProducer,
    OutRecord,
    Producer,
    consume_in_batches,
    for_each_event,
    release,
)
from precog.services.runtime import Runtime
from prometheus_client import Counter

from precog.errors import EventError
from precog.monitor.join import JoinCounters, JoinOutput, JoinState
from precog.namespace import REKEYED_OUTCOMES_TOPIC
from precog.scoring import EventContext
from precog.spec import parse_duration

log = logging.getLogger("precog.join")

#: how often buffered Elasticsearch updates are flushed, seconds
FLUSH_SECONDS = 1.0
#: flushes a partial update is retried while its prediction document does not exist yet
MAX_UPDATE_ATTEMPTS = 120


class PartitionStore(MutableMapping[str, dict[str, Any]]):
    """The entries of one partition inside the shared Faust table."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition

    def __getitem__(self, key: str) -> dict[str, Any]:
        value = self.table[key]
        if value is None:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self.table.get(key)
        return default if value is None else value

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self.table[key] = {**value, "partition": self.partition}

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def __contains__(self, key: object) -> bool:
        return self.table.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return (k for k, v in list(self.table.items())
                if v is not None and v.get("partition") == self.partition)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class JoinMetrics:
    """Prometheus counters of the join, from the states' counters."""

    def __init__(self, rt: Runtime) -> None:
        self.total = Counter("precog_join", "Outcome join results", ["result"],
                             registry=rt.metrics.registry)
        self.pending = 0

    def add(self, before: dict[str, int], after: JoinCounters) -> None:
        for name, value in after.as_dict().items():
            if value != before.get(name, 0):
                self.total.labels(name).inc(value - before.get(name, 0))


class OutcomeJoin:
    """The join agent's state and effects.

    ``table`` holds the join state by event id (the Faust table in the worker; any mutable
    mapping will do); ``producer`` takes the labeled records and the dead letters.
    """

    def __init__(self, rt: Runtime, table: MutableMapping[str, Any], producer: Producer) -> None:
        self.rt = rt
        self.table = table
        self.producer = producer
        self.window_ms = parse_duration(rt.spec.outcome.label_window)
        self.states: dict[int, JoinState] = {}
        self.updates: dict[str, tuple[dict[str, Any], int]] = {}
        self.metrics = JoinMetrics(rt)
        self.predictions_topic = rt.settings.topic("predictions")
        self.labeled_topic = rt.settings.topic("labeled")
        self.prediction_codec = rt.codec("prediction")
        self.outcome_codec = rt.codec(rt.spec.outcome.schema_name)
        self.labeled_codec = rt.codec("labeled")

    def state(self, partition: int) -> JoinState:
        if partition not in self.states:
            st = JoinState(self.window_ms, max_entries=self.rt.settings.monitor.join_max_entries,
                           store=PartitionStore(self.table, partition))
            log.info("join partition %d: recovered %d entries", partition, len(st))
            self.states[partition] = st
        return self.states[partition]

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: their entries stay in the table (and changelog)."""
        for p in partitions:
            self.states.pop(p, None)

    async def handle(self, event: Any) -> None:
        """One prediction or re-keyed outcome: join, expire, send what resulted.

        An undecodable record is dead-lettered (and acknowledged); the labeled records
        are handed to the producer without waiting for Kafka's acknowledgement.
        """
        msg = event.message
        st = self.state(msg.partition)
        before = st.counters.as_dict()
        try:
            if msg.topic == self.predictions_topic:
                out = st.on_prediction(self.prediction_codec.decode(msg.value))
            else:
                out = st.on_outcome(self.outcome_codec.decode(msg.value))
        except EventError as exc:
            origin = EventContext(msg.topic, msg.partition, msg.offset)
            await send_dead_letter(self.rt, self.producer, origin, "join", exc, msg.key,
                                   msg.value, msg.timestamp)
            return
        out.extend(st.expire())
        self.metrics.add(before, st.counters)
        await self.emit(out)

    async def emit(self, out: JoinOutput) -> None:
        for rec in out.labeled:
            await self.producer.send(self.labeled_topic, [
                (rec["model_id"].encode(), self.labeled_codec.encode(rec), None, None)])
            doc_id = f"{rec['prediction_id']}:{rec['model_id']}:{rec['version']}"
            self.updates[doc_id] = ({"outcome_label": rec["outcome"],
                                     "outcome_time": rec["outcome_time"]}, 0)
        for late in out.late:
            log.info("late outcome for %s (outcome_time %s): not joined",
                     late["event_id"], late["outcome_time"])
        if out.evicted:
            log.warning("join state full: evicted %d entries", len(out.evicted))

    async def flush(self) -> None:
        """Partial updates of the prediction documents; 404s are kept for the next flush."""
        if not self.updates:
            return
        batch, self.updates = self.updates, {}
        again = await update_documents(self.rt, self.rt.settings.index("predictions"), batch,
                                       max_attempts=MAX_UPDATE_ATTEMPTS,
                                       what="outcome update")
        for doc_id, entry in again.items():  # newer outcomes of the same id win
            self.updates.setdefault(doc_id, entry)


#: outcomes re-keyed per batch, and the longest a batch waits to fill (seconds)
REKEY_BATCH, REKEY_WITHIN = 500, 0.05


def rekey_outcomes(rt: Runtime, events: list[Any]) -> tuple[list[OutRecord], list[Failed]]:
    """Each outcome keyed by its join key (same bytes the predictions are keyed by)."""
    codec = rt.codec(rt.spec.outcome.schema_name)
    join_key = rt.spec.outcome.join_key
    out: list[OutRecord] = []
    failed: list[Failed] = []
    for event in events:
        msg = event.message
        try:
            key = str(codec.decode(msg.value)[join_key]).encode()
        except EventError as exc:
            origin = EventContext(msg.topic, msg.partition, msg.offset)
            failed.append(Failed(origin, "join", exc, msg.key, msg.value, msg.timestamp))
            continue
        out.append((key, msg.value, None, msg.timestamp))
    return out, failed


def register(rt: Runtime) -> None:
    """Declare the re-key and join agents, the join's table and its flush timer."""
    ns = rt.settings.namespace
    table = rt.app.Table(
        f"{ns}-join-state",
        default=None,
        partitions=rt.settings.kafka.partitions,
        # no key/value types: JSON in and out (a type would need a faust Record on recovery)
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="pending predictions, early outcomes and dedup markers by event id",
    )
    producer = AppProducer(rt)
    join = OutcomeJoin(rt, table, producer)
    rt.join = join
    rekeyed = rt.settings.topic(REKEYED_OUTCOMES_TOPIC)
    source = rt.app.topic(
        rt.settings.topic("predictions"), rekeyed,
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    )

    @rt.app.agent(rt.topic(rt.spec.outcome.topic), name=f"{ns}-outcome-rekey")
    async def rekey_agent(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            out, failed = rekey_outcomes(rt, events)
            await send_dead_letters(rt, producer, failed)
            await producer.produce(rekeyed, out, "join: re-key outcomes")
            await release(stream, events)

        await consume_in_batches(rt, stream, "outcome-rekey", REKEY_BATCH, REKEY_WITHIN, handle)

    @rt.app.agent(source, name=f"{ns}-join")
    async def join_agent(stream: Any) -> None:
        await for_each_event(rt, stream, "join", join.handle)

    @rt.app.timer(FLUSH_SECONDS, name=f"{ns}-join-flush")
    async def flush() -> None:
        await join.flush()

    @rt.app.on_partitions_revoked.connect
    async def _revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
        join.forget({tp.partition for tp in revoked})

    rt.on_stop.append(join.flush)
