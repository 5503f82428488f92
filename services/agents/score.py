"""The score agent: events -> features (Redis) -> leader + challengers -> ``{ns}.predictions``.

Per micro-batch: one Redis read, one ``predict_proba`` per model, predictions sent and
acknowledged by Kafka, then one Redis write, then the offsets may be committed. Producing
before the state write means a crash in between re-scores the event from the same state
(same prediction id, same features); the state's offset watermark makes the write itself
idempotent when a batch is redelivered.

Up to ``PRECOG_SCORE_INFLIGHT_BATCHES`` batches are in flight: the next one reads its
states and is featurized while the last waits for its acks and its write
(:class:`StateChain`, docs/scoring.md "Batches in flight").

The batch's offsets are held until all of that is acknowledged (services/reliability.py):
Redis or Kafka being down is waited out, a bad record (decode, validation, featurize,
encode, too large) goes to the DLQ without touching its neighbours, and anything else
stops the worker with the batch uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
from precog.services.batch_transport import BatchSource
from precog.services.dlq import Failed, send_dead_letters
from precog.services.feature_store import (
    OnlineStore,
    RedisOnlineStore,
    StateLost,
    committed_offsets,
)
from precog.services.reliability import OutRecord, Producer, until_available
from precog.services.runtime import Runtime, now_ms

from precog.errors import EventError, ValidationError
from precog.features import EntityState, FeatureColumns, Featurizer
from precog.io.kafka import CONTROL_TOPIC
from precog.monitor.alerts import make_alert
from precog.prediction_writer import BatchRows, PredictionWriter
from precog.scoring import EventContext, ModelSet, score_batch
from precog.validation import check_batch, failure_reason

log = logging.getLogger("precog.score")


def score_group(settings: Any) -> str:
    """The consumer group of the score agent on the events topic (``precog-{ns}-score``)."""
    return str(settings.group("score"))


#: the score agent's stages in ``precog_batch_stage_seconds`` (docs/scoring.md "Metrics")
SCORE_STAGES = ("decode", "state_read", "featurize", "predict_encode", "publish", "state_write")


class RecordTooLarge(EventError):
    """The record this event produces is larger than a Kafka request may carry."""


class _Valid:
    __slots__ = ("record", "origin", "msg")

    def __init__(self, record: dict[str, Any], origin: EventContext, msg: Any) -> None:
        self.record = record
        self.origin = origin
        self.msg = msg


def _failed(v: _Valid | Any, stage: str, exc: BaseException) -> Failed:
    msg = v.msg if isinstance(v, _Valid) else v
    origin = EventContext(msg.topic, msg.partition, msg.offset)
    return Failed(origin, stage, exc, msg.key, msg.value, msg.timestamp)


def _decode_and_check(rt: Runtime, events: Sequence[Any]) -> tuple[list[_Valid], list[Failed]]:
    """The batch's valid records, and the failures (decode, validation) for the DLQ."""
    reader = rt.event_reader()  # the codec's answers, compiled, in the namespace's format
    now = now_ms()
    decoded: list[tuple[dict[str, Any], Any]] = []
    failed: list[Failed] = []
    for event in events:
        msg = event.message
        try:
            decoded.append((reader.decode(msg.value), msg))
        except EventError as exc:
            failed.append(_failed(msg, "decode", exc))
    valid: list[_Valid] = []
    checks = check_batch(rt.spec, [record for record, _ in decoded], now)
    for (record, msg), failures in zip(decoded, checks, strict=True):
        if failures:
            failed.append(_failed(msg, "validate", ValidationError(failure_reason(failures))))
        else:
            valid.append(_Valid(record, EventContext(msg.topic, msg.partition, msg.offset), msg))
    return valid, failed


class Scorable(Protocol):
    """An event on its way to a prediction: the decoded record and where it came from."""

    @property
    def record(self) -> dict[str, Any]: ...

    @property
    def origin(self) -> EventContext: ...


_S = TypeVar("_S", bound=Scorable)


