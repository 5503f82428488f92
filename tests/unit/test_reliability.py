"""The worker's failure rule (services/reliability.py) against small fakes of Faust and aiokafka.

The fakes follow the semantics the rule relies on: a Faust message starts with one reference
(the stream's), ``Stream.ack`` drops one and the message is acknowledged at zero, and the
stream's ``events()`` iterator drops its own reference to an event when it moves on to the
next; an aiokafka producer's ``send`` either raises at once or returns a future that
resolves to the broker's acknowledgement or a Kafka error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import faust
import precog.services.reliability as reliability
import pytest
from aiokafka import errors as aiokafka_errors
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import ConnectionTimeout
from faust.exceptions import ProducerSendError
from precog.services.reliability import (
    RECORD_OVERHEAD,
    WorkerHealth,
    consume_in_batches,
    dependency_of,
    produce_all,
    record_limit,
    release,
    stop_worker,
    until_available,
)

from precog.errors import ServiceUnavailable

pytestmark = pytest.mark.unit

REDIS_DOWN = ServiceUnavailable("redis", "redis://h:1/0", "refused")
REDIS_DETAIL = "redis is not reachable at redis://h:1/0: refused"
#: long enough for a batch that should be handed to be handed, short enough to keep it fast
SETTLE = 0.05
#: more backoff sleeps than any test expects: the code under test retries without end
MAX_RETRIES = 50


# ---------------------------------------------------------------------------- fakes


class FakeMessage:
    """Faust's ``Message`` reference counting: acknowledged once the count reaches zero."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.refcount = 1  # the stream's reference
        self.acked = False

    def incref(self, n: int = 1) -> None:
        self.refcount += n

    def ack(self) -> bool:
        if self.acked:
            return False
        self.refcount = max(self.refcount - 1, 0)
        if self.refcount == 0:
            self.acked = True
            return True
        return False


@dataclass
class FakeEvent:
    message: FakeMessage


class FakeStream:
    """A Faust stream of ``n`` events; before event ``i`` in ``gates`` it waits for that gate.

    Like Faust's iterator it drops the stream's reference to an event when asked for the next
    one, and like a Faust stream it never ends by itself.
    """

    def __init__(self, n: int, gates: dict[int, asyncio.Event] | None = None) -> None:
        self.items = [FakeEvent(FakeMessage(i)) for i in range(n)]
        self.gates = gates or {}
        self.released: list[int] = []  # offsets acknowledged through ``ack``, in order
        self.yielded_at: dict[int, float] = {}

    async def ack(self, event: FakeEvent) -> bool:
        self.released.append(event.message.offset)
        return event.message.ack()

    async def events(self) -> AsyncIterator[FakeEvent]:
        loop = asyncio.get_running_loop()
        for i, event in enumerate(self.items):
            if i in self.gates:
                await self.gates[i].wait()
            self.yielded_at[i] = loop.time()
            try:
                yield event
            finally:
                event.message.ack()  # Faust inlines this ack in its iterator
        await asyncio.Event().wait()

    def refcounts(self) -> list[int]:
        return [e.message.refcount for e in self.items]

    def acked(self) -> list[bool]:
        return [e.message.acked for e in self.items]


class FakeApp:
    """Just the app's ``crash``, recorded."""

    def __init__(self) -> None:
        self.crashes: list[BaseException] = []
        self.crashed = asyncio.Event()

    async def crash(self, exc: BaseException) -> None:
        self.crashes.append(exc)
        self.crashed.set()


@dataclass
class Send:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    timestamp: float | None
    headers: Any


@dataclass
class FakeProducer:
    """An aiokafka-like producer; ``fail[(key, n)]`` is the fate of the ``n``-th send of ``key``.

    An exception class in ``raise_now`` is raised by ``send`` itself (like aiokafka without
    metadata); one in ``fail`` is the future's result (like a failed produce request). Every
    call and every backoff sleep is appended to ``log`` so attempts can be told apart.
    """

    fail: dict[tuple[bytes | None, int], BaseException] = field(default_factory=dict)
    raise_now: dict[tuple[bytes | None, int], BaseException] = field(default_factory=dict)
    log: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)

    def sends_of(self, key: bytes | None) -> int:
        return sum(1 for e in self.log if isinstance(e, Send) and e.key == key)

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: float | None, headers: Any) -> asyncio.Future[Any]:
        nth = self.sends_of(key) + 1
        self.log.append(Send(topic, key, value, partition, timestamp, headers))
        if (key, nth) in self.raise_now:
            raise self.raise_now[(key, nth)]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        outcome = self.fail.get((key, nth))
        # acknowledged a moment later, as the broker would
        if outcome is None:
            loop.call_soon(future.set_result, ("metadata", key))
        else:
            loop.call_soon(future.set_exception, outcome)
        self.futures.append(future)
        return future


