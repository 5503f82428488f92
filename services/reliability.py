"""The worker's one failure rule, in one place: hold offsets, wait for dependencies, stop on bugs.

Every agent of the worker follows it (docs/scoring.md, "Failure rule"):

* **A bad record** (decode, validation, too large, numeric overflow, encode, an
  Elasticsearch refusal) goes to the dead-letter topic with its reason; its neighbours go
  on. That part lives in the agents, which know their records.
* **An unavailable dependency** (Redis, Elasticsearch, a Kafka produce) makes the agent
  wait and retry with capped exponential backoff (:func:`until_available`), while the batch
  keeps its offsets (:func:`consume_in_batches`). ``/health`` answers 503 naming the dependency
  (:class:`WorkerHealth`) until it answers again; then processing resumes by itself.
* **Anything unexpected** stops the worker (:func:`stop_worker`) without acknowledging
  the batch, so a restart redelivers it. A graceful stop cancels the batch in flight
  without acknowledging it either.

How offsets are held with Faust: an agent reads its stream with
:func:`consume_in_batches`, which takes one more reference on every message as it
arrives, so the stream's own acknowledgement only drops the count back to one; the
offset becomes committable at :func:`release`, after the batch's effects were
acknowledged. Faust commits, per partition, the run of acknowledged offsets that follows
the committed one; agents release their batches in offset order (the index agent chains
its in-flight batches), because Faust's commit arithmetic can skip an unacknowledged
head when acknowledgements arrive out of order (it compares the first acknowledged
offset with the committed one off by one, and not at all while that is unset or zero).
docs/scoring.md says why this, and not Faust's ``take_events``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiokafka import errors as aiokafka_errors
from aiokafka.errors import KafkaError as AIOKafkaError
from faust.exceptions import ProducerSendError

from precog.errors import ServiceUnavailable

log = logging.getLogger("precog.reliability")

_T = TypeVar("_T")

#: first and longest wait between two attempts on an unavailable dependency, seconds
INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: a still-unavailable dependency is logged again after this many seconds
LOG_EVERY = 30.0


@dataclass
class WorkerHealth:
    """What ``/health`` says beyond the models: dependencies being waited for, a fatal stop.

    >>> h = WorkerHealth()
    >>> h.waiting("redis", "redis is not reachable at redis://127.0.0.1:16379/0")
    True
    >>> h.waiting("redis", "again")  # already known: no new log line
    False
    >>> h.problems()
    {'redis': 'again'}
    >>> h.recovered("redis")
    True
    >>> h.problems()
    {}
    """

    dependencies: dict[str, str] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    conditions: dict[str, str] = field(default_factory=dict)
    fatal: str | None = None

    def waiting(self, dependency: str, detail: str) -> bool:
        """Record that ``dependency`` is unavailable; True when it was not known before."""
        new = dependency not in self.dependencies
        self.dependencies[dependency] = detail
        if new:
            self.since[dependency] = time.monotonic()
        return new

    def recovered(self, dependency: str) -> bool:
        """Record that ``dependency`` answers again; True when it had been unavailable."""
        self.since.pop(dependency, None)
        return self.dependencies.pop(dependency, None) is not None

    def problems(self) -> dict[str, str]:
        """Every current problem by name: unavailable dependencies and other conditions."""
        return {**self.dependencies, **self.conditions}


#: Kafka errors that waiting cannot fix. (aiokafka's ``retriable`` flag is no guide: its
#: "no metadata" timeout while the broker is down says ``retriable=False``.)
_PERMANENT_KAFKA_ERRORS = (
    aiokafka_errors.MessageSizeTooLargeError,
    aiokafka_errors.RecordListTooLargeError,
    aiokafka_errors.RecordTooLargeError,
    aiokafka_errors.TopicAuthorizationFailedError,
    aiokafka_errors.ClusterAuthorizationFailedError,
    aiokafka_errors.TransactionalIdAuthorizationFailed,
    aiokafka_errors.InvalidTopicError,
    aiokafka_errors.UnsupportedVersionError,
    aiokafka_errors.UnsupportedForMessageFormatError,
)


def dependency_of(exc: BaseException) -> tuple[str, str] | None:
    """``(dependency, detail)`` when ``exc`` means a backing service is unavailable.

    >>> dependency_of(ServiceUnavailable("redis", "redis://h:1/0", "refused"))
    ('redis', 'redis is not reachable at redis://h:1/0: refused')
    >>> dependency_of(ValueError("a bug")) is None
    True
    >>> dependency_of(aiokafka_errors.MessageSizeTooLargeError("2000000 bytes")) is None
    True
    """
    if isinstance(exc, ServiceUnavailable):
        return exc.service, str(exc)
    if isinstance(exc, _PERMANENT_KAFKA_ERRORS) or (
        isinstance(exc, ProducerSendError)
        and isinstance(exc.__cause__, _PERMANENT_KAFKA_ERRORS)
    ):
        return None  # no wait fixes it: a bug or a misconfiguration, the worker stops
    if isinstance(exc, AIOKafkaError | ProducerSendError):
        return "kafka", f"kafka produce failed: {type(exc).__name__}: {exc}"
    try:
        from elasticsearch import ConnectionError as ESConnectionError
        from elasticsearch import ConnectionTimeout
    except ImportError:  # pragma: no cover - elasticsearch is a dependency
        return None
    if isinstance(exc, ESConnectionError | ConnectionTimeout):
        return "elasticsearch", f"elasticsearch is not reachable: {exc}"
    return None


async def until_available(
    health: WorkerHealth, what: str, call: Callable[[], Awaitable[_T]],
    *, is_unavailable: Callable[[BaseException], tuple[str, str] | None] = dependency_of,
) -> _T:
    """``await call()`` until it succeeds, waiting with capped backoff while a dependency is down.

    Only errors that ``is_unavailable`` recognises are retried; anything else propagates
    (a bug: the caller stops the worker). ``what`` names the step in the log. When the
    call succeeds, the dependencies it waited for are healthy again.
    """
    backoff = INITIAL_BACKOFF
    logged_at = 0.0
    waited: set[str] = set()
    while True:
        try:
            result = await call()
        except Exception as exc:
            dep = is_unavailable(exc)
            if dep is None:
                raise
            name, detail = dep
            waited.add(name)
            now = time.monotonic()
            if health.waiting(name, detail) or now - logged_at >= LOG_EVERY:
                log.warning("%s waits for %s (offsets held, retrying up to every %.0fs): %s",
                            what, name, MAX_BACKOFF, detail)
                logged_at = now
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            continue
        for name in waited:
            if health.recovered(name):
                log.warning("%s: %s is available again; resuming", what, name)
        return result


async def release(stream: Any, events: Sequence[Any]) -> None:
    """Drop :func:`consume_in_batches`'s reference: the batch's offsets may now be committed."""
    for event in events:
        await stream.ack(event)


async def stop_worker(rt: Any, agent: str, exc: BaseException) -> None:
    """An unexpected error: stop the worker without acknowledging the batch, then block.

    The agent must not go on with the next batch: a later offset acknowledged before the
    failed one could be committed over it. The app's crash stops the worker process (exit
    code 1); its supervisor (systemd, Kubernetes, the test) starts it again, and the
    batch is redelivered from the last committed offset.
    """
    rt.health.fatal = f"{agent}: {type(exc).__name__}: {exc}"
    log.critical("%s agent stopped by an unexpected error; the worker stops without "
                 "committing the batch (a restart redelivers it)", agent, exc_info=exc)
    await rt.app.crash(exc)
    await asyncio.Event().wait()  # cancelled by the stopping app


#: room left in a Kafka request for the record batch framing and the headers, bytes
RECORD_OVERHEAD = 4096


def record_limit(app: Any) -> int:
    """Largest key + value (bytes) the worker's producer sends in one record."""
    return int(app.conf.producer_max_request_size) - RECORD_OVERHEAD