def featurize_isolating(
    featurizer: Featurizer, states: dict[str, EntityState | None], valid: list[_S],
) -> tuple[list[_S], FeatureColumns, list[tuple[_S, Exception]]]:
    """Features of the batch in one pass; record by record when one of them breaks the pass.

    The record-by-record pass chains the same states in the same order, so its results
    equal the batch pass for every record that does not fail; a failing record is returned
    with its error (the agent's DLQ, a 422 of ``precog serve``) and leaves its entity's
    state as it was.
    """
    items = [(v.record, v.origin.partition, v.origin.offset) for v in valid]
    try:
        return valid, featurizer.featurize_columns(states, items), []
    except (ArithmeticError, ValueError, TypeError) as exc:
        log.warning("featurize failed for the batch (%r); isolating the record", exc)
    current: dict[str, EntityState | None] = dict(states)
    changed: dict[str, EntityState] = {}
    kept: list[_S] = []
    rows: list[FeatureColumns] = []
    failed: list[tuple[_S, Exception]] = []
    for v, item in zip(valid, items, strict=True):
        try:
            one = featurizer.featurize_columns(current, [item])
        except (ArithmeticError, ValueError, TypeError) as exc:
            failed.append((v, exc))
            continue
        current.update(one.changed)
        changed.update(one.changed)
        kept.append(v)
        rows.append(one)
    n = len(featurizer.names)
    return kept, FeatureColumns(
        X=np.vstack([r.X for r in rows]) if rows else np.empty((0, n)),
        gaps_ms=np.concatenate([r.gaps_ms for r in rows]) if rows else np.empty(0, np.int64),
        stateful=featurizer.stateful, changed=changed,
    ), failed


class Writers:
    """The prediction writer of the current model set (one per roles revision) for a channel."""

    def __init__(self, channel: str = "stream") -> None:
        self.channel = channel
        self._models: ModelSet | None = None
        self._writer: PredictionWriter | None = None

    def get(self, rt: Runtime, featurizer: Featurizer, models: ModelSet) -> PredictionWriter:
        if self._writer is None or self._models is not models:
            self._writer = PredictionWriter(
                rt.codec("prediction"), models, featurizer.names, spec_name=rt.spec.name,
                namespace=rt.settings.namespace, event_schema=rt.event_schema_label(),
                code_version=rt.code_version, worker=rt.worker_name, channel=self.channel,
            )
            self._models = models
        return self._writer


_WRITERS = Writers()


def encode_predictions(
    rt: Runtime, writer: PredictionWriter, models: ModelSet, valid: list[_S],
    columns: FeatureColumns, limit: int,
) -> tuple[list[tuple[_S, OutRecord]], list[tuple[_S, Exception]]]:
    """Prediction records of the batch, encoded; a record that cannot be is returned with
    its error."""
    if not valid:  # every record failed before: nothing to score
        return [], []
    ev = rt.spec.event
    X = columns.X
    entity_ids = [str(v.record[ev.entity_field]) for v in valid]
    rows = BatchRows(
        gaps_ms=columns.gaps_ms, stateful=columns.stateful,
        event_ids=[str(v.record[ev.id_field]) for v in valid],
        entity_ids=entity_ids, buckets=models.plan.buckets(entity_ids),
        event_times=np.array([int(v.record[ev.time_field]) for v in valid], dtype=np.int64),
        X=X, scores=score_batch(models, X), origins=[v.origin for v in valid],
    )
    encoded = writer.encode(rows, now_ms())
    out: list[tuple[_S, OutRecord]] = []
    failed: list[tuple[_S, Exception]] = []
    for v, key, value in zip(valid, rows.event_ids, encoded, strict=True):
        if isinstance(value, Exception):
            failed.append((v, value))
            continue
        try:
            raw_key = key.encode()
        except UnicodeEncodeError as exc:
            failed.append((v, exc))
            continue
        if len(raw_key) + len(value) > limit:
            failed.append((v, RecordTooLarge(
                f"prediction of {len(raw_key) + len(value)} bytes > {limit}"
                " (producer request limit)"
            )))
            continue
        out.append((v, (raw_key, value, None, None)))
    return out, failed


