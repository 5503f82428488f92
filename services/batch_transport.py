"""The batch transport of the hot topics: confluent-kafka underneath, whole batches to the agent.

Faust hands an agent one event at a time through its stream machinery; measured, that
alone caps a worker near the Faust passthrough's 3,700-4,000 events/s, whatever the agent
does (docs/scoring.md, "Batch transport"). The score agent reads its topic through a
:class:`BatchSource` instead: a confluent-kafka consumer of its own group
(``precog-{ns}-score``) that the worker owns, whose ``consume(num_messages=...)`` returns
a whole batch with one call, and it produces through a
:class:`~precog.services.batch_producer.BatchProducer` (confluent-kafka, idempotent,
``acks=all``, the murmur2 partitioner) that waits for a batch's delivery reports once.
Faust stays the application frame: the app, the other agents, timers, tables, the web
pages and the stop sequence.

Offsets follow the worker's rule (docs/reliability.md): a batch is consumed, handed to the
agent, and its offsets are committed only after the agent returned, i.e. after every
effect was acknowledged. Between batches the commit is asynchronous (no broker round trip
on the hot path; librdkafka sends commits in order); when partitions are revoked and when
the source stops, every handled offset is committed synchronously. Rebalances
happen inside ``consume``, so a revoked partition never has a batch in flight. An
unavailable broker is waited out (the commit is retried; the consumer reconnects by
itself); anything unexpected stops the worker with the batch uncommitted. A graceful stop
lets the batch in flight finish and commit (bounded by ``worker.drain_seconds``), then
leaves the group.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from precog.services.reliability import stop_worker, until_available

from precog.errors import ServiceUnavailable
from precog.io import kafka

log = logging.getLogger("precog.transport")

#: how often librdkafka reports its statistics, from which ``precog_consumer_lag`` is set
LAG_STATS_MS = 5000
#: longest one consume call waits for a first record (the loop then checks for a stop)
IDLE_WAIT = 0.1


class Record:
    """One consumed Kafka record, shaped like a Faust event (``record.message`` is itself)."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "timestamp")

    def __init__(self, msg: Any) -> None:
        self.topic: str = msg.topic()
        self.partition: int = msg.partition()
        self.offset: int = msg.offset()
        self.key: bytes | None = msg.key()
        self.value: bytes | None = msg.value()
        kind, ms = msg.timestamp()
        self.timestamp: float | None = ms / 1000.0 if kind else None

    @property
    def message(self) -> Record:
        return self


#: consumer errors that mean "the broker is away": librdkafka reconnects by itself
_TRANSIENT = {
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError._RESOLVE,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NETWORK_EXCEPTION,
    KafkaError._WAIT_COORD, KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError._PARTITION_EOF,
    # a restarted broker answers before it has loaded every partition: for a few seconds a
    # topic the worker checked at start looks unknown (a deleted topic waits here too, with
    # the error in the log and, for the producer, a 503 naming kafka, instead of a crash loop)
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION,
    KafkaError.KAFKA_STORAGE_ERROR,
}
#: commit errors after which this member no longer owns the partitions: the next owner
#: redelivers from the last commit (at-least-once), nothing to retry here
_LOST_OWNERSHIP = {
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError._ASSIGNMENT_LOST, KafkaError.FENCED_INSTANCE_ID,
}


def is_transient(err: KafkaError) -> bool:
    """Whether waiting fixes ``err`` (the broker is away, a leader moves)."""
    return err.code() in _TRANSIENT or (err.retriable() and not err.fatal())


def kafka_unavailable(address: str) -> Callable[[BaseException], tuple[str, str] | None]:
    """:func:`until_available`'s test for confluent-kafka errors that waiting fixes."""
    def check(exc: BaseException) -> tuple[str, str] | None:
        if isinstance(exc, ServiceUnavailable):
            return exc.service, str(exc)
        if isinstance(exc, KafkaException) and is_transient(exc.args[0]):
            return "kafka", f"kafka is not reachable at {address}: {exc.args[0]}"
        return None
    return check


