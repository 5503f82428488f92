"""redis-py clients from ``settings.redis`` (URL, credentials, the TLS CA with ``rediss://``)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import DataError

from precog.settings import Settings


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """redis-py keyword arguments of every client of ``settings.redis`` (auth, TLS CA).

    >>> sorted(client_kwargs(Settings()))
    ['health_check_interval', 'socket_connect_timeout', 'socket_timeout']
    """
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


def _kwargs(settings: Settings, timeout: float | None, extra: dict[str, Any]) -> dict[str, Any]:
    kw = client_kwargs(settings)
    if timeout is not None:
        kw.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    return {**kw, **extra}


def redis_client(settings: Settings, timeout: float | None = None, **extra: Any) -> redis.Redis:
    """A client of ``settings.redis``; ``timeout`` sets both socket timeouts, ``extra`` adds
    redis-py options (``retry=...``)."""
    return redis.Redis.from_url(settings.redis.url, **_kwargs(settings, timeout, extra))


def async_redis_client(settings: Settings, timeout: float | None = None,
                       **extra: Any) -> aioredis.Redis:
    """The asyncio twin of :func:`redis_client`, packing commands with hiredis.

    redis-py's asyncio connections build every command in Python, argument by argument
    (its synchronous ones use hiredis's C packer): for the score agent's per-batch MGET
    and state write of 540 entities that was 0.7 and 2.0 us per entity (docs/scoring.md).
    The connection class of the URL's scheme (TCP, TLS, unix socket) is kept; only its
    ``pack_command`` is hiredis's, which writes the same bytes.

    >>> async_redis_client(Settings()).connection_pool.connection_class.__name__
    'HiredisConnection'
    """
    client = aioredis.Redis.from_url(settings.redis.url, **_kwargs(settings, timeout, extra))
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


class _HiredisPacking:
    """``pack_command`` by ``hiredis.pack_command`` (a mixin for redis-py's asyncio
    connection classes)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        import hiredis

        # as redis-py: a command name with spaces ("CONFIG GET") is several arguments
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # what redis-py raises for an argument it cannot send
            raise DataError(str(exc)) from exc


_PACKING: dict[type, type] = {}


def hiredis_packing(cls: type) -> type:
    """``cls`` (a redis-py asyncio connection class) with hiredis's command packer.

    >>> from redis.asyncio.connection import Connection
    >>> packed = hiredis_packing(Connection)
    >>> packed.__name__, hiredis_packing(packed) is packed
    ('HiredisConnection', True)
    >>> args = ("EVALSHA", "f00", 2, "k1", b"k2", 60, b"v", 1.5, "ключ")
    >>> packed().pack_command(*args) == [b"".join(Connection().pack_command(*args))]
    True
    """
    if issubclass(cls, _HiredisPacking):
        return cls
    if cls not in _PACKING:
        _PACKING[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
    return _PACKING[cls]
