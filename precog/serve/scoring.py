"""The one scoring layer under both front ends of ``precog serve`` (V2 and ``/v1/score``).

A request's events go the score agent's way (services/agents/score.py), with its pieces:
the same validation (:func:`~precog.validation.check_batch`), the same featurizer over the
Redis entity state, the same model set (hot-reloaded from ``{ns}.model-control`` by the
worker's :class:`~precog.services.agents.role_watcher.RoleWatcher`) and the same prediction
writer, with ``provenance.channel = "rest"``. Per request:

1. one Redis MGET reads the answers already given for its event ids, its entities' states
   and the state marker (idempotency: a repeated ``event_id`` gets its first answer back,
   and nothing else happens);
2. the new events are featurized from those states, scored by every model, encoded;
3. the predictions are published to ``{ns}.predictions`` and acknowledged by Kafka;
4. one pipelined Redis write: the new states (unless read-only), then the answers (TTL).

An event scored here enters its entity's state recorded by event id
(:data:`~precog.features.DIRECT_PARTITION`): when the same event later arrives on the
events topic, the worker does not apply it again; the worker records the ids of the events
it applies too, so an event sent here after the worker applied it is not applied again
(docs/scoring.md "State semantics").
Requests touching the same entity are serialised in this process (a lock per entity), so
two of them never read the same state and both write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from precog.errors import EventError, ServiceUnavailable
from precog.features import DIRECT_PARTITION, EntityState, Featurizer
from precog.scoring import EventContext, ModelSet, served_of
from precog.services.agents.score import (
    Writers,
    encode_predictions,
    featurize_isolating,
    mark_fresh_namespace,
)
from precog.services.batch_producer import BatchProducer
from precog.services.feature_store import RedisOnlineStore, StateLost
from precog.services.runtime import Runtime
from precog.validation import check_batch, check_event, failure_reason

_T = TypeVar("_T")


@dataclass(frozen=True)
class Rejected:
    """Why one event of a request cannot be scored: the DLQ's stage and reason."""

    index: int
    event_id: str | None
    stage: str  # decode | validate | featurize | encode (services/dlq.py stages)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "stage": self.stage,
                "reason": self.reason}


class InvalidEvents(EventError):
    """Some events of a request are invalid; none of the request was scored (422)."""

    def __init__(self, rejected: list[Rejected]) -> None:
        super().__init__("; ".join(f"event {r.index}: {r.stage}: {r.reason}" for r in rejected))
        self.rejected = rejected


class NotReady(ServiceUnavailable):
    """No model roles loaded yet from the model-control topic (503)."""


@dataclass
class _Event:
    """A decoded event on its way (:class:`~precog.services.agents.score.Scorable`)."""

    record: dict[str, Any]
    origin: EventContext
    index: int


@dataclass(frozen=True)
class Answer:
    """What a request gets back for one event, and whether it is a repeat."""

    body: dict[str, Any]
    replayed: bool