def runtime(producer: Any = None) -> SimpleNamespace:
    return SimpleNamespace(health=WorkerHealth(),
                           app=SimpleNamespace(producer=producer, crash=None))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff sleeps of precog.services.reliability, recorded and made instant."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)
        if len(recorded) > MAX_RETRIES:  # fail, not hang, when a wrong retry never ends
            raise AssertionError(f"more than {MAX_RETRIES} retries")
        await real_sleep(0)

    monkeypatch.setattr(reliability.asyncio, "sleep", fake_sleep)
    return recorded


def offsets(batch: list[FakeEvent]) -> list[int]:
    return [e.message.offset for e in batch]


async def run_consumer(
    rt: Any, stream: FakeStream, size: int, within: float,
    handle: Callable[[list[Any]], Awaitable[None]], until: asyncio.Event,
) -> None:
    """Run consume_in_batches until ``until`` is set (at most 2 s), then cancel it like a stop."""
    task = asyncio.ensure_future(consume_in_batches(rt, stream, "score", size, within, handle))
    try:
        await asyncio.wait_for(until.wait(), 2.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------------------- WorkerHealth


def test_waiting_is_true_only_for_a_new_dependency_and_keeps_the_latest_detail() -> None:
    h = WorkerHealth()
    assert h.waiting("redis", "first") is True
    since = h.since["redis"]
    assert h.waiting("redis", "second") is False
    assert h.dependencies == {"redis": "second"}
    assert h.since == {"redis": since}  # the outage started at the first report
    assert h.waiting("elasticsearch", "down") is True
    assert h.dependencies == {"redis": "second", "elasticsearch": "down"}


def test_recovered_is_true_only_when_the_dependency_was_unavailable() -> None:
    h = WorkerHealth()
    assert h.recovered("redis") is False
    h.waiting("redis", "down")
    h.waiting("kafka", "down")
    assert h.recovered("redis") is True
    assert h.dependencies == {"kafka": "down"}
    assert set(h.since) == {"kafka"}
    assert h.recovered("redis") is False


def test_problems_merges_dependencies_and_conditions() -> None:
    h = WorkerHealth()
    assert h.problems() == {}
    h.waiting("redis", "refused")
    h.conditions["models"] = "no champion model loaded"
    assert h.problems() == {"redis": "refused", "models": "no champion model loaded"}
    h.recovered("redis")
    assert h.problems() == {"models": "no champion model loaded"}


# ---------------------------------------------------------------------------- dependency_of


@pytest.mark.parametrize(("exc", "expected"), [
    (REDIS_DOWN, ("redis", REDIS_DETAIL)),
    (KafkaTimeoutError("no metadata"),
     ("kafka", "kafka produce failed: KafkaTimeoutError: KafkaTimeoutError: no metadata")),
    (KafkaConnectionError("refused"),
     ("kafka", "kafka produce failed: KafkaConnectionError: KafkaConnectionError: refused")),
    (ProducerSendError("send failed"),
     ("kafka", "kafka produce failed: ProducerSendError: send failed")),
    (ESConnectionError("refused", errors=(OSError("connection refused"),)),
     ("elasticsearch", "elasticsearch is not reachable: "
      "Connection error caused by: OSError(connection refused)")),
    (ESConnectionError("refused"),
     ("elasticsearch", "elasticsearch is not reachable: Connection error")),
    (ConnectionTimeout("timed out"),
     ("elasticsearch", "elasticsearch is not reachable: Connection timed out")),
    (ValueError("a bug"), None),
    (KeyError("state"), None),
], ids=["service-unavailable", "kafka-timeout", "kafka-connection", "faust-producer-send",
        "es-connection-caused-by", "es-connection", "es-timeout", "value-error", "key-error"])
def test_dependency_of(exc: BaseException, expected: tuple[str, str] | None) -> None:
    assert dependency_of(exc) == expected


# ---------------------------------------------------------------------------- until_available


def test_until_available_retries_a_dependency_error_and_marks_it_down_meanwhile(
    sleeps: list[float],
) -> None:
    health = WorkerHealth()
    seen: list[dict[str, str]] = []

    async def call() -> str:
        seen.append(health.problems())
        if len(seen) <= 2:
            raise REDIS_DOWN
        return "state"

    assert asyncio.run(until_available(health, "score: read state", call)) == "state"
    # attempt 1 before any failure; attempts 2 and 3 while redis is known to be down
    assert seen == [{}, {"redis": REDIS_DETAIL}, {"redis": REDIS_DETAIL}]
    assert sleeps == [0.1, 0.2]
    assert health.problems() == {}
    assert health.since == {}


def test_until_available_clears_only_the_dependencies_it_waited_for(
    sleeps: list[float],
) -> None:
    health = WorkerHealth()
    health.waiting("elasticsearch", "down")  # another agent is waiting for it
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise REDIS_DOWN
        return calls

    assert asyncio.run(until_available(health, "score", call)) == 2
    assert health.problems() == {"elasticsearch": "down"}


def test_until_available_backoff_doubles_from_initial_and_is_capped(
    sleeps: list[float],
) -> None:
    failures = 10

    async def call() -> str:
        if len(sleeps) < failures:
            raise KafkaTimeoutError("no metadata")
        return "ok"

    assert asyncio.run(until_available(WorkerHealth(), "produce", call)) == "ok"
    assert reliability.INITIAL_BACKOFF == 0.1
    assert reliability.MAX_BACKOFF == 5.0
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]


