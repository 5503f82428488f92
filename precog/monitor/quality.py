"""Data-quality counts per source and event-time window: failed checks and dead letters.

Each event is checked against the schema and pipeline spec (``precog.validation``'s
``check_event`` in the agent); here a failure is just its check name, e.g.
``amount.max`` or ``decode``. Per window the monitor counts failures per check, the
number of invalid events (``total``: events with at least one failure) and dead letters
per ``error_class``. ``totals`` keeps the running sums so the two can be reconciled:
every invalid event must end as exactly one dead letter.

>>> q = QualityMonitor(window_ms=1000)
>>> q.record_event("tx", 10, ["amount.min", "country.pattern"])
>>> q.record_event("tx", 20, [])
>>> q.record_dead_letter("tx", 30, "ValidationError")
>>> q.totals()
{'events': 2, 'invalid': 1, 'dead_letters': 1}
>>> [(c.kind, c.name, c.count) for c in q.close(1000)]  # doctest: +NORMALIZE_WHITESPACE
[('dead_letter', 'ValidationError', 1), ('quality', 'amount.min', 1),
 ('quality', 'country.pattern', 1), ('quality', 'total', 1)]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from precog.monitor.health import WindowCount, WindowedCounts


def check_name(failure: Any) -> str:
    """``field.check`` of a ``CheckFailure``-like object or a plain string; a check already
    named with its field (as :mod:`precog.validation` names them) keeps its name.

    >>> from types import SimpleNamespace
    >>> from precog.validation import CheckFailure
    >>> check_name("decode"), check_name(CheckFailure("amount", "amount.finite", "nan"))
    ('decode', 'amount.finite')
    >>> check_name(SimpleNamespace(field="amount", check="min"))
    'amount.min'
    """
    if isinstance(failure, str):
        return failure
    field_ = getattr(failure, "field", None)
    check = str(getattr(failure, "check", failure))
    return f"{field_}.{check}" if field_ and not check.startswith(f"{field_}.") else check


def source_of_topic(topic: str, namespace: str) -> str:
    """The source of an events topic: ``prod.events.transactions`` -> ``transactions``.

    >>> source_of_topic("prod.events.transactions", "prod"), source_of_topic("x.y", "prod")
    ('transactions', 'x.y')
    """
    prefix = f"{namespace}.events."
    return topic[len(prefix):] if topic.startswith(prefix) else topic


class QualityMonitor:
    """Quality failures and dead letters per source and window."""

    def __init__(self, window_ms: int, grace_ms: int = 0) -> None:
        self.counts = WindowedCounts(window_ms, grace_ms)
        self._events = 0
        self._invalid = 0
        self._dead = 0

    def record_event(self, source: str, event_time: int, failures: Iterable[Any]) -> None:
        """One event and its check failures (empty when valid)."""
        names = sorted({check_name(f) for f in failures})
        self._events += 1
        if not names:
            return
        self._invalid += 1
        for name in names:
            self.counts.add(source, "quality", name, event_time)
        self.counts.add(source, "quality", "total", event_time)

    def record_dead_letter(self, source: str, t: int, error_class: str) -> None:
        """One dead letter of ``source`` (``t``: its window time, e.g. ``failed_time``)."""
        self._dead += 1
        self.counts.add(source, "dead_letter", error_class, t)

    def close(self, watermark: int) -> list[WindowCount]:
        return self.counts.close(watermark)

    def totals(self) -> dict[str, int]:
        return {"events": self._events, "invalid": self._invalid, "dead_letters": self._dead}
