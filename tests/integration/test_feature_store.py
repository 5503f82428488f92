"""Integration tests of the Redis online store: online features through Redis == offline."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
from precog.services.feature_store import RedisOnlineStore

from precog.errors import ServiceUnavailable
from precog.features import Featurizer, build_training_frame, sort_key
from precog.settings import Settings
from precog.simulate import SimConfig, TransactionSimulator
from precog.spec import SPEC_DIR, load_spec

pytestmark = pytest.mark.integration

SPEC = load_spec(SPEC_DIR / "transactions.yaml")


def stream(n: int) -> list[dict]:
    sim = TransactionSimulator(SimConfig(seed=17, entities=150, mean_interarrival_ms=20_000))
    return sorted((e.record for e in sim.events(n)), key=sort_key(SPEC))


def raw_states(settings: Settings, redis_client, entities: set[str]) -> dict[str, bytes]:
    store = RedisOnlineStore(settings, SPEC)
    return {e: redis_client.get(store.key(e)) for e in sorted(entities)}


def test_online_features_through_redis_equal_offline(settings: Settings, redis_client) -> None:
    events = stream(4000)
    offline = build_training_frame(SPEC, events)
    fz = Featurizer(SPEC)
    rng = random.Random(3)

    async def online() -> tuple[list[list[float]], list]:
        store = RedisOnlineStore(settings, SPEC)
        await store.ping()
        rows: list[list[float]] = []
        batches = []
        i = 0
        while i < len(events):
            batch = events[i : i + rng.randint(1, 200)]
            items = [(e, int(e["card_id"][-1]) % 4, i + k) for k, e in enumerate(batch)]
            i += len(batch)
            states = await store.read([e["card_id"] for e in batch])
            vectors, changed = fz.featurize_batch(states, items)
            await store.write(changed)
            rows.extend(v.values for v in vectors)
            batches.append(items)
        await store.close()
        return rows, batches

    rows, batches = asyncio.run(online())
    assert np.array_equal(np.array(rows, dtype=np.float64), offline.X)  # exact

    # redelivery of the last batch after a crash between the Redis write and the commit
    entities = {e["card_id"] for e in events}
    before = raw_states(settings, redis_client, entities)
    store = RedisOnlineStore(settings, SPEC)
    last = batches[-1]
    states = store.read_sync([e["card_id"] for e, _, _ in last])
    _, changed = fz.featurize_batch(states, last)
    assert changed == {}
    store.write_sync(changed)
    store.write_sync({k: v for k, v in states.items() if v is not None})  # a blind rewrite too
    assert raw_states(settings, redis_client, entities) == before
    ttl = redis_client.ttl(store.key(events[-1]["card_id"]))
    assert 0 < ttl <= settings.redis.state_ttl_seconds


def test_sync_and_async_twins_agree(settings: Settings) -> None:
    fz = Featurizer(SPEC)
    events = stream(300)
    _, states = fz.featurize_batch({}, [(e, 0, i) for i, e in enumerate(events)])
    store = RedisOnlineStore(settings, SPEC)
    store.write_sync(states)

    async def read() -> dict:
        got = await store.read([*states, "card-999999"])
        await store.close()
        return got

    got = asyncio.run(read())
    assert got.pop("card-999999") is None
    assert {k: v.to_bytes() for k, v in got.items()} == {k: v.to_bytes() for k, v in states.items()}
    assert store.key("card-1") == f"{settings.namespace}:state:transactions:card-1"


def test_one_write_sets_states_and_other_values_each_with_its_ttl(
    settings: Settings, redis_client
) -> None:
    fz = Featurizer(SPEC)
    _, states = fz.featurize_batch({}, [(e, 0, i) for i, e in enumerate(stream(40))])
    store = RedisOnlineStore(settings, SPEC)
    other = {settings.redis_key("answer", "a"): b"A", settings.redis_key("answer", "b"): b"B"}
    forever = {settings.redis_key("answer", "c"): b"C"}

    async def write() -> None:
        await store.write(states, other, ttl=120)
        await store.write({}, forever)  # ttl 0: no expiry
        await store.close()

    asyncio.run(write())
    for entity, state in states.items():
        assert redis_client.get(store.key(entity)) == state.to_bytes()
        assert settings.redis.state_ttl_seconds - 5 < redis_client.ttl(store.key(entity)) <= (
            settings.redis.state_ttl_seconds)
    for key, value in other.items():
        assert redis_client.get(key) == value and 115 < redis_client.ttl(key) <= 120
    key = next(iter(forever))
    assert redis_client.get(key) == b"C" and redis_client.ttl(key) == -1


def test_unreachable_redis_names_the_address() -> None:
    settings = Settings(namespace="tunreach", redis={"url": "redis://user:pw@127.0.0.1:1/0"})
    store = RedisOnlineStore(settings, SPEC)

    async def ping() -> None:
        try:
            await store.ping()
        finally:
            await store.close()

    with pytest.raises(ServiceUnavailable, match=r"redis is not reachable at redis://127.0.0.1:1/0"):
        asyncio.run(ping())
    with pytest.raises(ServiceUnavailable) as err:
        store.read_sync(["card-1"])
    assert err.value.address == "redis://127.0.0.1:1/0" and "pw" not in str(err.value)


def test_write_loads_its_script_again_after_redis_flushed_scripts(
    settings: Settings, redis_client
) -> None:
    fz = Featurizer(SPEC)
    events = stream(60)
    _, first = fz.featurize_batch({}, [(e, 0, i) for i, e in enumerate(events[:30])])
    _, second = fz.featurize_batch(first, [(e, 0, 30 + i) for i, e in enumerate(events[30:])])
    store = RedisOnlineStore(settings, SPEC)

    async def write() -> dict:
        await store.write(first)
        redis_client.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
        await store.write(second)
        got = await store.read(list(second))
        await store.close()
        return got

    assert asyncio.run(write()) == second
    assert all(redis_client.get(store.key(e)) == s.to_bytes() for e, s in second.items())


def test_entities_with_any_unicode_id_round_trip(settings: Settings, redis_client) -> None:
    fz = Featurizer(SPEC)
    base = stream(3)
    ids = ["kärt-1", "卡-2", "a b\r\n$3\r\nc"]  # the last would break a hand-packed command
    events = [{**e, "card_id": i} for e, i in zip(base, ids, strict=True)]
    _, states = fz.featurize_batch({}, [(e, 0, n) for n, e in enumerate(events)])
    store = RedisOnlineStore(settings, SPEC)

    async def round_trip() -> dict:
        await store.write(states)
        got = await store.read([*ids, "never-seen"])
        await store.close()
        return got

    got = asyncio.run(round_trip())
    assert got == {**states, "never-seen": None} and set(states) == set(ids)
    assert all(redis_client.get(store.key(e)) == states[e].to_bytes() for e in ids)