def test_until_available_propagates_a_non_dependency_error_at_once(
    sleeps: list[float],
) -> None:
    health = WorkerHealth()
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="^a bug$"):
        asyncio.run(until_available(health, "score", call))
    assert calls == 1
    assert sleeps == []
    assert health.problems() == {}


def test_until_available_uses_the_given_classifier(sleeps: list[float]) -> None:
    health = WorkerHealth()
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk busy")
        if calls == 2:
            raise REDIS_DOWN  # a dependency for dependency_of, not for this classifier
        return "never"

    def disk(exc: BaseException) -> tuple[str, str] | None:
        return ("disk", str(exc)) if isinstance(exc, OSError) else None

    with pytest.raises(ServiceUnavailable):
        asyncio.run(until_available(health, "spill", call, is_unavailable=disk))
    assert calls == 2
    assert sleeps == [0.1]
    assert health.problems() == {"disk": "disk busy"}


def test_until_available_logs_an_outage_once_and_its_end(
    sleeps: list[float], caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise REDIS_DOWN

    with caplog.at_level(logging.WARNING, logger="precog.reliability"):
        asyncio.run(until_available(WorkerHealth(), "score: read state", call))
    assert [r.getMessage() for r in caplog.records if r.name == "precog.reliability"] == [
        "score: read state waits for redis (offsets held, retrying up to every 5s): "
        + REDIS_DETAIL,
        "score: read state: redis is available again; resuming",
    ]


# ---------------------------------------------------------------------------- stop_worker


def test_stop_worker_records_the_error_crashes_the_app_and_never_returns() -> None:
    async def scenario() -> tuple[FakeApp, WorkerHealth, bool]:
        app = FakeApp()
        rt = SimpleNamespace(health=WorkerHealth(), app=app)
        task = asyncio.ensure_future(stop_worker(rt, "index", RuntimeError("boom")))
        await asyncio.wait_for(app.crashed.wait(), 2.0)
        await asyncio.sleep(SETTLE)
        returned = task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return app, rt.health, returned

    app, health, returned = asyncio.run(scenario())
    assert returned is False
    assert [(type(e), str(e)) for e in app.crashes] == [(RuntimeError, "boom")]
    assert health.fatal == "index: RuntimeError: boom"


# ---------------------------------------------------------------------------- produce_all

RECORDS = [
    (b"k0", b"v0", None, None),
    (b"k1", b"v1", [("precog-reason", b"late")], 1_700_000_000.25),
    (b"k2", b"v2", None, 1_700_000_001.5),
    (None, b"v3", [("a", b"1"), ("b", b"2")], None),
    (b"k4", b"v4", None, 1_700_000_002.0),
]


def sent(record: tuple[bytes | None, bytes, Any, float | None], topic: str = "t.out") -> Send:
    key, value, headers, timestamp = record
    return Send(topic, key, value, None, timestamp, headers)


def run_produce(producer: FakeProducer, monkeypatch: pytest.MonkeyPatch,
                records: list[Any] = RECORDS) -> SimpleNamespace:
    """produce_all with instant backoff; each sleep goes into the producer's log."""
    rt = runtime(producer)
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        producer.log.append(("sleep", delay, rt.health.problems()))
        if len(producer.log) > MAX_RETRIES * len(records):
            raise AssertionError(f"more than {MAX_RETRIES} retries")
        await real_sleep(0)

    monkeypatch.setattr(reliability.asyncio, "sleep", fake_sleep)
    asyncio.run(produce_all(rt, "t.out", records, "score: predictions"))
    return rt


def test_produce_all_sends_every_record_once_when_all_are_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer()
    rt = run_produce(producer, monkeypatch)
    # key, value, no partition (the producer's partitioner), timestamp and headers as given
    assert producer.log == [sent(r) for r in RECORDS]
    assert all(f.done() and not f.cancelled() for f in producer.futures)
    assert rt.health.problems() == {}


def test_produce_all_sends_again_only_the_records_whose_send_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer(fail={
        (b"k1", 1): KafkaConnectionError("broker gone"),
        (None, 1): KafkaTimeoutError("request timed out"),
        (b"k1", 2): KafkaConnectionError("broker gone"),
    })
    rt = run_produce(producer, monkeypatch)
    down_first = {"kafka": "kafka produce failed: KafkaConnectionError: "
                           "KafkaConnectionError: broker gone"}
    assert producer.log == [
        *[sent(r) for r in RECORDS],
        ("sleep", 0.1, down_first),
        sent(RECORDS[1]), sent(RECORDS[3]),
        ("sleep", 0.2, down_first),
        sent(RECORDS[1]),
    ]
    assert rt.health.problems() == {}


def test_produce_all_after_send_raises_sends_the_rest_and_the_failed_not_the_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer(
        fail={(b"k1", 1): KafkaConnectionError("broker gone")},
        raise_now={(b"k2", 1): KafkaTimeoutError("no metadata")},
    )
    rt = run_produce(producer, monkeypatch)
    assert producer.log == [
        sent(RECORDS[0]), sent(RECORDS[1]), sent(RECORDS[2]),  # k2's send raised
        # the error of send itself is the one reported
        ("sleep", 0.1, {"kafka": "kafka produce failed: KafkaTimeoutError: "
                                 "KafkaTimeoutError: no metadata"}),
        sent(RECORDS[1]), sent(RECORDS[2]), sent(RECORDS[3]), sent(RECORDS[4]),
    ]
    assert producer.sends_of(b"k0") == 1
    assert rt.health.problems() == {}


def test_produce_all_propagates_a_non_kafka_failure_without_retrying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer(fail={(b"k2", 1): ValueError("cannot encode")})
    with pytest.raises(ValueError, match="^cannot encode$"):
        run_produce(producer, monkeypatch)
    assert producer.log == [sent(r) for r in RECORDS]


# ---------------------------------------------------------------------------- consume_in_batches


def test_consume_in_batches_hands_every_event_once_in_order_and_at_most_size() -> None:
    n, size = 23, 5
    stream = FakeStream(n)
    batches: list[list[int]] = []
    all_handed = asyncio.Event()

    async def handle(batch: list[Any]) -> None:
        batches.append(offsets(batch))
        await release(stream, batch)
        if sum(map(len, batches)) == n:
            all_handed.set()

    async def scenario() -> None:
        # a stream that is read faster than handled fills the queue (4 * size) and waits
        await run_consumer(runtime(), stream, size, 0.01, handle, all_handed)

    asyncio.run(scenario())
    assert batches == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14],
                       [15, 16, 17, 18, 19], [20, 21, 22]]
    assert stream.released == list(range(n))
    assert stream.refcounts() == [0] * n
    assert stream.acked() == [True] * n


