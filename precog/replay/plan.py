"""What a replay covers: time and offset arguments, per-partition offset ranges, the pace.

Offsets ranges are half-open, ``[start, end)``, per source partition. Times are epoch ms.

>>> parse_time("2024-05-01T00:00:00Z")
1714521600000
>>> parse_pace("10x"), parse_pace("realtime"), parse_pace("max")
(10.0, 1.0, None)
>>> plan_ranges({0: (0, 10), 1: (5, 8)}, starts={0: 4, 1: None}, ends={0: None, 1: 7})
[PartitionRange(partition=0, start=4, end=10), PartitionRange(partition=1, start=5, end=7)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from precog.errors import ConfigError

_SPEED = re.compile(r"^(\d+(?:\.\d+)?)x$")


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one source partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """Offsets in the range (an upper bound of records: compaction leaves gaps).

        >>> PartitionRange(0, 3, 10).size, PartitionRange(0, 9, 4).size
        (7, 0)
        """
        return max(0, self.end - self.start)


def parse_time(text: str) -> int:
    """Epoch milliseconds from ISO 8601 (naive means UTC) or an integer of epoch ms.

    >>> parse_time("1714521600000"), parse_time("2024-05-01 00:00:01")
    (1714521600000, 1714521601000)
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not a time: {text!r} (ISO 8601, e.g. 2024-05-01T12:00:00Z, "
                          "or epoch milliseconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_offsets(text: str, partitions: list[int]) -> dict[int, int]:
    """Per-partition offsets: one integer for every partition, or ``P:O,P:O``.

    >>> parse_offsets("5", [0, 1]), parse_offsets("1:7, 0:2", [0, 1])
    ({0: 5, 1: 5}, {1: 7, 0: 2})
    """
    value = text.strip()
    if value.isdigit():
        return {p: int(value) for p in partitions}
    out: dict[int, int] = {}
    for part in value.split(","):
        p, sep, o = part.strip().partition(":")
        if not (sep and p.strip().isdigit() and o.strip().isdigit()):
            raise ConfigError(f"bad offsets {text!r}: use N or PARTITION:OFFSET,...")
        if int(p) not in partitions:
            raise ConfigError(f"bad offsets {text!r}: no partition {p} (has {partitions})")
        out[int(p)] = int(o)
    return out


def check_offsets(text: str, option: str) -> str:
    """An offsets argument (``N`` or ``P:N,P:N``) checked before any partition is known,
    without spaces (what a checkpoint compares); ``option`` names it in the error.

    >>> check_offsets(" 1:7, 0:2 ", "--end-offset"), check_offsets("5", "--start-offset")
    ('1:7,0:2', '5')
    >>> check_offsets("x", "--start-offset")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: bad --start-offset 'x': use N or PARTITION:OFFSET,...
    """
    value = "".join(text.split())
    parts = [part.partition(":") for part in value.split(",")]
    if not (value.isdigit() or all(sep and p.isdigit() and o.isdigit() for p, sep, o in parts)):
        raise ConfigError(f"bad {option} {text!r}: use N or PARTITION:OFFSET,...")
    return value


def parse_pace(text: str) -> float | None:
    """Speed relative to record time: None = as fast as possible, 1.0 = real time, N = Nx.

    >>> parse_pace("2.5x"), parse_pace("1x")
    (2.5, 1.0)
    """
    value = text.strip().lower()
    if value in ("max", "fast", "asap"):
        return None
    if value in ("realtime", "real-time", "real"):
        return 1.0
    m = _SPEED.match(value)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"bad pace {text!r}: use max, realtime or Nx (e.g. 10x)")
    return float(m.group(1))


def plan_ranges(
    watermarks: Mapping[int, tuple[int, int]],
    starts: Mapping[int, int | None],
    ends: Mapping[int, int | None],
) -> list[PartitionRange]:
    """Clamp requested start/end offsets to each partition's ``(low, high)`` watermarks.

    A missing or None start means the partition's low watermark (the oldest record), a
    missing or None end its high watermark (the next offset to be written), which is also
    what ``offsets_for_times`` answers (``-1``) for a time after the last record.

    >>> plan_ranges({0: (2, 9)}, starts={0: 0}, ends={0: 50})
    [PartitionRange(partition=0, start=2, end=9)]
    >>> plan_ranges({0: (2, 9)}, starts={0: -1}, ends={0: -1})
    [PartitionRange(partition=0, start=9, end=9)]
    """
    out = []
    for p in sorted(watermarks):
        low, high = watermarks[p]
        s, e = starts.get(p), ends.get(p)
        start = high if s is not None and s < 0 else min(max(low, s if s is not None else low),
                                                           high)
        end = high if e is None or e < 0 else min(max(low, e), high)
        out.append(PartitionRange(p, start, end))
    return out
