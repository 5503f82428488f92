"""Progress of a long loop (count, rate, ETA): a rich bar on a terminal, plain lines elsewhere.

On a terminal the line is a :mod:`rich.progress` bar that redraws in place. Anywhere else
(CI logs, a pipe, a test capturing output) it prints a plain line every ``every_s`` seconds
and one at the end, with the same words::

    live transactions -> prod.events.transactions: 4,000/10,000 (40%)  812/s  ETA 0:00:08

Rate and ETA are rich's (the speed over the last 30 s); a caller that knows a longer
lower bound on the time left (a paced replay) passes it as ``min_eta_s``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

#: At most this often (seconds) an update reaches rich: a per-record call stays cheap.
_SAMPLE_S = 0.2


def status(done: int, total: int, rate: float | None, eta_s: float | None,
           note: str = "") -> str:
    """The words of a progress line after its label: count, share, rate, ETA, a note.

    >>> status(250, 1000, 50.0, 15.0, "garbage 3")
    '250/1,000 (25%)  50/s  ETA 0:00:15  garbage 3'
    >>> status(0, 0, None, None)
    '0/0 (100%)  ?/s  ETA ?'
    """
    pct = 100.0 * done / total if total else 100.0
    speed = "?" if rate is None else f"{rate:,.0f}"
    eta = "?" if eta_s is None else str(timedelta(seconds=round(eta_s)))
    line = f"{done:,}/{total:,} ({pct:.0f}%)  {speed}/s  ETA {eta}"
    return f"{line}  {note}" if note else line


def _task_status(task: Task) -> str:
    eta = task.time_remaining
    rate = task.finished_speed or task.speed  # over the last 30 s; else the mean so far
    if rate is None and task.completed and task.elapsed:
        rate = task.completed / task.elapsed
    if eta is None and rate and task.remaining is not None:
        eta = task.remaining / rate
    floor = task.fields.get("min_eta_s")
    if floor is not None and not task.finished:
        eta = max(eta or 0.0, floor)
    return status(int(task.completed), int(task.total or 0), rate, eta,
                  task.fields.get("note", ""))


class _StatusColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(_task_status(task), no_wrap=True, overflow="ellipsis")


class ProgressLine:
    """One loop's progress on ``stream`` (default stderr); a context manager.

    ``update(done)`` may be called for every record; ``close()`` (or leaving the ``with``
    block) writes the final state. ``enabled=False`` writes nothing. ``terminal`` forces
    the mode (None: ask whether ``stream`` is a terminal).

    >>> import io
    >>> now, out = [0.0], io.StringIO()
    >>> bar = ProgressLine("copy", 40, stream=out, every_s=2.0, clock=lambda: now[0])
    >>> for t in range(1, 5):
    ...     now[0] = float(t)
    ...     bar.update(10 * t)
    >>> bar.close()
    >>> print(out.getvalue(), end="")
    copy: 20/40 (50%)  10/s  ETA 0:00:02
    copy: 40/40 (100%)  10/s  ETA 0:00:00
    """

    def __init__(self, label: str, total: int, *, enabled: bool = True,
                 stream: TextIO | None = None, every_s: float = 10.0,
                 terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.enabled, self.every_s = label, enabled, every_s
        self.stream = stream or sys.stderr
        self._clock = clock
        console = Console(file=self.stream, force_terminal=terminal)
        self.terminal = enabled and console.is_terminal
        # the bar takes what the label and the words (about 60 characters) leave of the width
        bar = min(30, console.width - len(label) - 62)
        columns = [TextColumn("{task.description}:", markup=False), _StatusColumn()]
        if bar >= 5:
            columns.insert(1, BarColumn(bar_width=bar))
        self._rich = Progress(*columns, console=console, get_time=clock,
                              disable=not self.terminal)
        self._task = self._rich.add_task(label, total=total, note="", min_eta_s=None)
        self._done, self._note = 0, ""
        self._min_eta_s: float | None = None
        self._sampled = self._printed = clock()
        self._last_line = ""
        self._closed = not enabled
        if self.terminal:
            self._rich.start()

    def update(self, done: int, *, note: str = "", min_eta_s: float | None = None) -> None:
        """``done`` of the total so far; ``note`` follows the ETA; ``min_eta_s`` bounds it."""
        self._done, self._note, self._min_eta_s = done, note, min_eta_s
        if self._closed:
            return
        now = self._clock()
        if now - self._sampled < _SAMPLE_S:
            return
        self._sampled = now
        self._forward()
        if not self.terminal and now - self._printed >= self.every_s:
            self._printed = now
            self._print()

    def close(self) -> None:
        """Write the final state (once)."""
        if self._closed:
            return
        self._closed = True
        self._forward()
        if self.terminal:
            self._rich.stop()  # the last frame stays on screen
        else:
            self._print()

    def _forward(self) -> None:
        self._rich.update(self._task, completed=self._done, note=self._note,
                          min_eta_s=self._min_eta_s)

    def _print(self) -> None:
        line = f"{self.label}: {_task_status(self._rich.tasks[0])}"
        if line != self._last_line:  # the final state may have been printed already
            self._last_line = line
            self.stream.write(line + "\n")
            self.stream.flush()

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
