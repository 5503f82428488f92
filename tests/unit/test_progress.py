"""The shared progress line: plain periodic lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io

import pytest

from precog.progress import ProgressLine

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(bar: ProgressLine, clock: Clock, steps: list[tuple[float, int]], **kw) -> None:
    for t, done in steps:
        clock.now = t
        bar.update(done, **kw)


def test_off_a_terminal_a_plain_line_every_period_and_one_at_the_end() -> None:
    """The rate is rich's, over the last 30 s (the first sample starts the window)."""
    clock, out = Clock(), io.StringIO()
    bar = ProgressLine("history transactions", 1000, stream=out, every_s=10.0, clock=clock)
    assert not bar.terminal
    run(bar, clock, [(t, 50 * t) for t in range(1, 16)], note="garbage 2")
    clock.now = 16.0
    bar.update(800)
    bar.close()
    bar.close()  # once
    assert out.getvalue().splitlines() == [
        "history transactions: 500/1,000 (50%)  50/s  ETA 0:00:10  garbage 2",
        "history transactions: 800/1,000 (80%)  50/s  ETA 0:00:04",
    ]


def test_updates_closer_than_the_sampling_period_are_only_remembered() -> None:
    clock, out = Clock(), io.StringIO()
    bar = ProgressLine("copy", 10, stream=out, every_s=0.0, clock=clock)
    run(bar, clock, [(0.1, 1), (0.15, 2)])
    assert out.getvalue() == ""
    clock.now = 1.0
    bar.close()  # the last value reaches the line at the end
    assert out.getvalue() == "copy: 2/10 (20%)  2/s  ETA 0:00:04\n"


def test_a_lower_bound_on_the_time_left_raises_the_eta_until_done() -> None:
    clock, out = Clock(), io.StringIO()
    bar = ProgressLine("replay", 100, stream=out, every_s=1.0, clock=clock)
    run(bar, clock, [(1.0, 10), (2.0, 20)], min_eta_s=600.0)
    clock.now = 3.0
    bar.update(100, min_eta_s=600.0)
    bar.close()
    assert out.getvalue().splitlines() == [
        "replay: 10/100 (10%)  10/s  ETA 0:10:00",
        "replay: 20/100 (20%)  10/s  ETA 0:10:00",
        "replay: 100/100 (100%)  45/s  ETA 0:00:00",
    ]


def test_leaving_the_block_on_an_error_writes_where_it_stopped() -> None:
    clock, out = Clock(), io.StringIO()
    with pytest.raises(RuntimeError), ProgressLine("copy", 10, stream=out, clock=clock) as bar:
        run(bar, clock, [(1.0, 4)])
        raise RuntimeError
    assert out.getvalue() == "copy: 4/10 (40%)  4/s  ETA 0:00:02\n"


def test_disabled_writes_nothing() -> None:
    out = io.StringIO()
    with ProgressLine("copy", 10, stream=out, enabled=False, terminal=True) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_on_a_terminal_a_bar_redrawn_in_place() -> None:
    clock, out = Clock(), io.StringIO()
    with ProgressLine("copy", 10, stream=out, terminal=True, clock=clock) as bar:
        assert bar.terminal
        run(bar, clock, [(1.0, 5), (2.0, 10)])
    text = out.getvalue()
    assert "\r" in text and "━" in text
    assert text.rstrip().endswith("\x1b[?25h")  # the cursor is back
    assert "copy: " in text and "10/10 (100%)  5/s  ETA 0:00:00" in text