def batch_offsets(records: Sequence[Record]) -> list[TopicPartition]:
    """The offsets to commit after ``records``: one past the last, per partition.

    >>> class M:
    ...     def __init__(s, t, p, o): s.topic, s.partition, s.offset = t, p, o
    >>> done = batch_offsets([M("t", 0, 5), M("t", 1, 9), M("t", 0, 7)])
    >>> [(tp.partition, tp.offset) for tp in done]
    [(0, 8), (1, 10)]
    """
    last: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        if r.offset > last.get(key, -1):
            last[key] = r.offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def partition_lags(stats: str) -> dict[tuple[str, int], int]:
    """Consumer lag per partition from librdkafka's statistics JSON (``consumer_lag``).

    ``consumer_lag`` is the partition's high watermark minus the group's committed offset:
    what the consumer group still has to commit, the number KEDA's Kafka scaler scales on.
    librdkafka reports -1 while it does not know (nothing committed or fetched yet) and an
    internal partition -1 per topic; both are left out.

    >>> partition_lags(json.dumps({"topics": {"prod.events.tx": {"partitions": {
    ...     "0": {"partition": 0, "consumer_lag": 12}, "1": {"partition": 1, "consumer_lag": -1},
    ...     "-1": {"partition": -1, "consumer_lag": -1}}}}}))
    {('prod.events.tx', 0): 12}
    """
    out: dict[tuple[str, int], int] = {}
    for topic, t in json.loads(stats).get("topics", {}).items():
        for p in t.get("partitions", {}).values():
            if p.get("partition", -1) >= 0 and p.get("consumer_lag", -1) >= 0:
                out[(topic, int(p["partition"]))] = int(p["consumer_lag"])
    return out


class _InFlight:
    """One handed-over batch: the task doing its effects and the offsets it will commit."""

    __slots__ = ("task", "offsets")

    def __init__(self, task: asyncio.Task[None], offsets: list[TopicPartition]) -> None:
        self.task, self.offsets = task, offsets