def test_consume_in_batches_fills_batches_to_size_while_events_trickle_in() -> None:
    n, size = 12, 3
    gates = {i: asyncio.Event() for i in range(1, n)}
    stream = FakeStream(n, gates)
    batches: list[list[int]] = []
    all_handed = asyncio.Event()

    async def handle(batch: list[Any]) -> None:
        batches.append(offsets(batch))
        await release(stream, batch)
        if sum(map(len, batches)) == n:
            all_handed.set()

    async def open_gates() -> None:
        for gate in gates.values():
            await asyncio.sleep(0.001)
            gate.set()

    async def scenario() -> None:
        opener = asyncio.ensure_future(open_gates())
        # within is far longer than the trickle: a batch is handed because it is full
        await run_consumer(runtime(), stream, size, 1.0, handle, all_handed)
        await opener

    asyncio.run(scenario())
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert stream.released == list(range(n))


def test_consume_in_batches_hands_a_partial_batch_after_within_and_holds_unreleased() -> None:
    within = 0.02
    first_handed = asyncio.Event()
    # events 3 and 4 come only after the first batch was handed: no more events meanwhile
    stream = FakeStream(5, {3: first_handed})
    batches: list[list[int]] = []
    handed_at: list[float] = []
    all_handed = asyncio.Event()

    async def handle(batch: list[Any]) -> None:
        handed_at.append(asyncio.get_running_loop().time())
        batches.append(offsets(batch))
        if not first_handed.is_set():
            await release(stream, batch)  # the second batch is never released
            first_handed.set()
        else:
            all_handed.set()

    async def scenario() -> None:
        await run_consumer(runtime(), stream, 10, within, handle, all_handed)

    asyncio.run(scenario())
    assert batches == [[0, 1, 2], [3, 4]]
    assert handed_at[0] - stream.yielded_at[0] >= within - 1e-3
    assert handed_at[1] - stream.yielded_at[3] >= within - 1e-3
    assert stream.released == [0, 1, 2]
    # the stream's own ack dropped its reference; the hold keeps 3 and 4 uncommitted
    assert stream.refcounts() == [0, 0, 0, 1, 1]
    assert stream.acked() == [True, True, True, False, False]


