"""Redis online feature store: entity state read and written in one round trip per batch.

Feast-like: an :class:`OnlineStore` interface and its Redis implementation beside its
config (``settings.redis``). Keys are ``{ns}:state:{spec}:{entity}`` and carry a TTL
(``settings.redis.state_ttl_seconds``), so idle entities expire; values are
:meth:`precog.features.EntityState.to_bytes`. Transient connection errors are retried
by redis-py's ``Retry`` with exponential backoff; when Redis stays unreachable the
store raises :class:`~precog.errors.ServiceUnavailable` naming the address.

State loss is detected, not scored through: a per-namespace marker key
(``{ns}:state-marker:{spec}``, no TTL) is written when a namespace's state begins (the
first worker of a fresh namespace, ``precog backfill``); every read asks for it in the same
MGET, and a read that finds the entity keys' marker gone raises :class:`StateLost`: Redis
was restarted empty or flushed, and every entity would silently restart from nothing.

Idempotency lives in the state itself (the per-partition offset watermark, see
:meth:`precog.features.Featurizer.featurize_batch`), so rewriting a redelivered batch's
states is harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from precog.errors import ServiceUnavailable, redacted
from precog.features import EntityState
from precog.io.redis import async_redis_client, redis_client
from precog.settings import Settings
from precog.spec import PipelineSpec

_T = TypeVar("_T")
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_RETRIES = 3


class StateLost(ServiceUnavailable):
    """The namespace's state marker is gone from Redis: its entity states were lost."""

    def __init__(self, address: str, key: str) -> None:
        super().__init__(
            "redis-state", address,
            f"feature state lost: the marker {key} is missing (Redis restarted empty or "
            "flushed?); scoring waits with its offsets held; rebuild the state with "
            "`precog backfill --from-topic`",
        )
        self.key = key


class OnlineStore(Protocol):
    """Where the score agent keeps entity state between micro-batches."""

    async def read(
        self, entity_ids: Sequence[str], *, check_marker: bool = False
    ) -> dict[str, EntityState | None]: ...

    async def write(self, states: Mapping[str, EntityState]) -> None: ...


#: ``SET`` of every key with its TTL (seconds; 0: none). ``ARGV``: how many of the ``KEYS``
#: come first and get the first TTL, that TTL, the TTL of the others, then one value per key
#: in ``KEYS``' order (one TTL per group, not per key: fewer arguments to pack and parse)
SET_ALL = """
local first, ttl, other = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS do
  local t = other
  if i <= first then t = ttl end
  if t > 0 then
    redis.call('SET', KEYS[i], ARGV[i + 3], 'EX', t)
  else
    redis.call('SET', KEYS[i], ARGV[i + 3])
  end
end
return #KEYS
"""


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def packed(*parts: bytes) -> bytes:
    """One command in Redis's protocol (RESP), its arguments given as bytes.

    The score agent's two commands per batch carry an argument per entity; redis-py packs
    each argument in Python (3-4 us per key of the event loop's time for an MGET or the
    write's EVALSHA, against 1.6-2.3 packed here: docs/benchmarks.md "Round 13").

    >>> packed(b"MGET", b"k1", b"k")
    b'*3\\r\\n$4\\r\\nMGET\\r\\n$2\\r\\nk1\\r\\n$1\\r\\nk\\r\\n'
    """
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%s\r\n" % (len(p), p) for p in parts])


