"""Where the machine's CPU went during a measured window: cores used by each process.

The throughput, indexing and scaling targets compare rates of processes that share the
machine's cores with Kafka, Elasticsearch and Redis. A rate alone does not say whether the
process was the limit or the machine was: :class:`CpuSampler` records, every ``interval``
seconds in a thread, the cumulative CPU seconds (user + system) of named process trees (a
root pid and all its descendants, so a JVM started by a launcher script is counted) and the
machine's busy seconds (all CPUs, everything but idle and iowait). :meth:`CpuSampler.usage`
interpolates both at the window's ends and gives the cores each used in between: 1.0 is one
core busy for the whole window; ``machine`` is the sum over everything that ran, ``other``
what no named process accounts for (the benchmark's own reader, the OS), ``idle`` the cores
nothing used.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping
from typing import Any

import psutil

#: the stack's services whose CPU is reported (schema-registry does no per-event work)
STACK_SERVICES = ("kafka", "elasticsearch", "redis")


def stack_pids(settings: Any) -> dict[str, int]:
    """The local stack's service pids, by service (services not running are left out)."""
    from precog.stack import service_pid

    found = {name: service_pid(settings, name) for name in STACK_SERVICES}
    return {name: pid for name, pid in found.items() if pid is not None}


def _trees(roots: Mapping[str, psutil.Process]) -> dict[str, list[psutil.Process]]:
    """Each root with its descendants, less the subtrees of the other roots among them (a
    worker started by the benchmark is the worker's, not the benchmark's)."""
    trees: dict[str, list[psutil.Process]] = {}
    for name, root in roots.items():
        try:
            trees[name] = [root, *root.children(recursive=True)]
        except psutil.Error:
            trees[name] = []
    owned = {name: {p.pid for p in procs} for name, procs in trees.items()}
    for name, procs in trees.items():
        inner = set().union(*(owned[o] for o, r in roots.items()
                              if o != name and r.pid in owned[name]))
        trees[name] = [p for p in procs if p.pid not in inner]
    return trees


def _cpu_seconds(procs: list[psutil.Process], seen: dict[int, psutil.Process],
                 last: dict[int, float]) -> float:
    """CPU seconds of every process of the tree seen so far: the live ones now, those that
    exited at their last sample (what they used after it is lost). ``seen`` keeps the
    Process objects, so a pid reused by an unrelated process is not mistaken for a known
    one."""
    for p in procs:
        known = seen.setdefault(p.pid, p)
        try:
            t = known.cpu_times()
        except psutil.Error:
            continue
        last[p.pid] = t.user + t.system
    return sum(last.values())


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


class CpuSampler:
    """Samples the CPU seconds of named process trees and of the machine in a thread.

    >>> import os
    >>> with CpuSampler({"me": os.getpid()}, interval=0.01) as s:
    ...     t0 = time.time(); _ = sum(i * i for i in range(3_000_000)); t1 = time.time()
    >>> 0.0 < s.usage(t0, t1)["me"] <= 1.5
    True
    """

    def __init__(self, pids: Mapping[str, int], interval: float = 0.1) -> None:
        self.interval = interval
        self.cores = psutil.cpu_count() or 1
        self._roots: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            try:
                self._roots[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self._seen: dict[str, dict[int, psutil.Process]] = {name: {} for name in self._roots}
        self._last: dict[str, dict[int, float]] = {name: {} for name in self._roots}
        self.times: list[float] = []
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def sample(self) -> None:
        row = {name: _cpu_seconds(procs, self._seen[name], self._last[name])
               for name, procs in _trees(self._roots).items()}
        row["machine"] = _machine_busy()
        self.times.append(time.time())
        self.samples.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> CpuSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def __enter__(self) -> CpuSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _at(self, name: str, t: float) -> float:
        """The cumulative CPU seconds of ``name`` at wall time ``t``, interpolated."""
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return self.samples[0].get(name, 0.0)
        if i >= len(self.times):
            return self.samples[-1].get(name, 0.0)
        t0, t1 = self.times[i - 1], self.times[i]
        v0, v1 = self.samples[i - 1].get(name, 0.0), self.samples[i].get(name, 0.0)
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1

    def usage(self, start: float, end: float) -> dict[str, float]:
        """Cores used by each named tree, the machine, everything else and nothing, between
        wall times ``start`` and ``end`` (seconds since the epoch)."""
        if not self.samples or end <= start:
            return {}
        span = end - start
        out = {name: (self._at(name, end) - self._at(name, start)) / span
               for name in self.samples[0]}
        named = sum(v for k, v in out.items() if k != "machine")
        out["other"] = max(0.0, out["machine"] - named)
        out["idle"] = max(0.0, self.cores - out["machine"])
        return out


def window_usage(sampler: CpuSampler, timestamps_ms: list[int]) -> dict[str, float]:
    """:meth:`CpuSampler.usage` over the span of output record timestamps (ms)."""
    if not timestamps_ms:
        return {}
    return sampler.usage(min(timestamps_ms) / 1000.0, max(timestamps_ms) / 1000.0)


def summarize_cpu(runs: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per name, the median, min and max cores over the runs that measured it."""
    from precog.bench.report import summarize

    names = dict.fromkeys(name for run in runs for name in run)
    return {name: summarize([run[name] for run in runs if name in run]) for name in names}


def cpu_line(usage: Mapping[str, float]) -> str:
    """``worker 0.98, kafka 0.51, ... idle 0.12 cores`` for a progress line."""
    if not usage:
        return "cpu not sampled"
    order = [k for k in usage if k not in ("machine", "other", "idle")] + ["other", "idle"]
    return ", ".join(f"{k} {usage[k]:.2f}" for k in order if k in usage) + " cores"
