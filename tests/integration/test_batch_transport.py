"""The batch transport against the stack's Kafka: commits follow the handled batches.

A :class:`BatchSource` commits a batch's offsets only after its handler returned and every
earlier batch's did (in flight: up to ``inflight`` batches finishing in any order); a
rebalance first finishes and commits the batches in flight; a graceful stop lets the
batch in flight finish and commits it. Each test reads the group's committed offsets
from the broker while the handlers run.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from precog.services import batch_transport
from precog.services.batch_producer import BatchProducer
from precog.services.batch_transport import BatchSource
from precog.services.reliability import WorkerHealth
from precog.services.runtime import WorkerMetrics

from precog.io import kafka
from precog.settings import Settings

pytestmark = pytest.mark.integration


def _rt(settings: Settings, name: str = "test:1") -> Any:
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    return SimpleNamespace(settings=settings, health=WorkerHealth(), worker_name=name,
                           metrics=WorkerMetrics(),
                           app=SimpleNamespace(crash=crash, conf=SimpleNamespace(
                               producer_max_request_size=1_000_000)), crashed=crashed)


def _produce(settings: Settings, topic: str, n: int) -> dict[int, int]:
    """``n`` keyed records; returns the end offset of every partition."""
    p = kafka.producer(settings, acks="all")
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert p.flush(30) == 0
    c = kafka.consumer(settings, "probe")
    try:
        parts = kafka.partitions(c, topic) or []
        return {q: c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1]
                for q in parts}
    finally:
        c.close()


class Committed:
    """The group's committed offsets, read from the broker (a consumer that never joins)."""

    def __init__(self, settings: Settings, group: str, topic: str, parts: list[int]) -> None:
        self.c = kafka.consumer(settings, group)
        self.tps = [TopicPartition(topic, q) for q in parts]

    def read(self) -> dict[int, int]:
        return {tp.partition: tp.offset for tp in self.c.committed(self.tps, timeout=10)}

    def close(self) -> None:
        self.c.close()