class RedisOnlineStore:
    """Entity states of one pipeline spec in Redis (async for agents, sync for batch jobs)."""

    def __init__(self, settings: Settings, spec: PipelineSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.address = redacted(settings.redis.url)
        self.ttl = settings.redis.state_ttl_seconds
        self._prefix = self.key("")  # + entity id: the key without a join per entity
        self._key_prefix = self._prefix.encode()
        self._async = async_redis_client(settings, retry=AsyncRetry(_backoff(), _RETRIES))
        # one EVALSHA per batch instead of a pipeline of SETs: redis-py builds and parses
        # each pipelined command in Python (15-19 ms for 500 keys against 4 ms here,
        # docs/benchmarks.md "Round 6"); the script is loaded again after a Redis restart
        self._set_all_sha = hashlib.sha1(SET_ALL.encode(),
                                         usedforsecurity=False).hexdigest().encode()
        self._sync: redis.Redis | None = None

    def key(self, entity_id: str) -> str:
        """Redis key of one entity's state, e.g. ``prod:state:transactions:card-1``."""
        return self.settings.redis_key("state", self.spec.name, entity_id)

    @property
    def marker_key(self) -> str:
        """The key whose presence says the namespace's states are intact."""
        return self.settings.redis_key("state-marker", self.spec.name)

    def _marker_value(self, by: str) -> bytes:
        import json
        import time

        return json.dumps({"written_ms": int(time.time() * 1000), "by": by}).encode()

    # -- async (score agent) -------------------------------------------------------
    async def ping(self) -> None:
        """Fail fast: raise ServiceUnavailable when Redis does not answer."""
        await self._guard(self._async.ping)

    async def read(
        self, entity_ids: Sequence[str], *, check_marker: bool = False
    ) -> dict[str, EntityState | None]:
        """States of ``entity_ids`` (None when unknown or expired), in one MGET.

        With ``check_marker`` the marker is read in the same MGET, and its absence raises
        :class:`StateLost`.
        """
        ids = list(dict.fromkeys(entity_ids))
        if not ids and not check_marker:
            return {}
        prefix = self._key_prefix
        keys = [prefix + e.encode() for e in ids]
        if check_marker:
            keys.append(self.marker_key.encode())
        command = packed(b"MGET", *keys)
        values = await self._guard(lambda: self._command(command))
        if check_marker:
            if values[-1] is None:
                raise StateLost(self.address, self.marker_key)
            values = values[:-1]
        return _decode(ids, values)

    async def has_marker(self) -> bool:
        """Whether the namespace's state marker is there."""
        return bool(await self._guard(lambda: self._async.exists(self.marker_key)))

    async def write_marker(self, by: str) -> None:
        """Mark the namespace's states as present (a fresh namespace, a rebuild)."""
        value = self._marker_value(by)
        await self._guard(lambda: self._async.set(self.marker_key, value))

    async def write(self, states: Mapping[str, EntityState],
                    values: Mapping[str, bytes] | None = None, ttl: int = 0) -> None:
        """Write ``states`` with the TTL in one pipelined round trip; in the same one, other
        ``values`` (:meth:`read_with`'s keys) with ``ttl`` seconds."""
        if not states and not values:
            return
        prefix = self._key_prefix
        keys = [prefix + entity.encode() for entity in states]
        blobs = [state.to_bytes() for state in states.values()]
        first = len(keys)
        for key, value in (values or {}).items():
            keys.append(key.encode())
            blobs.append(value)
        args = (b"%d" % len(keys), *keys, b"%d" % first, b"%d" % self.ttl, b"%d" % ttl, *blobs)
        await self._guard(lambda: self._set_all(args))

    async def _set_all(self, args: tuple[bytes, ...]) -> Any:
        """:data:`SET_ALL` by its SHA; by its text when Redis does not hold it (restarted,
        or its scripts flushed: that loads it again)."""
        try:
            return await self._command(packed(b"EVALSHA", self._set_all_sha, *args))
        except NoScriptError:
            return await self._command(packed(b"EVAL", SET_ALL.encode(), *args))

    async def _command(self, command: bytes) -> Any:
        """A :func:`packed` command on one of the client's pooled connections, with the
        client's retries (a connection that failed is closed first); its reply."""
        pool = self._async.connection_pool
        conn = await pool.get_connection()
        try:
            return await conn.retry.call_with_retry(lambda: _exchange(conn, command),
                                                    lambda _error: conn.disconnect())
        finally:
            await pool.release(conn)

    async def read_with(
        self, entity_ids: Sequence[str], keys: Sequence[str]
    ) -> tuple[dict[str, EntityState | None], list[bytes | None], bool]:
        """The states of ``entity_ids``, the values of other ``keys`` the namespace keeps beside
        them (``precog serve``'s answers) and whether the state marker is there: one MGET."""
        ids = list(dict.fromkeys(entity_ids))
        all_keys = [*(self.key(e) for e in ids), *keys, self.marker_key]
        values = await self._guard(lambda: self._async.mget(all_keys))
        n = len(ids)
        return _decode(ids, values[:n]), list(values[n:-1]), values[-1] is not None

    async def close(self) -> None:
        """Release the connections (async and, if used, sync)."""
        await self._async.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def _guard(self, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except _TRANSIENT as exc:
            raise ServiceUnavailable("redis", self.address, str(exc)) from exc

    # -- sync twins (backfill, tests) ---------------------------------------------
    def _client(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis_client(self.settings, retry=Retry(_backoff(), _RETRIES))
        return self._sync

    def ping_sync(self) -> None:
        """Synchronous :meth:`ping`."""
        self._guard_sync(lambda: self._client().ping())

    def read_sync(self, entity_ids: Sequence[str]) -> dict[str, EntityState | None]:
        """Synchronous :meth:`read` (one MGET)."""
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return {}
        keys = [self.key(e) for e in ids]
        return _decode(ids, self._guard_sync(lambda: self._client().mget(keys)))

    def has_marker_sync(self) -> bool:
        """Synchronous :meth:`has_marker`."""
        return bool(self._guard_sync(lambda: self._client().exists(self.marker_key)))

    def write_marker_sync(self, by: str) -> None:
        """Synchronous :meth:`write_marker`."""
        value = self._marker_value(by)
        self._guard_sync(lambda: self._client().set(self.marker_key, value))

    def write_sync(self, states: Mapping[str, EntityState]) -> None:
        """Synchronous :meth:`write` (one pipelined round trip)."""
        if not states:
            return
        pipe = self._client().pipeline(transaction=False)
        for entity, state in states.items():
            pipe.set(self.key(entity), state.to_bytes(), ex=self.ttl)
        self._guard_sync(pipe.execute)

    def _guard_sync(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except _TRANSIENT as exc:
            raise ServiceUnavailable("redis", self.address, str(exc)) from exc


async def _exchange(conn: Any, command: bytes) -> Any:
    """Send ``command`` on ``conn`` and read its reply; a connection left with a reply that
    may still arrive (an error or a cancellation between the two) is closed, never reused."""
    try:
        await conn.send_packed_command(command)
        return await conn.read_response()
    except ResponseError:  # Redis answered with an error: the connection is in order
        raise
    except BaseException:
        await conn.disconnect()
        raise


def _decode(ids: list[str], values: Sequence[Any]) -> dict[str, EntityState | None]:
    pairs = zip(ids, values, strict=True)
    return {e: None if v is None else EntityState.from_bytes(v) for e, v in pairs}


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """``partition -> committed offset`` of consumer ``group`` on the namespace's ``topic``.

    Partitions without a commit are left out; ``topic`` is the spec's name (``events.x``).
    """
    from confluent_kafka import KafkaException, TopicPartition

    from precog.io import kafka

    name = settings.topic(topic)
    consumer = kafka.consumer(settings, group, **{"enable.auto.commit": False})
    try:
        meta = consumer.list_topics(name, timeout=10)
        parts = [TopicPartition(name, p) for p in meta.topics[name].partitions]
        got = consumer.committed(parts, timeout=10) if parts else []
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from exc
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