class ServeScorer:
    """Scores events synchronously with the worker's pieces; one per ``precog serve`` process."""

    def __init__(self, rt: Runtime, store: RedisOnlineStore, producer: BatchProducer, *,
                 read_only: bool, answer_ttl: int, timeout: float) -> None:
        self.rt = rt
        self.store = store
        self.producer = producer
        self.read_only = read_only
        self.answer_ttl = answer_ttl
        self.timeout = timeout
        self.featurizer = Featurizer(rt.spec)
        self.codec = rt.codec(rt.spec.event.schema_name)
        self.prediction_codec = rt.codec("prediction")
        self.writers = Writers(channel="rest")
        self.events_topic = rt.settings.topic(rt.spec.event.topic)
        self.redis_address = store.address
        self._marked = False
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    def answer_key(self, event_id: str, read_only: bool) -> str:
        """Redis key of the answer given for ``event_id``: ``{ns}:serve-answer:{spec}:{mode}:{id}``
        (mode ``rw`` or ``ro``: a read-only answer is not the answer of an update)."""
        mode = "ro" if read_only else "rw"
        return self.rt.settings.redis_key("serve-answer", self.rt.spec.name, mode, event_id)

    # -- the request path -----------------------------------------------------------
    def models(self) -> ModelSet:
        models = self.rt.models
        if models is None:
            raise NotReady("model-control", self.rt.settings.kafka.bootstrap,
                           f"no model roles loaded yet from"
                           f" {self.rt.settings.topic('model-control')}")
        return models

    def decode(self, raw: Sequence[Mapping[str, Any]], now: int) -> list[dict[str, Any]]:
        """The events as the worker would see them after decoding; 422 for any invalid one.

        A JSON event is written with the event schema and read back (so ``40`` becomes the
        ``40.0`` a double field holds, defaults are filled), then validated by
        :func:`~precog.validation.check_batch`: the DLQ's reasons, word for word.
        """
        rejected: list[Rejected] = []
        decoded: list[tuple[int, dict[str, Any]]] = []
        id_field = self.rt.spec.event.id_field
        for i, event in enumerate(raw):
            event_id = event.get(id_field) if isinstance(event, Mapping) else None
            event_id = event_id if isinstance(event_id, str) else None
            if not isinstance(event, Mapping):
                rejected.append(Rejected(i, None, "decode", "an event is a JSON object"))
                continue
            try:
                decoded.append((i, self.codec.decode(self.codec.encode(dict(event)))))
            except (EventError, ValueError, TypeError, AttributeError, OverflowError) as exc:
                failures = check_event(self.rt.spec, event, now)
                if failures:  # what the stream would say, had the producer encoded it
                    rejected.append(Rejected(i, event_id, "validate", failure_reason(failures)))
                else:
                    rejected.append(Rejected(i, event_id, "decode",
                                             f"not a {self.codec.writer.label} record: {exc}"))
        checks = check_batch(self.rt.spec, [record for _, record in decoded], now)
        for (i, record), failures in zip(decoded, checks, strict=True):
            if failures:
                rejected.append(Rejected(i, str(record[id_field]), "validate",
                                         failure_reason(failures)))
        if rejected:
            raise InvalidEvents(sorted(rejected, key=lambda r: r.index))
        return [record for _, record in decoded]

    async def score(self, raw: Sequence[Mapping[str, Any]], now: int, *,
                    read_only: bool | None = None) -> list[Answer]:
        """One answer per event, in order.

        Raises :class:`InvalidEvents` (422) or ``ServiceUnavailable`` (503).
        """
        read_only = self.read_only if read_only is None else read_only
        records = self.decode(raw, now)
        models = self.models()
        ev = self.rt.spec.event
        ids = [str(r[ev.id_field]) for r in records]
        entities = sorted({str(r[ev.entity_field]) for r in records})
        async with self._locked([f"entity:{e}" for e in entities] +
                                [f"event:{i}" for i in sorted(set(ids))]):
            unique = list(dict.fromkeys(ids))
            # one MGET: the answers already given, the entities' states and the marker
            states, values, marked = await self._bounded(
                "redis", self.redis_address,
                self.store.read_with(entities, [self.answer_key(i, read_only) for i in unique]))
            known = {i: orjson.loads(v) for i, v in zip(unique, values, strict=True)
                     if v is not None}
            fresh: dict[str, _Event] = {}
            for i, (event_id, record) in enumerate(zip(ids, records, strict=True)):
                if event_id not in known and event_id not in fresh:
                    fresh[event_id] = _Event(record, EventContext(
                        self.events_topic, DIRECT_PARTITION, -1), i)
            if fresh:
                if not marked:
                    await self._check_marker()
                known.update(await self._score_fresh(list(fresh.values()), states, models,
                                                     read_only))
        return [Answer(known[event_id], event_id not in fresh or fresh[event_id].index != i)
                for i, event_id in enumerate(ids)]

    async def _check_marker(self) -> None:
        """The marker was missing: write it for a fresh namespace, else the state was lost."""
        await self._bounded("redis", self.redis_address,
                            mark_fresh_namespace(self.rt, self.store))
        if not await self._bounded("redis", self.redis_address, self.store.has_marker()):
            raise StateLost(self.store.address, self.store.marker_key)

    async def _score_fresh(self, events: list[_Event], states: dict[str, EntityState | None],
                           models: ModelSet, read_only: bool) -> dict[str, dict[str, Any]]:
        rt, ev = self.rt, self.rt.spec.event
        kept, columns, bad = featurize_isolating(self.featurizer, states, events)
        rejected = [Rejected(e.index, str(e.record[ev.id_field]), "featurize", str(exc))
                    for e, exc in bad]
        writer = self.writers.get(rt, self.featurizer, models)
        out, bad = encode_predictions(rt, writer, models, kept, columns,
                                      self.producer.record_limit)
        rejected += [Rejected(e.index, str(e.record[ev.id_field]), "encode", str(exc))
                     for e, exc in bad]
        if rejected:
            raise InvalidEvents(sorted(rejected, key=lambda r: r.index))
        answers = {}
        for e, (_, value, _, _) in out:
            before = states.get(str(e.record[ev.entity_field]))
            event_id = str(e.record[ev.id_field])
            state = ("read-only" if read_only else
                     "already-applied" if before is not None and before.holds(event_id)
                     else "updated")
            answers[event_id] = self._answer(value, state)
        await self._bounded("kafka", self.producer.address, self.producer.produce(
            rt.settings.topic("predictions"), [rec for _, rec in out], "serve: publish"))
        rt.metrics.predictions_out.labels(rt.spec.name).inc(len(out))
        # every prediction acknowledged before the state moves on (the score agent's order);
        # the answers in the same round trip, after the states in the pipeline
        await self._bounded("redis", self.redis_address, self.store.write(
            {} if read_only else columns.changed,
            {self.answer_key(i, read_only): orjson.dumps(body) for i, body in answers.items()},
            self.answer_ttl))
        return answers

    def _answer(self, value: bytes, state: str) -> dict[str, Any]:
        """The response for one event: the published prediction record, and the served
        decision (the traffic arm's model: the leader under shadow) with its arm.

        ``state``: ``updated``, ``read-only``, or ``already-applied`` (the entity's state
        held this event already: scored here before, its answer expired).
        """
        prediction = self.prediction_codec.decode(value)
        served = served_of(prediction)
        return {
            "event_id": prediction["event_id"],
            "prediction_id": prediction["prediction_id"],
            "decision": {"label": served["label"], "score": served["score"],
                         **served["decided_by"], "policy": served["policy"],
                         "arm": served["arm"]},
            "state": state,
            "prediction": prediction,
        }

    # -- Redis and Kafka, bounded -------------------------------------------------------
    async def _bounded(self, service: str, address: str, call: Awaitable[_T]) -> _T:
        """``await call`` for at most ``timeout`` seconds; longer is ``ServiceUnavailable``."""
        try:
            return await asyncio.wait_for(call, self.timeout)
        except TimeoutError:
            raise ServiceUnavailable(service, address,
                                     f"no answer within {self.timeout:g}s") from None

    @contextlib.asynccontextmanager
    async def _locked(self, names: list[str]) -> Any:
        """Hold this process's locks of ``names`` (sorted: two requests never deadlock)."""
        async with contextlib.AsyncExitStack() as stack:
            for name in sorted(names):
                lock = self._locks.get(name)
                if lock is None:
                    lock = self._locks[name] = asyncio.Lock()
                await stack.enter_async_context(lock)
            yield
