"""Volume per source and event-time window: received vs expected (manifests, learned baseline).

Expected comes from the producers' control totals (``manifest.v1``: ``record_count``
summed over producers for the window) and from a learned baseline: an EWMA of the
received counts of earlier, healthy windows. The ratio compared with
``spec.volume.min_ratio`` is ``received / expected`` from the manifests when there are
any for the window, else from the baseline (once ``warmup`` windows have been seen).
A window with a ratio below ``min_ratio`` raises a ``volume`` alert and is kept out of
the baseline.

A window is judged once the clock given to :meth:`VolumeMonitor.close` passes its end
plus grace (the monitor gives :class:`~precog.monitor.health.ClosingClock`, so the last
window of a stream becomes final too). Records or manifests arriving for a judged window
re-open it: it is judged again with the totals of everything received, so the rewritten
document (same ``_id``) is complete; it keeps the baseline it was first judged with, does
not feed the baseline again, and alerts only if no judgement of it alerted before.

>>> vm = VolumeMonitor(window_ms=1000, min_ratio=0.8, warmup=2)
>>> for w, n in enumerate([100, 100, 100, 60, 100]):
...     for i in range(n):
...         vm.record("tx", w * 1000 + i)
>>> for r in vm.close(5000):
...     print(r.window_start, r.received, r.expected_baseline, r.ratio, r.alert)
0 100 None None False
1000 100 None None False
2000 100 100.0 1.0 False
3000 60 100.0 0.6 True
4000 100 100.0 1.0 False
>>> vm.record("tx", 3500, 25)  # late records re-open window 3000
>>> [(r.window_start, r.received, r.ratio, r.alert) for r in vm.close(5000)]
[(3000, 85, 0.85, False)]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from precog.monitor.alerts import make_alert
from precog.monitor.health import health_doc, window_start


@dataclass(frozen=True)
class VolumeWindow:
    """One closed window of one source."""

    source: str
    window_start: int
    window_end: int
    received: int
    expected: float | None
    expected_baseline: float | None
    ratio: float | None
    alert: bool

    def doc(self, namespace: str, computed_time: int) -> dict[str, Any]:
        return health_doc(namespace, self.source, self.window_start, self.window_end, "volume",
                          "total", computed_time, count=self.received, received=self.received,
                          expected=self.expected, expected_baseline=self.expected_baseline,
                          ratio=self.ratio)

    def alert_record(self, namespace: str, min_ratio: float, now: int) -> dict[str, Any]:
        basis = "manifest" if self.expected is not None else "baseline"
        exp = self.expected if self.expected is not None else self.expected_baseline
        return make_alert(
            namespace, "volume", f"volume-vs-{basis}", source=self.source,
            window=f"{self.window_start}-{self.window_end}", statistic=self.ratio or 0.0,
            threshold=min_ratio,
            message=(f"{self.source}: received {self.received} of {exp:.0f} expected"
                     f" ({basis}) in window {self.window_start}..{self.window_end}"),
            event_time=self.window_end, detected_time=now,
        )


class VolumeMonitor:
    """Counts records per source and window and judges each window when it closes."""

    def __init__(self, window_ms: int, min_ratio: float = 0.8, alpha: float = 0.3,
                 warmup: int = 3, grace_ms: int = 0, keep_windows: int = 1000) -> None:
        self.window_ms = window_ms
        self.min_ratio = min_ratio
        self.alpha = alpha
        self.warmup = warmup
        self.grace_ms = grace_ms
        self.keep_windows = keep_windows
        self._received: dict[tuple[str, int], int] = defaultdict(int)
        self._expected: dict[tuple[str, int], int] = defaultdict(int)
        self._baseline: dict[str, float] = {}
        self._seen: dict[str, int] = defaultdict(int)
        #: judged windows, and whether one alerted (kept ``keep_windows`` back): a
        #: re-opened window is judged again with full totals
        self._judged: dict[tuple[str, int], tuple[VolumeWindow, bool]] = {}

    def record(self, source: str, event_time: int, n: int = 1) -> None:
        """``n`` records of ``source`` arrived with this event time."""
        self._received[(source, window_start(event_time, self.window_ms))] += n

    def manifest(self, rec: dict[str, Any]) -> None:
        """A producer control total; attributed to the window holding its ``window_start``."""
        key = (rec["source"], window_start(int(rec["window_start"]), self.window_ms))
        self._expected[key] += int(rec["record_count"])

    def close(self, watermark: int) -> list[VolumeWindow]:
        """Judge every window that ended (plus grace) before the watermark, oldest first.

        Windows without any record but with a manifest are judged too (received 0).
        """
        keys = sorted(set(self._received) | set(self._expected), key=lambda k: (k[1], k[0]))
        out = []
        for source, start in keys:
            if start + self.window_ms + self.grace_ms > watermark:
                continue
            out.append(self._judge(source, start))
        horizon = watermark - self.keep_windows * self.window_ms
        for key in [k for k in self._judged if k[1] < horizon]:
            del self._judged[key]
        return out

    def _judge(self, source: str, start: int) -> VolumeWindow:
        received = self._received.pop((source, start), 0)
        manifest = self._expected.pop((source, start), None)
        expected = float(manifest) if manifest is not None else None
        before, alerted = self._judged.get((source, start), (None, False))
        if before is not None:  # re-opened: everything received, the baseline it had
            received += before.received
            if before.expected is not None:
                expected = before.expected + (expected or 0.0)
            baseline = before.expected_baseline
        else:
            baseline = self._baseline.get(source) if self._seen[source] >= self.warmup else None
        basis = expected if expected is not None else baseline
        ratio = received / basis if basis else None
        low = ratio is not None and ratio < self.min_ratio
        if before is None and not low:
            prev = self._baseline.get(source)
            self._baseline[source] = (float(received) if prev is None
                                      else self.alpha * received + (1 - self.alpha) * prev)
            self._seen[source] += 1
        window = VolumeWindow(source, start, start + self.window_ms, received, expected,
                              baseline, ratio, alert=low and not alerted)
        self._judged[(source, start)] = (window, alerted or low)
        return window