#: one record to produce: key, value, headers (or None), timestamp in seconds (or None)
OutRecord = tuple[bytes | None, bytes, Any, float | None]


async def produce_all(rt: Any, topic: str, records: Sequence[OutRecord], what: str) -> None:
    """Send records and wait until Kafka acknowledged every one.

    Records whose send fails because Kafka is unavailable are sent again (only those),
    with the backoff of :func:`until_available`; the caller's offsets stay held meanwhile.
    Uses the app's producer directly: Faust's ``Topic.send`` wraps every record in
    futures, sensors and callbacks (~140 us each in the profile) for the same bytes, key,
    partitioner (murmur2) and acknowledgement.
    """
    producer = rt.app.producer
    pending = list(records)

    async def attempt() -> None:
        nonlocal pending
        futures, error = [], None
        for key, value, headers, timestamp in pending:
            try:
                futures.append(
                    await producer.send(topic, key, value, None, timestamp, headers))
            except Exception as exc:  # e.g. no metadata while the broker is down
                error = exc
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        sent = pending[:len(futures)]
        failed = [rec for rec, res in zip(sent, results, strict=True)
                  if isinstance(res, BaseException)]
        failed += pending[len(futures):]
        if failed:
            pending = failed
            raise error or next(r for r in results if isinstance(r, BaseException))

    await until_available(rt.health, what, attempt)