class _Slot:
    """One batch's place in a :class:`StateChain`."""

    __slots__ = ("seq", "seen", "after_featurized", "after_written", "featurized", "written")

    def __init__(self, seq: int, after_featurized: asyncio.Future[bool] | None,
                 after_written: asyncio.Future[bool] | None) -> None:
        loop = asyncio.get_running_loop()
        self.seq = seq
        self.seen = -1  # the newest batch whose write was complete when this one read
        self.after_featurized, self.after_written = after_featurized, after_written
        self.featurized: asyncio.Future[bool] = loop.create_future()
        self.written: asyncio.Future[bool] = loop.create_future()


class StateChain:
    """The score agent's batches in flight, in order where their effects meet.

    Batch N+1 reads its entities' states from Redis and is featurized while batch N still
    waits for Kafka's acks and for its own state write. What N's write is about to store
    is kept here (the overlay) and stands in for what Redis may still answer for those
    entities, so N+1 chains from N's states exactly as if N had been written first. In
    consumption order, always: featurizing (N+1 after N), the state writes (a state never
    overwritten by an older one) and, by the batch source, the commits. A batch whose
    predecessor failed raises before its own write (the worker stops; both are
    redelivered from the last commit, and the watermark covers what was written).

    An entry leaves the overlay once a batch read Redis after the entry's write completed
    (every later read sees it there), and the overlay empties whenever no batch is in
    flight, so nothing held here outlives the writes it stands for (a partition that
    moves away and back is read from Redis again).
    """

    def __init__(self) -> None:
        self._overlay: dict[str, tuple[int, EntityState]] = {}
        self._seq = 0
        self._written = -1  # writes complete in order: every batch up to this one is stored
        self._last: _Slot | None = None
        self._open = 0

    @property
    def held(self) -> int:
        """How many entities' states are held for batches in flight."""
        return len(self._overlay)

    def begin(self) -> _Slot:
        """A place for the next batch, behind every batch begun before it."""
        last = self._last
        slot = _Slot(self._seq, last.featurized if last else None,
                     last.written if last else None)
        self._seq += 1
        self._open += 1
        self._last = slot
        return slot

    def reading(self, slot: _Slot) -> None:
        """``slot`` is about to read Redis: what is written by now, that read sees."""
        slot.seen = self._written

    async def states(self, slot: _Slot,
                     read: dict[str, EntityState | None]) -> dict[str, EntityState | None]:
        """After the previous batch featurized: ``read`` with the states of the batches in
        flight in place of Redis's answers."""
        if slot.after_featurized is not None:
            await slot.after_featurized
        overlay = self._overlay
        for entity in [e for e, (seq, _) in overlay.items() if seq <= slot.seen]:
            del overlay[entity]  # written before this read: Redis answered with it
        if not overlay:
            return read
        out = dict(read)
        for entity in read:
            held = overlay.get(entity)
            if held is not None:
                out[entity] = held[1]
        return out

    async def featurized(self, slot: _Slot, changed: dict[str, EntityState]) -> None:
        """``slot``'s new states, for the batches behind it until they are written (after
        the previous batch's: a batch with nothing to featurize keeps its place too)."""
        if slot.after_featurized is not None:
            await slot.after_featurized
        seq = slot.seq
        for entity, state in changed.items():
            self._overlay[entity] = (seq, state)
        _settle(slot.featurized, True)

    async def turn_to_write(self, slot: _Slot) -> None:
        """Wait until every earlier batch's write is complete; raise if one failed."""
        if slot.after_written is not None and not await slot.after_written:
            raise RuntimeError("an earlier batch failed: this one's state is not written")

    def end(self, slot: _Slot, ok: bool) -> None:
        """``slot`` is done (written, when ``ok``); the batches behind it may go on."""
        _settle(slot.featurized, ok)
        if ok:
            self._written = slot.seq
        _settle(slot.written, ok)
        self._open -= 1
        if self._open == 0:
            self._overlay.clear()
            self._last = None


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def score_events(
    rt: Runtime, store: OnlineStore, producer: Producer, featurizer: Featurizer,
    events: Sequence[Any], chain: StateChain | None = None, slot: _Slot | None = None,
) -> int:
    """Process one micro-batch; returns the number of predictions sent.

    Every effect is acknowledged before this returns: dead letters, then predictions, by
    ``producer``, then the new entity states by ``store``. The store and the producer being
    unavailable is waited out (:func:`~precog.services.reliability.until_available`); a bad
    record goes to the DLQ. ``events`` have ``event.message`` with topic, partition,
    offset, key, value, timestamp (:class:`~precog.services.batch_transport.Record`, or a
    Faust event); the Faust app itself is not used.
    """
    chain = chain or StateChain()
    slot = slot or chain.begin()
    ok = False
    try:
        n = await _score_in_chain(rt, store, producer, featurizer, events, chain, slot)
        ok = True
        return n
    finally:
        chain.end(slot, ok)


