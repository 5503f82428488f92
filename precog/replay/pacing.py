"""When to send each replayed record: paced by record timestamp (event time), and the time left.

A pace is a speed relative to record time: ``None`` sends as fast as possible, ``1.0`` in
real time, ``N`` N times faster. The first record fixes the origin; a record ``dt`` ms of
record time later is due ``dt / speed`` ms of wall time later. Records whose timestamp is
older than the newest one seen are due at once (never wait backwards).

>>> due_ms(record_ms=61_000, origin_record_ms=1_000, origin_wall_ms=500, speed=10.0)
6500.0
>>> p = Pacer(10.0); p.delay_ms(1_000, 0.0), p.delay_ms(11_000, 0.0), p.delay_ms(11_000, 1_500.0)
(0.0, 1000.0, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field


def due_ms(record_ms: int, origin_record_ms: int, origin_wall_ms: float, speed: float) -> float:
    """Wall time (ms) at which a record is due."""
    return origin_wall_ms + max(0, record_ms - origin_record_ms) / speed


@dataclass
class Pacer:
    """Delays between records for one replay; ``speed`` None means no delay."""

    speed: float | None
    _origin: tuple[int, float] | None = field(default=None, init=False)

    def delay_ms(self, record_ms: int, wall_ms: float) -> float:
        """How long to wait (ms) at wall time ``wall_ms`` before sending this record."""
        if self.speed is None:
            return 0.0
        if self._origin is None:
            self._origin = (record_ms, wall_ms)
            return 0.0
        return max(0.0, due_ms(record_ms, self._origin[0], self._origin[1], self.speed)
                   - wall_ms)


def record_time_left_s(record_ms: int | None, last_record_ms: int | None,
                       speed: float | None) -> float | None:
    """Wall seconds a paced replay needs at least: the record time still to cover divided by
    the speed (None when not paced or not known).

    >>> record_time_left_s(0, 600_000, 2.0)
    300.0
    >>> record_time_left_s(0, 600_000, None) is None
    True
    """
    if speed is None or record_ms is None or last_record_ms is None:
        return None
    return max(0.0, (last_record_ms - record_ms) / 1000.0 / speed)
