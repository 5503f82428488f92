"""redis-py clients from ``settings.redis`` (URL, credentials, the TLS CA with ``rediss://``)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

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
    """The asyncio twin of :func:`redis_client`."""
    return aioredis.Redis.from_url(settings.redis.url, **_kwargs(settings, timeout, extra))