async def _score_in_chain(
    rt: Runtime, store: OnlineStore, producer: Producer, featurizer: Featurizer,
    events: Sequence[Any], chain: StateChain, slot: _Slot,
) -> int:
    spec = rt.spec
    rt.metrics.events_in.labels(spec.name).inc(len(events))
    clock = rt.metrics.stages("score", SCORE_STAGES)
    valid, failed = _decode_and_check(rt, events)
    clock.lap("decode")
    models = rt.models
    assert models is not None, "score agent started before models were loaded"
    new_states: dict[str, EntityState] = {}
    out: list[tuple[_Valid, OutRecord]] = []
    if valid:
        entity_field = spec.event.entity_field
        entities = list(dict.fromkeys(str(v.record[entity_field]) for v in valid))
        chain.reading(slot)
        read = await until_available(rt.health, "score: read entity state",
                                     lambda: _read_states(rt, store, producer, entities))
        states = await chain.states(slot, read)
        clock.lap("state_read")
        while True:
            kept, columns, bad = featurize_isolating(featurizer, states, valid)
            new_states = columns.changed
            failed += [_failed(v, "featurize", exc) for v, exc in bad]
            clock.lap("featurize")
            out, bad = encode_predictions(rt, _WRITERS.get(rt, featurizer, models), models,
                                          kept, columns, producer.record_limit)
            clock.lap("predict_encode")
            if not bad:
                break
            # a record that cannot be published must not move its entity's state:
            # featurize the batch again without it (the chains are pure functions)
            failed += [_failed(v, "encode", exc) for v, exc in bad]
            dropped = {v.origin for v, _ in bad}  # (topic, partition, offset): one record
            valid = [v for v in kept if v.origin not in dropped]
    await chain.featurized(slot, new_states)
    await send_dead_letters(rt, producer, failed)
    if out:
        await producer.produce(rt.settings.topic("predictions"), [rec for _, rec in out],
                               "score: publish predictions")
    clock.lap("publish")
    # every prediction acknowledged before the state moves on, and every earlier batch's
    # state written before this one's
    await chain.turn_to_write(slot)
    if out:
        await until_available(rt.health, "score: write entity state",
                              lambda: store.write(new_states))
    clock.lap("state_write")
    clock.observe()
    rt.metrics.predictions_out.labels(spec.name).inc(len(out))
    return len(out)


async def _read_states(
    rt: Runtime, store: OnlineStore, producer: Producer, entities: list[str]
) -> dict[str, EntityState | None]:
    """The entities' states; raises :class:`StateLost` (after one alert) when the marker is gone."""
    try:
        states = await store.read(entities, check_marker=True)
    except StateLost as exc:
        if "redis-state" not in rt.health.dependencies:
            await _state_lost_alert(rt, producer, str(exc))
        raise
    return states