async def _until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _firsts(batch: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for q, o in batch:
        out[q] = min(o, out.get(q, o))
    return out


def test_offsets_are_committed_in_order_after_the_batches_in_flight(settings: Settings) -> None:
    topic, group = settings.topic("predictions"), settings.group("bt-order")
    ends = _produce(settings, topic, 300)
    committed = Committed(settings, group, topic, sorted(ends))
    batches: list[list[tuple[int, int]]] = []
    seen_at_start: list[dict[int, int]] = []
    finished: list[int] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()

        async def handle(records: list[Any]) -> None:
            k = len(batches)
            batches.append([(r.partition, r.offset) for r in records])
            seen_at_start.append(await loop.run_in_executor(None, committed.read))
            await asyncio.sleep(1.0 if k == 0 else 0.0)  # the first finishes last
            finished.append(k)

        source = BatchSource(_rt(settings), "bt", [topic], group, 50, 0.05, handle,
                             inflight=2)
        source.start()
        await _until(lambda: sum(map(len, batches)) == 300 and len(finished) == len(batches),
                     60)
        await source.stop()

    try:
        asyncio.run(run())
        final = committed.read()
    finally:
        committed.close()
    handled = [x for b in batches for x in b]
    assert sorted(handled) == sorted({(q, o) for q, end in ends.items() for o in range(end)})
    assert finished[:2] == [1, 0]  # the second batch finished while the first was in flight
    first = _firsts(batches[0])
    # while the first batch was in flight nothing of it was committed, although the
    # second one was done (it is committed only after the first)
    assert all(seen_at_start[1].get(q, -1001) <= o for q, o in first.items())
    for k, batch in enumerate(batches):  # and never a batch before its handler returned
        assert all(seen_at_start[k].get(q, -1001) <= o for q, o in _firsts(batch).items())
    assert final == ends


def test_a_rebalance_commits_the_batches_in_flight_first(settings: Settings) -> None:
    topic, group = settings.topic("predictions"), settings.group("bt-rebalance")
    ends = _produce(settings, topic, 1200)  # a needs ~9 s alone: b joins long before
    committed = Committed(settings, group, topic, sorted(ends))
    handled: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    async def run() -> None:
        def handler(who: str) -> Any:
            async def handle(records: list[Any]) -> None:
                await asyncio.sleep(0.3)
                handled[who] += [(r.partition, r.offset) for r in records]
            return handle

        a = BatchSource(_rt(settings, "a:1"), "bt-a", [topic], group, 20, 0.05, handler("a"),
                        inflight=2)
        b = BatchSource(_rt(settings, "b:1"), "bt-b", [topic], group, 20, 0.05, handler("b"),
                        inflight=2)
        a.start()
        await _until(lambda: len(handled["a"]) >= 60, 60)
        b.start()  # the group rebalances while a has batches in flight
        await _until(lambda: len(handled["a"]) + len(handled["b"]) >= 1200
                     and b.assignment() != [], 120)
        await asyncio.sleep(1.0)
        await a.stop()
        await b.stop()

    try:
        asyncio.run(run())
        final = committed.read()
    finally:
        committed.close()
    everything = handled["a"] + handled["b"]
    assert set(everything) == {(q, o) for q, end in ends.items() for o in range(end)}
    assert len(everything) == len(set(everything))  # nothing in flight was handed over twice
    assert handled["b"], "the second member got partitions"
    assert final == ends


def test_a_graceful_stop_finishes_and_commits_the_batch_in_flight(settings: Settings) -> None:
    topic, group = settings.topic("predictions"), settings.group("bt-stop")
    ends = _produce(settings, topic, 200)
    committed = Committed(settings, group, topic, sorted(ends))
    batches: list[list[tuple[int, int]]] = []
    done: list[int] = []

    async def run() -> None:
        async def handle(records: list[Any]) -> None:
            batches.append([(r.partition, r.offset) for r in records])
            await asyncio.sleep(1.0)
            done.append(len(records))

        source = BatchSource(_rt(settings), "bt", [topic], group, 30, 0.05, handle)
        source.start()
        await _until(lambda: len(batches) == 1, 60)
        await source.stop()  # while the first batch sleeps

    try:
        asyncio.run(run())
        final = committed.read()
    finally:
        committed.close()
    assert len(batches) == 1 and done == [len(batches[0])]
    expected = {q: o + 1 for q, o in _lasts(batches[0]).items()}
    assert {q: o for q, o in final.items() if o >= 0} == expected


def _lasts(batch: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for q, o in batch:
        out[q] = max(o, out.get(q, o))
    return out


def test_the_producer_waits_for_every_acknowledgement_and_partitions_by_murmur2(
    settings: Settings,
) -> None:
    topic = settings.topic("dlq")

    async def run() -> None:
        p = BatchProducer(_rt(settings), 1_000_000)
        try:
            await p.produce(topic, [(f"key-{i}".encode(), b"x" * i, [("h", b"1")], 1.5)
                                    for i in range(100)], "test")
        finally:
            await p.close()

    asyncio.run(run())
    got = list(kafka.read_to_end(settings, topic, settings.group("bt-read")))
    assert len(got) == 100
    by_key = {m.key(): m for m in got}
    assert by_key[b"key-7"].value() == b"x" * 7
    assert by_key[b"key-7"].headers() == [("h", b"1")]
    assert by_key[b"key-7"].timestamp()[1] == 1500
    # the Java client's partition for each key (murmur2, here aiokafka's), as every producer
    # of the project: the outcome join relies on it
    from aiokafka.partitioner import DefaultPartitioner

    parts = sorted({m.partition() for m in got})
    every = sorted(kafka.partitions(kafka.consumer(settings, "probe"), topic) or [])
    assert len(parts) > 1
    assert all(m.partition() == DefaultPartitioner()(m.key(), every, every) for m in got)


def test_consumer_lag_gauge_follows_the_groups_uncommitted_records(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """``precog_consumer_lag`` (librdkafka's statistics, read between batches): above 0 per
    owned partition while a backlog is worked off, 0 = end - committed once caught up, and
    gone when the member leaves."""
    monkeypatch.setattr(batch_transport, "LAG_STATS_MS", 100)
    topic, group = settings.topic("predictions"), settings.group("bt-lag")
    ends = _produce(settings, topic, 200)
    committed = Committed(settings, group, topic, sorted(ends))
    rt = _rt(settings)
    gauge = rt.metrics.consumer_lag
    totals: list[float] = []

    def lags() -> dict[int, float]:
        return {int(s.labels["partition"]): s.value for m in gauge.collect()
                for s in m.samples if s.labels["group"] == group}

    async def run() -> None:
        handled: list[int] = []

        async def handle(records: list[Any]) -> None:
            await asyncio.sleep(0.2)  # a slow agent: 200 records take 2 s or more
            totals.append(sum(lags().values()))
            handled.append(len(records))

        source = BatchSource(rt, "bt-lag", [topic], group, 20, 0.05, handle)
        source.start()
        await _until(lambda: sum(handled) == 200 and committed.read() == ends, 30)
        await _until(lambda: lags() == {q: 0 for q in ends}, 10)
        await source.stop()

    try:
        asyncio.run(run())
    finally:
        committed.close()
    assert max(totals) > 0, totals
    assert all(0 <= t <= 200 for t in totals)
    assert lags() == {}, "a member that left reports no lag"


def test_a_topic_unknown_for_a_while_is_waited_out_not_a_crash(settings: Settings) -> None:
    """A restarted broker answers "unknown topic or partition" until it has loaded the
    partitions; the consumer reports it as an error, not as a record. The source waits for
    the topic (here: created 3 s after the source started) and handles its records then."""
    from confluent_kafka.admin import NewTopic

    topic, group = settings.topic("bt-late"), settings.group("bt-late")
    rt = _rt(settings)
    handled: list[tuple[int, int]] = []

    async def handle(records: list[Any]) -> None:
        handled.extend((r.partition, r.offset) for r in records)

    admin = kafka.admin(settings)

    async def run() -> dict[int, int]:
        source = BatchSource(rt, "bt", [topic], group, 50, 0.05, handle)
        source.start()
        await asyncio.sleep(3.0)  # the consumer has been told the topic is unknown
        assert rt.crashed == [] and not source._task.done()
        for fut in admin.create_topics([NewTopic(topic, 2, 1)]).values():
            fut.result(30)
        ends = await asyncio.get_running_loop().run_in_executor(None, _produce, settings,
                                                                topic, 40)
        await _until(lambda: len(handled) == 40, 60)
        await source.stop()
        return ends

    try:
        ends = asyncio.run(run())
    finally:
        admin.delete_topics([topic])
    assert rt.crashed == []
    assert sorted(handled) == sorted((q, o) for q, end in ends.items() for o in range(end))
