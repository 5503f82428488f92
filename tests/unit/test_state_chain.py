"""Batches in flight (``StateChain``): the score agent's next batch reads and featurizes
while the last one waits for its acks and its write, and comes out as if one at a time.

The store answers a read with what it held when the read was *issued* and applies a
write only when the write *returns*, each after a seeded random delay, so a later batch's
read routinely lands before an earlier batch's write: exactly the window the chain's
overlay must cover. Expectations are the one-at-a-time run's, exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from precog.services.agents.score import StateChain, score_events
from precog.services.reliability import OutRecord
from precog.services.runtime import Runtime

from precog.avro import Codec
from precog.features import EntityState, Featurizer
from precog.spec import SPEC_DIR, PipelineSpec, load_spec
from tests.unit.memory import MemoryStore, RecordingProducer, event
from tests.unit.test_score_events import SOURCE, T0, runtime, seeded_events

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC_DIR / "transactions.yaml")


class SlowStore(MemoryStore):
    """A store with latency: reads see the data of the moment they were issued, writes land
    when they return."""

    def __init__(self, rng: random.Random, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rng = rng

    async def read(self, entity_ids: Sequence[str], *,
                   check_marker: bool = False) -> dict[str, EntityState | None]:
        answer = await super().read(entity_ids, check_marker=check_marker)
        await asyncio.sleep(self.rng.choice([0, 0, 0.001, 0.003]))
        return answer

    async def write(self, states: Mapping[str, EntityState]) -> None:
        await asyncio.sleep(self.rng.choice([0, 0.001, 0.002, 0.004]))
        await super().write(states)


class SlowProducer(RecordingProducer):
    """Takes the records at once, in call order (as librdkafka's queue does), and acks them
    after a seeded random delay."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    async def produce(self, topic: str, records: Sequence[OutRecord], what: str) -> None:
        await super().produce(topic, records, what)
        await asyncio.sleep(self.rng.choice([0, 0.001, 0.005]))


def batches(n_events: int, size: int, seed: int) -> list[list[Any]]:
    """Seeded events of four cards (so consecutive batches share entities), cut in batches."""
    codec = Codec.for_schema("transaction")
    records = [event(SOURCE, 0, offset, codec.encode(e), key=b"k", timestamp=T0 / 1000)
               for offset, e in enumerate(seeded_events(n_events, seed))]
    return [records[i:i + size] for i in range(0, len(records), size)]


async def pipelined(rt: Runtime, store: MemoryStore, producer: RecordingProducer,
                    work: list[list[Any]], inflight: int) -> StateChain:
    """What the batch source does: up to ``inflight`` batches at once, awaited in order."""
    chain, fz = StateChain(), Featurizer(rt.spec)
    pending: deque[asyncio.Task[int]] = deque()
    for b in work:
        while len(pending) >= inflight:
            await pending.popleft()
        pending.append(asyncio.ensure_future(score_events(rt, store, producer, fz, b, chain)))
    while pending:
        await pending.popleft()
    return chain


def one_at_a_time(spec: PipelineSpec, work: list[list[Any]]) -> tuple[MemoryStore,
                                                                      RecordingProducer]:
    rt, store, producer = runtime(spec), MemoryStore(), RecordingProducer()
    fz = Featurizer(spec)
    for b in work:
        asyncio.run(score_events(rt, store, producer, fz, b))
    return store, producer


def predictions(rt: Runtime, producer: RecordingProducer) -> list[tuple[Any, ...]]:
    codec = Codec.for_schema("prediction")
    out = []
    for sent in producer.on(rt.settings.topic("predictions")):
        p = codec.decode(sent.value)
        out.append((p["event_id"], [f["value"] for f in p["features"]],
                    [f["age_ms"] for f in p["features"]], p["leader"]["score"],
                    [c["score"] for c in p["challengers"]]))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("inflight", [2, 3])
def test_batches_in_flight_give_the_one_at_a_time_features_scores_and_states(
    spec: PipelineSpec, seed: int, inflight: int,
) -> None:
    work = batches(240, 7, seed)
    expected_store, expected_producer = one_at_a_time(spec, work)
    rt, rng = runtime(spec), random.Random(seed)
    store, producer = SlowStore(rng), SlowProducer(rng)

    chain = asyncio.run(pipelined(rt, store, producer, work, inflight))

    got = predictions(rt, producer)
    assert got == predictions(rt, expected_producer)  # same order too: batches in turn
    assert store.data == expected_store.data  # bytes: every chain and watermark exact
    # the writes land in consumption order, one per batch
    assert [sorted(w) for w in store.writes] == [sorted(w) for w in expected_store.writes]
    assert chain.held == 0  # nothing kept once no batch is in flight


def test_a_later_read_that_returns_first_still_waits_for_the_earlier_batch(
    spec: PipelineSpec,
) -> None:
    """Batch 1's read answers at once, batch 0's late: 1 featurizes after 0 all the same."""
    work = batches(20, 10, 7)
    expected_store, expected_producer = one_at_a_time(spec, work)

    class FirstReadSlow(MemoryStore):
        reads = 0

        async def read(self, entity_ids: Sequence[str], *,
                       check_marker: bool = False) -> dict[str, EntityState | None]:
            answer = await super().read(entity_ids, check_marker=check_marker)
            self.reads += 1
            await asyncio.sleep(0.02 if self.reads == 1 else 0)
            return answer

    rt, store, producer = runtime(spec), FirstReadSlow(), RecordingProducer()
    asyncio.run(pipelined(rt, store, producer, work, 2))

    assert [kind for kind, _ in store.effects[:3]] == ["read", "read", "write"]  # both out
    # at once; had batch 1 chained from Redis's answer (no state yet for its cards) the
    # features and the states would differ
    assert predictions(rt, producer) == predictions(rt, expected_producer)
    assert store.data == expected_store.data


def test_a_failed_write_stops_the_batches_behind_it_before_their_writes(
    spec: PipelineSpec,
) -> None:
    work = batches(30, 10, 5)
    rt = runtime(spec)
    store = SlowStore(random.Random(5), write_failures=[RuntimeError("a bug")])
    producer = RecordingProducer()

    async def go() -> list[BaseException | int]:
        chain, fz = StateChain(), Featurizer(rt.spec)
        tasks = [asyncio.ensure_future(score_events(rt, store, producer, fz, b, chain))
                 for b in work]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(go())

    assert isinstance(results[0], RuntimeError) and str(results[0]) == "a bug"
    for later in results[1:]:
        assert isinstance(later, RuntimeError) and "an earlier batch failed" in str(later)
    assert store.writes == [] and store.data == {}  # nothing written after the failure


def test_states_changed_elsewhere_between_idle_batches_are_read_again(
    spec: PipelineSpec,
) -> None:
    """Idle, the chain holds nothing: a state another worker wrote meanwhile (a partition
    that moved away and came back) is what the next batch chains from."""
    first, second = batches(20, 10, 9)
    rt, store, producer = runtime(spec), MemoryStore(), RecordingProducer()
    chain, fz = StateChain(), Featurizer(rt.spec)
    asyncio.run(score_events(rt, store, producer, fz, first, chain))
    assert chain.held == 0
    store.data.clear()  # elsewhere: the states were replaced (here: by nothing)

    asyncio.run(score_events(rt, store, producer, fz, second, chain))

    fresh_store, fresh_producer = MemoryStore(), RecordingProducer()
    asyncio.run(score_events(runtime(spec), fresh_store, fresh_producer, Featurizer(spec),
                             second))
    assert predictions(rt, producer)[10:] == predictions(rt, fresh_producer)
    assert store.data == fresh_store.data