async def _state_lost_alert(rt: Runtime, producer: Producer, message: str) -> None:
    """One ``quality`` alert on ``{ns}.alerts`` and in ES ``{ns}-alerts`` (best effort)."""
    t = now_ms()
    alert = make_alert(rt.settings.namespace, "quality", "feature_state_lost", window="redis",
                       statistic=1.0, threshold=0.0, message=message, event_time=t,
                       detected_time=t, source=rt.spec.name, severity="critical",
                       identity=f"redis@{t}")
    log.error("ALERT quality: %s", message)
    await producer.produce(rt.settings.topic("alerts"), [
        (alert["alert_id"].encode(), rt.codec("alert").encode(alert), None, None)
    ], "score: publish the state-loss alert")
    try:
        await rt.es.index(index=rt.settings.index("alerts"), id=alert["alert_id"],
                          document=alert)
    except Exception as exc:  # the Kafka alert is the record; the document is for Kibana
        log.warning("state-loss alert not indexed: %s", exc)


async def ensure_state_marker(rt: Runtime, store: RedisOnlineStore) -> None:
    """At start: a fresh namespace gets its state marker; a used one must still have it.

    Fresh means the worker group has committed nothing on the events topic yet; then there
    is no state to lose and the marker is written. A group with committed offsets and no
    marker lost its state: the first batch's read raises :class:`StateLost` and waits.
    """
    await until_available(rt.health, "score: check the state marker",
                          lambda: mark_fresh_namespace(rt, store))


async def mark_fresh_namespace(rt: Runtime, store: RedisOnlineStore) -> None:
    """:func:`ensure_state_marker`'s check, once: raises ``ServiceUnavailable`` when a
    dependency is down (``precog serve`` answers 503 with it)."""
    if await store.has_marker():
        return
    loop = asyncio.get_running_loop()
    committed = await loop.run_in_executor(None, committed_offsets, rt.settings,
                                           score_group(rt.settings), rt.spec.event.topic)
    if not committed:
        await store.write_marker(f"worker {rt.worker_name} (fresh namespace)")
        log.info("fresh namespace: feature state marker %s written", store.marker_key)


async def wait_for_models(rt: Runtime) -> None:
    """Block scoring until the model-control record has been loaded."""
    waited = 0.0
    while rt.models is None:
        if waited and waited % 10 < 0.25:
            log.warning(
                "no model roles loaded yet from %s after %.0fs (a namespace without roles "
                "needs `precog train` or `precog models set-leader`)",
                rt.settings.topic(CONTROL_TOPIC), waited,
            )
        await asyncio.sleep(0.25)
        waited += 0.25


def register(rt: Runtime) -> None:
    """Read ``{ns}.events.<source>`` through a :class:`BatchSource` (group ``{ns}-score``).

    The batch transport (services/batch_transport.py) hands each consumed batch to
    :func:`score_events` and commits its offsets when that returned; predictions, dead
    letters and alerts go out through the worker's confluent-kafka producer
    (:meth:`Runtime.producer`).
    """
    featurizer = Featurizer(rt.spec)
    store = RedisOnlineStore(rt.settings, rt.spec)
    chain = StateChain()
    ready: asyncio.Future[None] | None = None

    async def prepare() -> None:
        await wait_for_models(rt)
        await ensure_state_marker(rt, store)

    async def handle(events: list[Any]) -> None:
        nonlocal ready
        started = time.perf_counter()
        slot = chain.begin()  # its place in line, before anything waits
        try:
            if ready is None:  # the first batches wait, held, until the models are loaded
                ready = asyncio.ensure_future(prepare())
            await ready
        except BaseException:
            chain.end(slot, False)
            raise
        await score_events(rt, store, rt.producer(), featurizer, events, chain, slot)
        rt.metrics.batch_latency.labels("score").observe(time.perf_counter() - started)
        rt.metrics.batch_size.labels("score").observe(len(events))
        rt.last_batch_time = time.time()

    source = BatchSource(
        rt, "score", [rt.settings.topic(rt.spec.event.topic)], score_group(rt.settings),
        rt.settings.score.batch_size, rt.settings.score.batch_timeout, handle,
        inflight=rt.settings.score.inflight_batches,
    )
    rt.batch_sources.append(source)

    @rt.app.task
    async def start_score() -> None:
        source.start()

    async def stop() -> None:
        await source.stop()
        await store.close()

    rt.on_stop.append(stop)
