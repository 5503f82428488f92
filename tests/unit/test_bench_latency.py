"""The latency section's rounds (the worker, then the no-work floor) and how the report shows
them (no timing asserted)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from precog.bench import sections
from precog.bench.lab import LATENCY_FRACTIONS, BenchConfig, latency_fractions
from precog.bench.report import _latency, render_markdown, targets, within_budget


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
                for f in LATENCY_FRACTIONS]

    monkeypatch.setattr(sections, "_probe_rates", fake_probe)
    lab = SimpleNamespace(config=SimpleNamespace(reps=3, latency_seconds=2.0, latency_warmup=0.5,
                                                 latency_fractions=LATENCY_FRACTIONS),
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


def test_the_section_offers_the_configured_fractions_and_sizes_its_pool_by_them(
        monkeypatch) -> None:
    offered: list[tuple[str, float]] = []
    pooled: list[int] = []

    def fake_probe(lab, kind, max_rate, r):
        offered.extend((kind, f) for f in lab.config.latency_fractions)
        return [_row(25.0 + 100 * f) for f in lab.config.latency_fractions]

    monkeypatch.setattr(sections, "_probe_rates", fake_probe)
    config = BenchConfig(reps=1, latency_seconds=10.0, latency_fractions=(0.1, 0.2, 0.3))
    lab = SimpleNamespace(config=config, ensure_pool=pooled.append)
    out = sections.bench_latency(lab, 1000.0)
    assert offered == [("precog", 0.1), ("precog", 0.2), ("precog", 0.3),
                       ("floor", 0.1), ("floor", 0.2), ("floor", 0.3)]
    assert [r["fraction"] for r in out["rates"]] == [0.1, 0.2, 0.3]
    assert pooled == [1000 + 2000 + 3000 + 1]  # each rate x its seconds, and one more
    # no 50% row: the target is not measured, and the table says which rate met 50 ms
    report = {"latency": out}
    t = next(x for x in targets(report) if x["name"] == "p99 latency at 50% of max")
    assert t["value"] is None and t["met"] is None
    assert ("Highest offered rate with a p99 within 50 ms: 20% of the maximum"
            " (100 events/s).") in _latency(report)  # _row's offered rate is 100


def test_a_rate_with_late_events_is_not_within_the_budget() -> None:
    rows = [{"fraction": 0.25, "offered_rate": 100.0, "p99_ms": 10.0, "lost": 0},
            {"fraction": 0.5, "offered_rate": 200.0, "p99_ms": 12.0, "lost": 3}]
    assert within_budget(rows) == ("Highest offered rate with a p99 within 50 ms: 25% of the"
                                   " maximum (100 events/s).")


@pytest.mark.parametrize("text", ["", "0", "-0.1", "1.5", "nan", "half", "0.2,,0.3"])
def test_bad_fractions_are_refused_with_the_value(text) -> None:
    with pytest.raises(ValueError, match="--fractions takes fractions of the maximum rate"):
        latency_fractions(text)


def test_bench_fractions_is_a_one_line_error_before_anything_runs(monkeypatch) -> None:
    from typer.testing import CliRunner

    from precog.bench import runner
    from precog.cli import app
    from precog.errors import ConfigError

    def must_not_run(*args, **kwargs):
        raise AssertionError("the bench must not start")

    monkeypatch.setattr(runner, "run_bench", must_not_run)
    result = CliRunner().invoke(app, ["bench", "--sections", "latency", "--fractions", "0.5,2"])
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception) == ("--fractions takes fractions of the maximum rate in (0, 1],"
                                     " e.g. 0.1,0.2,0.3; got '2'")


def test_bench_fractions_reach_the_config(monkeypatch) -> None:
    from typer.testing import CliRunner

    from precog.bench import runner
    from precog.cli import app

    seen = []
    monkeypatch.setattr(runner, "run_bench", lambda config, *a, **k: seen.append(config))
    result = CliRunner().invoke(app, ["bench", "--sections", "latency", "--no-doc",
                                      "--fractions", "0.3,0.1"])
    assert result.exit_code == 0, result.output
    assert seen[0].latency_fractions == (0.1, 0.3)
