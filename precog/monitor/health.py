"""Pipeline-health documents, the event-time windowed counters behind them, their clock.

One ``{ns}-pipeline-health`` document per (source, window, kind, name), exactly the
shape of docs/documents.md; absent values are left out of the document. Windows close on
:class:`ClosingClock`: the watermark, moved on by wall time while no record arrives, so
the last window of a stream that stops becomes final too.

>>> c = WindowedCounts(window_ms=60_000)
>>> c.add("tx", "quality", "amount.range", 61_000)
>>> c.add("tx", "quality", "amount.range", 62_000, 2)
>>> c.close(119_999)
[]
>>> [(r.source, r.window_start, r.name, r.count) for r in c.close(120_000)]
[('tx', 60000, 'amount.range', 3)]
>>> doc = health_doc("prod", "tx", 60_000, 120_000, "quality", "amount.range", 7, count=3)
>>> health_doc_id(doc)
'tx:quality:amount.range:60000'
>>> sorted(doc)  # doctest: +NORMALIZE_WHITESPACE
['computed_time', 'count', 'kind', 'name', 'namespace', 'source', 'window_end',
 'window_start']
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

HEALTH_KINDS = ("volume", "quality", "dead_letter", "outlier", "lag")


def window_start(t: int, window_ms: int) -> int:
    """Start of the event-time window holding ``t``.

    >>> window_start(125_000, 60_000)
    120000
    """
    return t - t % window_ms


def health_doc(namespace: str, source: str, start: int, end: int, kind: str, name: str,
               computed_time: int, **values: float | int | None) -> dict[str, Any]:
    """One pipeline-health document (``count``, ``received``, ``expected``,
    ``expected_baseline``, ``ratio``, ``lag`` given as keywords; ``None`` is left out)."""
    if kind not in HEALTH_KINDS:
        raise ValueError(f"unknown health kind {kind!r}")
    allowed = {"count", "received", "expected", "expected_baseline", "ratio", "lag"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"unknown health fields {sorted(unknown)}")
    doc: dict[str, Any] = {
        "namespace": namespace, "source": source, "window_start": int(start),
        "window_end": int(end), "computed_time": int(computed_time), "kind": kind, "name": name,
    }
    doc.update({k: v for k, v in values.items() if v is not None})
    return doc


def health_doc_id(doc: dict[str, Any]) -> str:
    """``{source}:{kind}:{name}:{window_start}``."""
    return f"{doc['source']}:{doc['kind']}:{doc['name']}:{doc['window_start']}"


class ClosingClock:
    """The event time that closes health windows: the watermark, or wall time while idle.

    While records arrive, the clock is the watermark (largest event time seen). Once a
    tick at wall time ``n0`` (watermark ``w0``) has seen every record, the clock at a later
    tick at wall time ``n`` is ``w0 + (n - n0)`` until the next record: event time is taken
    to go on at wall speed, so a window ``[start, end)`` becomes final ``end + grace -
    w0`` after the stream went quiet. A record (even one far in the past, as in a replay)
    brings the clock back to the watermark; a window it re-opens is judged again.

    >>> c = ClosingClock()
    >>> c.at(now=1_000_000, watermark=5_000, records=10)  # records flowing: the watermark
    5000
    >>> c.at(now=1_060_000, watermark=5_000, records=10)  # quiet for 60 s
    65000
    >>> c.at(now=1_070_000, watermark=5_100, records=11)  # a record arrived
    5100
    """

    def __init__(self) -> None:
        self._anchor: tuple[int, int, int] | None = None  # (records, watermark, wall time)

    def at(self, now: int, watermark: int, records: int) -> int:
        """The clock at a tick at wall time ``now``; ``records`` counts every record seen."""
        anchor = self._anchor
        if anchor is None or anchor[0] != records or anchor[1] != watermark:
            self._anchor = (records, watermark, now)
            return watermark
        return max(watermark, anchor[1] + now - anchor[2])


@dataclass(frozen=True)
class WindowCount:
    """A closed window's count for one (source, kind, name)."""

    source: str
    kind: str
    name: str
    window_start: int
    window_end: int
    count: int


class WindowedCounts:
    """Counts per (source, kind, name) and event-time window; windows close on a watermark.

    A window ``[start, start + window_ms)`` closes once the watermark reaches
    ``start + window_ms + grace_ms``; counts that arrive for a closed window are added to
    a window that is re-opened and closed again (a later document with the same ``_id``
    overwrites the earlier, so Elasticsearch keeps the complete count).
    """

    def __init__(self, window_ms: int, grace_ms: int = 0, keep_windows: int = 1000) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.keep_windows = keep_windows
        self._open: dict[tuple[str, int], dict[tuple[str, str], int]] = defaultdict(
            lambda: defaultdict(int))
        self._closed_total: dict[tuple[str, str, str, int], int] = defaultdict(int)

    def add(self, source: str, kind: str, name: str, t: int, n: int = 1) -> None:
        self._open[(source, window_start(t, self.window_ms))][(kind, name)] += n

    def close(self, watermark: int) -> list[WindowCount]:
        out = []
        for (source, start) in sorted(self._open, key=lambda k: (k[1], k[0])):
            if start + self.window_ms + self.grace_ms > watermark:
                continue
            for (kind, name), n in sorted(self._open.pop((source, start)).items()):
                key = (source, kind, name, start)
                self._closed_total[key] += n
                out.append(WindowCount(source, kind, name, start, start + self.window_ms,
                                       self._closed_total[key]))
        horizon = watermark - self.keep_windows * self.window_ms
        for key in [k for k in self._closed_total if k[3] < horizon]:
            del self._closed_total[key]
        return out

    def provisional(self) -> list[WindowCount]:
        """The counts of windows still open, as they stand (nothing is closed or reset).

        Published on every tick so a dashboard shows the current window; the document of
        the closed window overwrites them later (same ``_id``).

        >>> wc = WindowedCounts(1000)
        >>> wc.add("tx", "quality", "decode", 5)
        >>> [(c.name, c.window_start, c.count) for c in wc.provisional()]
        [('decode', 0, 1)]
        >>> wc.provisional() == wc.provisional(), len(wc.close(10_000)), wc.provisional()
        (True, 1, [])
        """
        out = []
        for (source, start) in sorted(self._open, key=lambda k: (k[1], k[0])):
            for (kind, name), n in sorted(self._open[(source, start)].items()):
                total = self._closed_total.get((source, kind, name, start), 0) + n
                out.append(WindowCount(source, kind, name, start, start + self.window_ms, total))
        return out

    def open_windows(self) -> list[tuple[str, int]]:
        return sorted(self._open)
