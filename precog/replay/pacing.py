"""When to send each replayed record: paced by record timestamp (event time), and the ETA.

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


def eta_seconds(done: int, total: int, elapsed_s: float, *, record_ms: int | None = None,
                last_record_ms: int | None = None, speed: float | None = None) -> float:
    """Seconds left: the larger of the rate-based estimate and, when paced, the record time
    still to cover divided by the speed.

    >>> eta_seconds(50, 100, 10.0)
    10.0
    >>> eta_seconds(50, 100, 10.0, record_ms=0, last_record_ms=600_000, speed=2.0)
    300.0
    """
    rate_eta = (total - done) * elapsed_s / done if done > 0 else 0.0
    if speed is None or record_ms is None or last_record_ms is None:
        return max(0.0, rate_eta)
    return max(0.0, rate_eta, (last_record_ms - record_ms) / 1000.0 / speed)
