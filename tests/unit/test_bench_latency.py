"""The latency section's rounds (the worker, then the no-work floor) and how the report shows
them (no timing asserted)."""

from __future__ import annotations

from types import SimpleNamespace

from precog.bench import sections
from precog.bench.report import _latency, render_markdown, targets


def _row(p99: float) -> dict[str, float]:
    return {"offered_rate": 100.0, "measured": 10, "received": 10, "p50_ms": p99 / 4,
            "p95_ms": p99 / 2, "p99_ms": p99, "max_ms": p99 * 2, "cpu": {}}


def test_each_round_probes_the_worker_then_the_floor_at_the_same_rates(monkeypatch) -> None:
    calls: list[tuple[str, float, int]] = []
    p99 = {"precog": 80.0, "floor": 30.0}

    def fake_probe(lab, kind, max_rate, r):
        calls.append((kind, max_rate, r))
        # round r: the worker's p99 at each fraction grows with r; the floor stays put
        return [_row(p99[kind] * (1 + f) + (r if kind == "precog" else 0))
                for f in sections.LATENCY_FRACTIONS]

    monkeypatch.setattr(sections, "_probe_rates", fake_probe)
    lab = SimpleNamespace(config=SimpleNamespace(reps=3, latency_seconds=2.0, latency_warmup=0.5),
                          ensure_pool=lambda n: None)
    out = sections.bench_latency(lab, 400.0)
    assert calls == [("precog", 400.0, 0), ("floor", 400.0, 0), ("precog", 400.0, 1),
                     ("floor", 400.0, 1), ("precog", 400.0, 2), ("floor", 400.0, 2)]
    assert [r["fraction"] for r in out["floor"]] == [0.25, 0.5, 0.75]
    half = out["rates"][1]["p99_ms"]
    assert (half["median"], half["min"], half["max"]) == (121.0, 120.0, 122.0)
    assert out["floor"][1]["p99_ms"]["median"] == 45.0 and out["floor"][1]["lost"] == 0


def _report(floor: bool) -> dict:
    def rows(p99s):
        return [{"fraction": f, "offered_rate": 100.0, "p50_ms": 5.0, "p95_ms": 8.0,
                 "p99_ms": {"median": p, "min": p, "max": p, "runs": [p]}, "max_ms": 20.0,
                 "lost": 0, "cpu": {}} for f, p in zip((0.25, 0.5), p99s, strict=True)]
    lat = {"max_rate": 400, "seconds_per_rate": 3, "warmup_s": 1, "rates": rows((30.0, 80.0))}
    if floor:
        lat["floor"] = rows((12.0, 31.5))
    return {"latency": lat}


def test_the_p99_target_shows_the_floor_beside_the_worker() -> None:
    t = next(x for x in targets(_report(True)) if x["name"] == "p99 latency at 50% of max")
    assert (t["value"], t["met"], t["floor"]) == (80.0, False, 31.5)
    text = "\n".join(_latency(_report(True)))
    assert "*Floor*: the same rates" in text
    assert text.count("| 50% | 100 | 5.0 | 8.0 |") == 2  # the worker's row and the floor's
    machine = {"cpu": "x", "cores": 2, "ram_gib": 1, "python": "3", "kernel": "k",
               "services": {"kafka": "k", "elasticsearch": "e", "redis": "r"}, "libraries": {}}
    report = {**_report(True), "machine": machine, "command": "c",
              "config": {"quick": True, "reps": 1}}
    page = render_markdown({**report, "targets": targets(report)})
    assert "| p99 latency at 50% of max | <= 50 ms | 80.0 ms (no-work floor 31.5 ms) |" in page


def test_a_report_from_before_the_floor_still_renders() -> None:
    t = next(x for x in targets(_report(False)) if x["name"] == "p99 latency at 50% of max")
    assert "floor" not in t and t["value"] == 80.0
    assert "Floor" not in "\n".join(_latency(_report(False)))
