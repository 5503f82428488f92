"""Redis online feature store: entity state read and written in one round trip per batch.

Feast-like: an :class:`OnlineStore` interface and its Redis implementation beside its
config (``settings.redis``). Keys are ``{ns}:state:{spec}:{entity}`` and carry a TTL
(``settings.redis.state_ttl_seconds``), so idle entities expire; values are
:meth:`precog.features.EntityState.to_bytes`. Transient connection errors are retried
by redis-py's ``Retry`` with exponential backoff; when Redis stays unreachable the
store raises :class:`~precog.errors.ServiceUnavailable` naming the address.

Idempotency lives in the state itself (the per-partition offset watermark, see
:meth:`precog.features.Featurizer.featurize_batch`), so rewriting a redelivered batch's
states is harmless.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from precog.errors import ServiceUnavailable
from precog.features import EntityState
from precog.settings import Settings
from precog.spec import PipelineSpec

_T = TypeVar("_T")
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_RETRIES = 3


class OnlineStore(Protocol):
    """Where the score agent keeps entity state between micro-batches."""

    async def read(self, entity_ids: Sequence[str]) -> dict[str, EntityState | None]: ...

    async def write(self, states: Mapping[str, EntityState]) -> None: ...


def redacted(url: str) -> str:
    """The URL without credentials, for messages and logs.

    >>> redacted("rediss://user:secret@cache.example:6380/0")
    'rediss://cache.example:6380/0'
    """
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    cfg = settings.redis
    kw: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 5.0,
        "health_check_interval": 30,
    }
    if cfg.username:
        kw["username"] = cfg.username
    if cfg.password:
        kw["password"] = cfg.password.get_secret_value()
    if cfg.url.startswith("rediss://") and cfg.ssl_ca_certs:
        kw["ssl_ca_certs"] = str(cfg.ssl_ca_certs)
    return kw


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


class RedisOnlineStore:
    """Entity states of one pipeline spec in Redis (async for agents, sync for batch jobs)."""

    def __init__(self, settings: Settings, spec: PipelineSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.address = redacted(settings.redis.url)
        self.ttl = settings.redis.state_ttl_seconds
        kw = _client_kwargs(settings)
        self._async = aioredis.Redis.from_url(
            settings.redis.url, retry=AsyncRetry(_backoff(), _RETRIES), **kw
        )
        self._sync: redis.Redis | None = None
        self._sync_kw = kw

    def key(self, entity_id: str) -> str:
        """Redis key of one entity's state, e.g. ``prod:state:transactions:card-1``."""
        return self.settings.redis_key("state", self.spec.name, entity_id)

    # -- async (score agent) -------------------------------------------------------
    async def ping(self) -> None:
        """Fail fast: raise ServiceUnavailable when Redis does not answer."""
        await self._guard(self._async.ping)

    async def read(self, entity_ids: Sequence[str]) -> dict[str, EntityState | None]:
        """States of ``entity_ids`` (None when unknown or expired), in one MGET."""
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return {}
        keys = [self.key(e) for e in ids]
        values = await self._guard(lambda: self._async.mget(keys))
        return _decode(ids, values)

    async def write(self, states: Mapping[str, EntityState]) -> None:
        """Write ``states`` with the TTL in one pipelined round trip."""
        if not states:
            return
        pipe = self._async.pipeline(transaction=False)
        for entity, state in states.items():
            pipe.set(self.key(entity), state.to_bytes(), ex=self.ttl)
        await self._guard(pipe.execute)

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
            self._sync = redis.Redis.from_url(
                self.settings.redis.url, retry=Retry(_backoff(), _RETRIES), **self._sync_kw
            )
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


def _decode(ids: list[str], values: Sequence[Any]) -> dict[str, EntityState | None]:
    pairs = zip(ids, values, strict=True)
    return {e: None if v is None else EntityState.from_bytes(v) for e, v in pairs}
