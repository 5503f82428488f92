"""Fail fast at startup: every backing service answers at its address, or we say which.

The checks are :mod:`precog.io.health`'s fast variant; addresses are shown without
credentials (:class:`precog.errors.ServiceUnavailable`).
"""

from __future__ import annotations

from precog.io import health
from precog.settings import Settings


def check_kafka(settings: Settings, timeout: float = 10.0) -> None:
    health.check_kafka(settings, timeout, preflight=True)


def check_redis(settings: Settings, timeout: float = 5.0) -> None:
    health.check_redis(settings, timeout, preflight=True)


def check_elasticsearch(settings: Settings, timeout: float = 10.0) -> None:
    health.check_elasticsearch(settings, timeout, preflight=True)


def check_schema_registry(settings: Settings, timeout: float = 5.0) -> None:
    health.check_schema_registry(settings, timeout, preflight=True)


def check_all(settings: Settings, elasticsearch: bool = True) -> None:
    check_kafka(settings)
    check_redis(settings)
    if elasticsearch:
        check_elasticsearch(settings)
    if settings.wire_format == "confluent":  # docs/schemas.md
        check_schema_registry(settings)
