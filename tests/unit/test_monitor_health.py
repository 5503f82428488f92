"""Pipeline health: volume vs manifests and baseline, quality failures, dead letters, lag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from precog import resources
from precog.avro import Codec
from precog.monitor.health import health_doc_id
from precog.monitor.monitor import Monitor, MonitorConfig
from precog.monitor.volume import VolumeMonitor

pytestmark = pytest.mark.unit

W = 60_000
ROOT = Path(__file__).resolve().parents[2]


def _feed(mon: Monitor, per_window: list[int], manifests: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for w, n in enumerate(per_window):
        times = np.sort(rng.integers(w * W, (w + 1) * W, n))
        for t in times:
            mon.on_event("transactions", int(t))
        if manifests:
            # the producer meant to send 1000 in every window
            mon.on_manifest({"producer_id": "sim", "source": "transactions",
                             "window_start": w * W, "window_end": (w + 1) * W,
                             "record_count": 1000, "valid_count": None, "sent_time": 0})


@pytest.mark.parametrize("manifests", [True, False])
def test_a_30_percent_drop_in_one_window_raises_one_volume_alert(manifests):
    mon = Monitor(MonitorConfig("t", volume_window_ms=W, min_ratio=0.8, volume_grace_ms=0))
    counts = [1000, 1000, 1000, 1000, 700, 1000, 1000]
    _feed(mon, counts, manifests)
    out = mon.tick(now=99, watermark=len(counts) * W)
    volume = [d for d in out.health if d["kind"] == "volume"]
    assert [d["received"] for d in volume] == counts
    alerts = [a for a in out.alerts if a["kind"] == "volume"]
    assert [a["window"] for a in alerts] == [f"{4 * W}-{5 * W}"]
    a = alerts[0]
    assert a["statistic"] == pytest.approx(0.7) and a["threshold"] == 0.8
    assert a["detector"] == ("volume-vs-manifest" if manifests else "volume-vs-baseline")
    assert a["source"] == "transactions"
    dropped = volume[4]
    if manifests:
        assert dropped["expected"] == 1000.0 and dropped["ratio"] == pytest.approx(0.7)
    else:
        assert "expected" not in dropped and dropped["expected_baseline"] == 1000.0
    assert health_doc_id(dropped) == f"transactions:volume:total:{4 * W}"


def test_windows_close_only_after_the_watermark_passes_them():
    vm = VolumeMonitor(W, grace_ms=10_000)
    vm.record("s", 5)
    assert vm.close(W + 9_999) == []
    assert [r.received for r in vm.close(W + 10_000)] == [1]


def _garbage_run(seed: int = 1, n: int = 3000):
    """Events where about 4% fail checks; each failing one is also a dead letter."""
    rng = np.random.default_rng(seed)
    mon = Monitor(MonitorConfig("t", volume_window_ms=W, volume_grace_ms=0))
    bad = 0
    for i in range(n):
        t = i * 100
        failures = []
        r = rng.random()
        if r < 0.02:
            failures = ["decode"]
        elif r < 0.03:
            failures = ["amount.min"]
        elif r < 0.04:
            failures = ["amount.min", "channel.categories"]
        mon.on_event("transactions", t, failures)
        if failures:
            bad += 1
            cls = "DecodeError" if failures == ["decode"] else "ValidationError"
            mon.on_dead_letter("transactions", t, cls)
    return mon, bad, n


def test_garbage_shows_up_as_quality_failures_and_dead_letters_with_matching_counts():
    mon, bad, n = _garbage_run()
    out = mon.tick(now=1, watermark=n * 100 + W)
    assert mon.quality.totals() == {"events": n, "invalid": bad, "dead_letters": bad}
    total = sum(d["count"] for d in out.health if d["kind"] == "quality" and d["name"] == "total")
    dead = sum(d["count"] for d in out.health if d["kind"] == "dead_letter")
    assert total == dead == bad == 123
    per_window = {}
    for d in out.health:
        if d["kind"] in ("quality", "dead_letter") and d["name"] in ("total", "DecodeError",
                                                                      "ValidationError"):
            key = (d["window_start"], d["kind"])
            per_window[key] = per_window.get(key, 0) + d["count"]
    for (start, kind), count in per_window.items():
        other = "dead_letter" if kind == "quality" else "quality"
        assert per_window[(start, other)] == count
    decode = sum(d["count"] for d in out.health if d["name"] == "decode")
    assert decode == sum(d["count"] for d in out.health if d["name"] == "DecodeError")


def test_health_documents_fit_the_index_template():
    mon, _, n = _garbage_run(n=1000)
    mon.on_lag("precog-t-score", 42)
    out = mon.tick(now=5, watermark=n * 100 + W)
    template = json.loads((resources.template_dir() / "pipeline-health.json").read_text())
    fields = set(template["template"]["mappings"]["properties"])
    kinds = {d["kind"] for d in out.health}
    assert kinds == {"volume", "quality", "dead_letter", "lag"}
    for d in out.health:
        assert set(d) <= fields, set(d) - fields
        assert {"namespace", "source", "window_start", "window_end", "computed_time", "kind",
                "name"} <= set(d)
    lag = [d for d in out.health if d["kind"] == "lag"]
    assert [(d["name"], d["lag"], d["source"]) for d in lag] == [("precog-t-score", 42,
                                                                  "pipeline")]


def test_lag_over_the_threshold_alerts():
    mon = Monitor(MonitorConfig("t", lag_threshold=100))
    mon.on_lag("g", 101)
    alerts = mon.tick(now=W * 3).alerts
    assert [(a["kind"], a["statistic"]) for a in alerts] == [("lag", 101.0)]
    codec = Codec.for_schema("alert")
    assert codec.decode(codec.encode(alerts[0])) == alerts[0]


WALL = 1_700_000_000_000  # the ticks' wall clock; event times are far older (a replay)
TICK = 5_000


def _docs(out, kind: str = "volume") -> list[tuple[int, int]]:
    return [(d["window_start"], d.get("received", d.get("count"))) for d in out.health
            if d["kind"] == kind and d["name"] == "total"]


def test_the_last_window_becomes_final_exactly_once_when_the_stream_goes_quiet():
    mon = Monitor(MonitorConfig("t", volume_window_ms=W, volume_grace_ms=W))
    times = np.sort(np.random.default_rng(5).integers(2 * W, 3 * W, 137))
    for i, t in enumerate(times):
        mon.on_event("transactions", int(t), ["amount.min"] if i % 10 == 0 else [])
    w0 = int(times[-1])
    final_tick = -(-(4 * W - w0) // TICK)  # first tick with w0 + elapsed >= end + grace
    volume, quality = [], []
    for i in range(final_tick + 40):
        out = mon.tick(now=WALL + i * TICK)
        volume += [(i, *doc) for doc in _docs(out)]
        quality += [(i, *doc) for doc in _docs(out, "quality")]
        assert out.alerts == []
    assert volume == [(final_tick, 2 * W, 137)]
    # quality: provisional on every tick until final, then never again
    assert quality == [(i, 2 * W, 14) for i in range(final_tick + 1)]
    # a late record re-opens the window; the clock is the watermark again, then the same
    # quiet makes it final again: rewritten once, complete, and no alert
    mon.on_event("transactions", 2 * W + 1)
    later = WALL + (final_tick + 40) * TICK
    rewritten = []
    for i in range(final_tick + 40):
        out = mon.tick(now=later + i * TICK)
        rewritten += [(i, *doc) for doc in _docs(out)]
        assert out.alerts == []
    assert rewritten == [(final_tick, 2 * W, 138)]


def test_a_replay_closes_windows_by_the_watermark_and_the_last_ones_after_it_ends():
    """Event times hours behind the wall clock, 6x real time: while records arrive, only
    the watermark closes windows (no partial window is judged); then the quiet closes the
    last ones. Every window is judged once with its exact count."""
    mon = Monitor(MonitorConfig("t", volume_window_ms=W, volume_grace_ms=W, min_ratio=0.8))
    rng = np.random.default_rng(8)
    truth: dict[int, int] = {}
    seen: list[tuple[int, int, int]] = []  # (tick, window_start, received)
    ticks = 0
    for ticks in range(100):  # 100 ticks x 30 s of event time = 50 windows
        times = rng.integers(ticks * 30_000, (ticks + 1) * 30_000, 400)
        for t in times:
            mon.on_event("transactions", int(t))
            truth[int(t) // W * W] = truth.get(int(t) // W * W, 0) + 1
        out = mon.tick(now=WALL + ticks * TICK)
        for start, received in _docs(out):
            assert start + 2 * W <= mon.watermark  # closed by the watermark, not the wall
            seen.append((ticks, start, received))
        assert [a for a in out.alerts if a["kind"] == "volume"] == []
    for i in range(1, 2 * W // TICK + 2):  # quiet: the wall clock takes over
        out = mon.tick(now=WALL + (ticks + i) * TICK)
        seen += [(ticks + i, start, received) for start, received in _docs(out)]
        assert out.alerts == []
    assert sorted((start, received) for _, start, received in seen) == sorted(truth.items())
    assert len(truth) == 50 and [start for _, start, _ in seen[-2:]] == [48 * W, 49 * W]


@pytest.mark.parametrize("horizon", [True, False])
def test_an_event_dated_ahead_of_the_wall_clock_closes_no_window_before_its_time(horizon):
    """Events 20 h and 23 h ahead (within the allowed skew) after a steady stream: with the
    wall clock as the horizon (as the agent ticks) their windows stay open and nothing
    alerts; without one, the watermark jumps and the 20 h window, one event, alerts."""
    mon = Monitor(MonitorConfig("t", volume_window_ms=W, volume_grace_ms=W, min_ratio=0.8))
    base = WALL // W * W
    start = base - 8 * W
    for t in np.sort(np.random.default_rng(3).integers(start, base, 800)):
        mon.on_event("transactions", int(t))
    ahead = WALL + 20 * 3_600_000
    mon.on_event("transactions", ahead)
    mon.on_event("transactions", ahead + 3 * 3_600_000)  # and one later still
    alerts, judged = [], []
    for i in range(12):  # a minute of ticks at wall speed
        now = WALL + i * TICK
        out = mon.tick(now=now, horizon=now if horizon else None)
        alerts += [a for a in out.alerts if a["kind"] == "volume"]
        judged += [s for s, _ in _docs(out)]
    if horizon:
        assert alerts == [] and sorted(judged) == list(range(start, base, W))  # once each
    else:
        assert [a["window"] for a in alerts] == [f"{ahead // W * W}-{ahead // W * W + W}"]
