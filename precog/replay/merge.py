"""Several record streams merged by timestamp, each stream's own order kept.

The replay reads every partition of the events topic (and of the outcomes topic) and
sends in timestamp order across them, so events and their outcomes stay aligned in
time. Per-key order is what matters for features: a key lives in one partition, and a
partition's records leave in offset order, whatever their timestamps say. A record is
released only when every stream that is still open has a head to compare with (or is
finished), so nothing older can arrive later from a slower stream.

>>> m = TimeMerge(["a", "b"])
>>> m.push("a", 5, "a5"); m.push("a", 1, "a1"); m.push("b", 3, "b3")
>>> list(m.ready()), m.waiting_for()
(['b3'], ['b'])
>>> m.finish("b"); list(m.ready())
['a5', 'a1']
>>> m.done, m.finish("a"), m.done
(False, None, True)
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from typing import Any


class TimeMerge:
    """K-way merge by timestamp over streams that arrive in pieces."""

    def __init__(self, streams: Iterable[Hashable]) -> None:
        self._buffers: dict[Hashable, deque[tuple[int, Any]]] = {s: deque() for s in streams}
        self._open = set(self._buffers)
        self._seq = 0

    def push(self, stream: Hashable, timestamp: int, item: Any) -> None:
        """Append ``item`` to ``stream`` (items of one stream must be pushed in their order)."""
        self._buffers[stream].append((timestamp, item))

    def finish(self, stream: Hashable) -> None:
        """No more items will be pushed to ``stream``."""
        self._open.discard(stream)

    def buffered(self, stream: Hashable) -> int:
        """Items of ``stream`` not yet released."""
        return len(self._buffers[stream])

    def streams_over(self, n: int) -> list[Hashable]:
        """Streams holding more than ``n`` unreleased items (to pause their reading)."""
        return [s for s, buf in self._buffers.items() if len(buf) > n]

    def waiting_for(self) -> list[Hashable]:
        """Open streams with an empty buffer: nothing can be released until they have data."""
        return [s for s in self._open if not self._buffers[s]]

    @property
    def done(self) -> bool:
        """Every stream finished and released."""
        return not self._open and not any(self._buffers.values())

    def ready(self) -> Iterator[Any]:
        """Release items in timestamp order (ties: stream order) while that is safe."""
        heap = [(buf[0][0], i, s) for i, (s, buf) in enumerate(self._buffers.items()) if buf]
        heapq.heapify(heap)
        order = {s: i for i, s in enumerate(self._buffers)}
        while heap:
            _, _, stream = heap[0]
            if any(not self._buffers[s] for s in self._open):
                return
            heapq.heappop(heap)
            buf = self._buffers[stream]
            yield buf.popleft()[1]
            if buf:
                heapq.heappush(heap, (buf[0][0], order[stream], stream))