class Producer(Protocol):
    """Where an agent's records go: the worker's Kafka producer (:class:`AppProducer`), or
    a recorder in unit tests. Topics are full names (``{ns}.predictions``)."""

    @property
    def record_limit(self) -> int:
        """Largest key + value, in bytes, of one record (:func:`record_limit`)."""
        ...

    async def produce(self, topic: str, records: Sequence[OutRecord], what: str) -> None:
        """Send ``records`` and return once Kafka acknowledged every one (:func:`produce_all`)."""
        ...

    async def send(self, topic: str, records: Sequence[OutRecord]) -> None:
        """Hand ``records`` to the producer in order, without waiting for their acknowledgement."""
        ...


class AppProducer:
    """:class:`Producer` over the worker's Faust app (``rt.app.producer``)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    @property
    def record_limit(self) -> int:
        return record_limit(self.rt.app)

    async def produce(self, topic: str, records: Sequence[OutRecord], what: str) -> None:
        await produce_all(self.rt, topic, records, what)

    async def send(self, topic: str, records: Sequence[OutRecord]) -> None:
        channel = self.rt.kafka_topic(topic)
        for key, value, headers, timestamp in records:
            await channel.send(key=key, value=value, headers=headers, timestamp=timestamp)


async def consume_in_batches(
    rt: Any, stream: Any, agent: str, size: int, within: float,
    handle: Callable[[list[Any]], Awaitable[None]],
) -> None:
    """Iterate ``stream``, hold every event, and hand ``handle`` batches of them in order.

    A batch has at most ``size`` events and waits at most ``within`` seconds for more
    after its first. ``handle`` must :func:`release` the batch's events once their effects
    are acknowledged (at once, or later in consumption order). An exception from
    ``handle`` stops the worker (:func:`stop_worker`); the held events stay uncommitted.

    Why not Faust's ``take_events``: it acknowledges in its ``finally`` every event it
    buffered, and while the loop body awaits, its background drainer can append events
    to the batch being processed (a race between its ``buffer_consuming`` future and the
    next batch's) which are then acknowledged without ever being yielded. Measured: 37
    of 3,000 events lost over three SIGTERM restarts, and an agent that stopped taking
    events after a restart. Here one loop reads (and holds) every event and a separate
    task batches and handles them, so nothing is acknowledged that was not handled.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(4 * size, 1))

    async def batches() -> None:
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + within
            while len(batch) < size:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                await handle(batch)
            except Exception as exc:
                await stop_worker(rt, agent, exc)

    worker = asyncio.ensure_future(batches())
    try:
        async for event in stream.events():
            event.message.incref()  # the stream's own ack after this body cannot commit it
            await queue.put(event)
            if worker.done():  # only a cancellation ends it
                break
    finally:
        worker.cancel()


async def for_each_event(
    rt: Any, stream: Any, agent: str, handle: Callable[[Any], Awaitable[None]],
) -> None:
    """A per-event agent's loop: ``handle(event)`` for every event, in order.

    Faust acknowledges each event when the loop moves on, and restarts an agent that
    raised, skipping what it was handling; here anything unexpected stops the worker
    (:func:`stop_worker`) with the event unacknowledged instead. Per-record problems are
    ``handle``'s to dead-letter.
    """
    async for event in stream.events():
        try:
            await handle(event)
        except Exception as exc:
            await stop_worker(rt, agent, exc)
