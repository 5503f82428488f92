"""The core bench's after-idle measurement and how the report shows it (no timing asserted)."""

from __future__ import annotations

import pytest

from precog.bench import core
from precog.bench.report import _core


def test_idle_penalty_times_the_same_batches_busy_and_after_a_sleep(monkeypatch) -> None:
    slept: list[float] = []
    seen: list[list[bytes]] = []
    woke = [False]  # the next pass follows a sleep

    def fake_sleep(s: float) -> None:
        slept.append(s)
        woke[0] = True

    built: list[object] = []
    given: list[object] = []

    def fake_parts(spec, models):
        built.append(object())
        return built[-1]

    def fake_pass(spec, models, values, batch, reference=True, parts=None):
        seen.append(values)
        given.append(parts)
        cost = 0.003 if woke[0] else 0.001  # 3 ms right after a sleep, 1 ms back to back
        woke[0] = False
        return {"decode": cost, "encode": 0.0}

    monkeypatch.setattr(core, "core_pass", fake_pass)
    monkeypatch.setattr(core, "CoreParts", fake_parts)
    monkeypatch.setattr(core.time, "sleep", fake_sleep)
    values = [bytes([i]) for i in range(45)]
    got = core.idle_penalty(None, None, values, batch=20, idle=0.02, rounds=3)
    # whole batches only, the same ones both ways, each round; a sleep before each
    # after-idle batch only
    assert seen == [values[:20], values[20:40]] * 6
    assert slept == [0.02] * 6
    # the featurizer, reader and writer are built once, not after each sleep
    assert len(built) == 1 and given == built * 12
    assert got == {"batch": 20, "idle_s": 0.02, "batches": 2, "rounds": 3,
                   "busy_ms_per_batch": 1.0, "after_idle_ms_per_batch": 3.0, "ratio": 3.0,
                   "penalty_ms": 2.0}


def test_idle_penalty_needs_one_whole_batch() -> None:
    with pytest.raises(ValueError, match="at least 20 events"):
        core.idle_penalty(None, None, [b"x"] * 19, batch=20)


def test_the_core_section_reports_the_after_idle_pass() -> None:
    report = {"core": {
        "events": 2000, "batch": 2000, "passes": 3, "total_us_per_event": 24.0,
        "reference_total_us_per_event": 60.0,
        "us_per_event": {"decode": 3.0, "validate": 3.0, "featurize": 9.0, "score": 3.0,
                         "encode": 6.0, "reference_encode": 42.0},
        "after_idle": {"batch": 20, "idle_s": 0.02, "batches": 100, "rounds": 3,
                       "busy_ms_per_batch": 1.23, "after_idle_ms_per_batch": 3.44,
                       "ratio": 2.79, "penalty_ms": 2.21},
    }}
    text = "\n".join(_core(report))
    assert ("1.23 ms of CPU per batch back to back, 3.44 ms when each batch follows 20 ms "
            "asleep (2.79x, +2.21 ms; medians of 3 rounds of 100 batches)") in text
    del report["core"]["after_idle"]  # a report from before the measurement still renders
    assert "After idle" not in "\n".join(_core(report))