def test_consume_in_batches_stops_the_worker_on_an_error_and_keeps_the_batch() -> None:
    n, size = 8, 2
    stream = FakeStream(n)
    app = FakeApp()
    rt = SimpleNamespace(health=WorkerHealth(), app=app)
    batches: list[list[int]] = []
    error = RuntimeError("boom")

    async def handle(batch: list[Any]) -> None:
        batches.append(offsets(batch))
        if batch[0].message.offset == 2:
            raise error
        await release(stream, batch)

    async def scenario() -> None:
        task = asyncio.ensure_future(
            consume_in_batches(rt, stream, "score", size, 0.01, handle))
        await asyncio.wait_for(app.crashed.wait(), 2.0)
        await asyncio.sleep(SETTLE)  # time enough to handle [4, 5] if the agent went on
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert app.crashes == [error]
    assert rt.health.fatal == "score: RuntimeError: boom"
    assert batches == [[0, 1], [2, 3]]
    assert stream.released == [0, 1]
    assert stream.refcounts() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert stream.acked() == [True, True] + [False] * (n - 2)


def test_consume_in_batches_cancelled_mid_batch_stops_the_batch_and_releases_nothing() -> None:
    stream = FakeStream(4)
    started, proceed = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def handle(batch: list[Any]) -> None:
        started.set()
        try:
            await proceed.wait()  # e.g. waiting for Elasticsearch when the worker stops
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        await release(stream, batch)
        outcome.append("released")

    async def scenario() -> None:
        await run_consumer(runtime(), stream, 4, 0.01, handle, started)
        proceed.set()  # a batch task left running would now release its batch
        await asyncio.sleep(SETTLE)

    asyncio.run(scenario())
    assert outcome == ["cancelled"]
    assert stream.released == []
    assert stream.refcounts() == [1, 1, 1, 1]


@pytest.mark.timeout(10)  # a wrong deadline check spins the event loop: fail, do not hang
def test_consume_in_batches_with_zero_within_hands_what_is_queued_without_waiting() -> None:
    stream = FakeStream(6)
    batches: list[list[int]] = []
    all_handed = asyncio.Event()

    async def handle(batch: list[Any]) -> None:
        batches.append(offsets(batch))
        await release(stream, batch)
        if sum(map(len, batches)) == 6:
            all_handed.set()

    async def scenario() -> None:
        await run_consumer(runtime(), stream, 4, 0.0, handle, all_handed)

    asyncio.run(scenario())
    assert batches == [[0, 1, 2, 3], [4, 5]]


# ---------------------------------------------------------------------------- record_limit


def test_record_limit_leaves_the_overhead_out_of_the_producer_request_size() -> None:
    app = SimpleNamespace(conf=SimpleNamespace(producer_max_request_size=1_048_576))
    assert RECORD_OVERHEAD == 4096
    assert record_limit(app) == 1_044_480


def test_record_limit_reads_fausts_own_setting() -> None:
    app = faust.App("precog-test-reliability", broker="kafka://127.0.0.1:1",
                    producer_max_request_size=2_000_000)
    assert record_limit(app) == 2_000_000 - 4096


@pytest.mark.parametrize("error", [
    aiokafka_errors.MessageSizeTooLargeError("The message is 2000000 bytes"),
    aiokafka_errors.TopicAuthorizationFailedError(),
])
def test_permanent_kafka_errors_are_not_an_outage(error: Exception) -> None:
    """Waiting cannot fix them: the worker must stop, not retry forever."""
    assert reliability.dependency_of(error) is None
    wrapped = ProducerSendError(f"Error while sending: {error!r}")
    wrapped.__cause__ = error
    assert reliability.dependency_of(wrapped) is None