class BatchSource:
    """One consumer group member on ``topics``: batches to ``handle``, committed after it.

    Up to ``inflight`` batches are handled at once (the index agent builds the next bulk
    request while Elasticsearch writes the last); their offsets are committed in
    consumption order, each only after its own and every earlier batch's ``handle``
    returned. A rebalance that revokes partitions first lets the batches in flight finish
    and commits them (inside librdkafka's revoke callback, bounded by the session
    timeout), so a partition changes hands with nothing of it in flight.
    """

    def __init__(self, rt: Any, name: str, topics: Sequence[str], group: str, size: int,
                 within: float, handle: Callable[[list[Record]], Awaitable[None]],
                 inflight: int = 1) -> None:
        self.rt, self.name, self.topics, self.group = rt, name, list(topics), group
        self.size, self.within, self.handle = size, within, handle
        self.inflight = max(1, inflight)
        self.address = rt.settings.kafka.bootstrap
        # one thread for every call on the consumer: librdkafka runs the rebalance
        # callbacks in the thread that calls consume
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"precog-{name}-consumer")
        self._consumer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assigned: list[tuple[str, int]] = []
        self._pending: deque[_InFlight] = deque()
        #: offsets of the handled batches, committed asynchronously; made durable
        #: synchronously when partitions are revoked and when the source stops
        self._done: dict[tuple[str, int], int] = {}
        #: handled offsets not yet handed to ``commit(asynchronous=True)`` (the next
        #: consume call does it)
        self._to_commit: list[TopicPartition] = []
        #: longest a consume call waits for the first record when nothing is queued
        self.idle_wait = max(within, IDLE_WAIT)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._unavailable = kafka_unavailable(self.address)
        #: partitions whose ``precog_consumer_lag`` series this member last set
        self._lag_series: set[tuple[str, int]] = set()

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this member owns now (for the watchdog)."""
        return list(self._assigned)

    def _on_assign(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        self._assigned = sorted((tp.topic, tp.partition) for tp in parts)
        log.info("%s: assigned %s", self.name, _describe(self._assigned))

    def _on_revoke(self, consumer: Any, parts: list[TopicPartition]) -> None:
        """In the consumer thread, inside ``consume``: finish and commit what is in flight."""
        log.info("%s: revoked %s", self.name, _describe(
            sorted((tp.topic, tp.partition) for tp in parts)))
        self._assigned = []
        offsets: list[TopicPartition] = []
        if self._loop is not None and self._pending:
            timeout = float(self.rt.settings.worker.session_timeout)
            try:
                offsets = asyncio.run_coroutine_threadsafe(
                    self._finish_pending(), self._loop).result(timeout)
            except Exception as exc:  # failed or too slow: the new owner redelivers
                log.warning("%s: batches in flight at the rebalance not committed (%r); "
                            "their partitions' new owner redelivers them", self.name, exc)
        offsets = self._durable(offsets)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("%s: commit at the rebalance failed (%s); redelivered",
                            self.name, exc.args[0])

    async def _finish_pending(self) -> list[TopicPartition]:
        """Await every batch in flight (in the loop); the offsets to commit after them."""
        done: list[TopicPartition] = []
        while self._pending:
            head = self._pending.popleft()
            try:
                await head.task
            except Exception as exc:  # nothing later is committed either; the worker stops
                asyncio.ensure_future(stop_worker(self.rt, self.name, exc))
                raise
            done += head.offsets
        return _latest(done)

    def _open(self) -> Any:
        s = self.rt.settings
        consumer = kafka.consumer(s, self.group, **{
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(s.worker.session_timeout * 1000),
            # fewer, fuller fetches: a fetch returning as soon as one record is there made
            # the broker the largest CPU user at moderate rates (docs/scoring.md)
            "fetch.wait.max.ms": s.worker.batch_fetch_max_wait_ms,
            "fetch.min.bytes": s.worker.batch_fetch_min_bytes,
            "client.id": f"precog-{self.name}-{self.rt.worker_name}",
            "on_commit": self._on_commit,
            "statistics.interval.ms": LAG_STATS_MS,
            "stats_cb": self._on_stats,
        })
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        return consumer

    def _on_stats(self, stats: str) -> None:
        """In the consumer thread: ``precog_consumer_lag`` of the partitions this member owns.

        Only owned partitions are reported, so the series of a partition that moved to
        another worker disappear here and the sum over the workers is the group's lag.
        """
        gauge = self.rt.metrics.consumer_lag
        owned = set(self._assigned)
        lags = {tp: lag for tp, lag in partition_lags(stats).items() if tp in owned}
        for topic, partition in self._lag_series - set(lags):
            gauge.remove(self.group, topic, str(partition))
        for (topic, partition), lag in lags.items():
            gauge.labels(self.group, topic, str(partition)).set(lag)
        self._lag_series = set(lags)

    def _on_lost(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        # the group already gave them away (session timeout): nothing may be committed
        log.warning("%s: partitions lost %s; their batches in flight are redelivered",
                    self.name, _describe(sorted((tp.topic, tp.partition) for tp in parts)))
        self._assigned = []

    def _consume(self, commit: list[TopicPartition] | None = None) -> list[Record]:
        """One batch, in the consumer thread; first the asynchronous commit of the batches
        handled since the last call (one hop to this thread for both).

        Adaptive: what the local queue holds now is taken at once (``consume`` with no
        wait: a full batch under a backlog); only when it is empty does the call wait, up to
        ``idle_wait``, for the *first* record, and then takes what came with it, without
        waiting for company. ``consume(n, timeout)`` waits for ``n`` records or the
        timeout, which at moderate rates added ``within`` to every event's latency; a
        batch still fills to ``size`` whenever that many are queued.
        """
        c = self._consumer
        if commit:
            c.commit(offsets=commit, asynchronous=True)
        msgs = c.consume(self.size, 0)
        if not msgs:
            msgs = c.consume(1, self.idle_wait)
            if msgs and self.size > 1:
                msgs += c.consume(self.size - 1, 0)
        records = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                records.append(Record(msg))
            elif is_transient(err):  # not a record: nothing is skipped
                log.info("%s: %s (waiting for the broker)", self.name, err)
            else:
                raise KafkaException(err)
        return records

    async def run(self) -> None:
        """Consume, handle and commit batch after batch until :meth:`stop`."""
        loop = self._loop = asyncio.get_running_loop()
        self._consumer = await loop.run_in_executor(self._pool, self._open)
        try:
            while not self._stopping:
                await self._commit_finished(wait=len(self._pending) >= self.inflight)
                if self._stopping:
                    break
                if len(self._pending) >= self.inflight:
                    continue
                commit, self._to_commit = self._to_commit, []
                records = await until_available(
                    self.rt.health, f"{self.name}: consume",
                    lambda c=commit: loop.run_in_executor(self._pool, self._consume, c),
                    is_unavailable=self._unavailable)
                if records:
                    task = asyncio.ensure_future(self.handle(records))
                    self._pending.append(_InFlight(task, batch_offsets(records)))
            await self._commit_finished(wait=True, every=True)
            final = self._durable([])
            if final:
                await self._commit(final, sync=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await stop_worker(self.rt, self.name, exc)

    async def _commit_finished(self, wait: bool, every: bool = False) -> None:
        """Commit the batches at the head that are done (waiting for the first if ``wait``)."""
        done: list[TopicPartition] = []
        while self._pending and (self._pending[0].task.done() or wait):
            head = self._pending[0]
            await head.task  # a failure raises here: it and every later batch stay held
            self._pending.popleft()
            done += head.offsets
            wait = every
        if done:
            await self._commit(_latest(done), sync=False)

    def _durable(self, offsets: list[TopicPartition]) -> list[TopicPartition]:
        """Every handled offset (``offsets`` and those committed asynchronously), to commit
        synchronously; forgets them, since after a revoke or a stop they are not ours."""
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self._done[key] = max(self._done.get(key, -1), tp.offset)
        out = [TopicPartition(t, p, o) for (t, p), o in sorted(self._done.items())]
        self._done.clear()
        self._to_commit = []  # covered by ``out``
        return out

    def _on_commit(self, err: KafkaError | None, _parts: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("%s: an asynchronous commit failed (%s); a later commit covers it,"
                        " or the batch is redelivered", self.name, err)

    async def _commit(self, offsets: list[TopicPartition], sync: bool) -> None:
        """Commit ``offsets``: asynchronously between batches (no round trip on the hot
        path; the commits reach the broker in order), synchronously at the end."""
        loop = asyncio.get_running_loop()
        if not sync:
            # sent by the next consume call, in the consumer thread (no hop of its own)
            for tp in offsets:
                self._done[(tp.topic, tp.partition)] = tp.offset
            self._to_commit = _latest(self._to_commit + offsets)
            return

        def commit() -> None:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() in _LOST_OWNERSHIP:
                    log.warning("%s: commit refused after a rebalance (%s); the partitions'"
                                " new owner redelivers this batch", self.name, exc.args[0])
                    return
                raise

        await until_available(self.rt.health, f"{self.name}: commit offsets",
                              lambda: loop.run_in_executor(self._pool, commit),
                              is_unavailable=self._unavailable)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Let the batches in flight finish and commit (bounded), then leave the group."""
        self._stopping = True
        task = self._task
        drain = self.rt.settings.worker.drain_seconds
        if task is not None and not task.done() and self.rt.health.fatal is None:
            try:
                await asyncio.wait_for(asyncio.shield(task), drain)
            except TimeoutError:
                log.warning("%s: the batches in flight did not finish within %.0fs; they are"
                            " abandoned uncommitted (redelivered)", self.name, drain)
            except Exception as exc:  # it has already stopped the worker
                log.debug("%s ended with %r", self.name, exc)
        if task is not None and not task.done():
            task.cancel()
        for pending in self._pending:
            pending.task.cancel()
        self._pending.clear()
        if self._consumer is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, self._consumer.close)
        for topic, partition in self._lag_series:  # this member owns nothing any more
            self.rt.metrics.consumer_lag.remove(self.group, topic, str(partition))
        self._lag_series = set()
        self._pool.shutdown(wait=False)


def _latest(offsets: list[TopicPartition]) -> list[TopicPartition]:
    """The highest offset per partition of ``offsets``."""
    best: dict[tuple[str, int], int] = {}
    for tp in offsets:
        key = (tp.topic, tp.partition)
        best[key] = max(best.get(key, -1), tp.offset)
    return [TopicPartition(t, p, o) for (t, p), o in sorted(best.items())]


def _describe(parts: list[tuple[str, int]]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in parts) or "nothing"
