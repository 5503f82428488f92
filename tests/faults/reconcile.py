"""Account for every event of a fault scenario from Kafka itself, independently of the worker.

Every offset of the events topic must end as a prediction (its provenance names the
event's partition and offset) or a dead letter (it names the source partition and
offset). Lost = offsets with neither; duplicates = extra predictions of one offset.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from precog.avro import Codec
from precog.io import kafka
from precog.settings import Settings
from precog.workers import REPO


def read_all(settings: Settings, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` up to its current end (all partitions)."""
    try:
        return list(kafka.read_to_end(settings, topic, "precog-reconcile", idle_timeout=timeout))
    except TimeoutError as exc:
        raise AssertionError(f"{topic}: not read to its end ({exc})") from None


@dataclass
class Reconciliation:
    events: int
    predicted: int
    dead_letters: int
    lost: list[tuple[int, int]] = field(default_factory=list)
    duplicates: int = 0
    both: list[tuple[int, int]] = field(default_factory=list)

    def row(self) -> str:
        return (f"events {self.events}, predicted {self.predicted}, dead letters "
                f"{self.dead_letters}, lost {len(self.lost)}, duplicates {self.duplicates}")


def reconcile(settings: Settings, events_topic: str) -> Reconciliation:
    """Offsets of ``events_topic`` against predictions and dead letters (see module doc)."""
    events = read_all(settings, events_topic)
    pred_codec, dlq_codec = Codec.for_schema("prediction"), Codec.for_schema("dead_letter")
    predicted: Counter[tuple[int, int]] = Counter()
    for m in read_all(settings, settings.topic("predictions")):
        prov = pred_codec.decode(m.value())["provenance"]
        if prov["source_topic"] == events_topic:
            predicted[(prov["partition"], prov["offset"])] += 1
    dead: set[tuple[int, int]] = set()
    for m in read_all(settings, settings.topic("dlq")):
        rec = dlq_codec.decode(m.value())
        if rec["source_topic"] == events_topic:
            dead.add((rec["partition"], rec["offset"]))
    offsets = {(m.partition(), m.offset()) for m in events}
    return Reconciliation(
        events=len(offsets),
        predicted=len(predicted),
        dead_letters=len(dead),
        lost=sorted(offsets - set(predicted) - dead),
        duplicates=sum(n - 1 for n in predicted.values()),
        both=sorted(set(predicted) & dead),
    )


# --------------------------------------------------------------------------- report rows


def _measured_at() -> str:
    """UTC date and the checkout's commit (``+dirty`` with local changes), for a table row."""
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                                capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown commit"
    return f"{time.strftime('%Y-%m-%d', time.gmtime())} {commit}"


def table_row(scenario: str, fault: str, result: Reconciliation, *,
              recovery_s: float | None, wall_s: float, notes: str = "",
              measured: str = "") -> str:
    """One row of docs/reliability.md's table; the first cell is the row's stable key.

    >>> r = Reconciliation(events=10, predicted=9, dead_letters=1)
    >>> table_row("es-down", "down 30 s", r, recovery_s=1.25, wall_s=80.4, measured="d c")
    '| es-down | down 30 s | 10 | 9 | 1 | 0 | 0 | 0 | 1.2 | 80 |  | d c |'
    """
    recovery = "" if recovery_s is None else f"{recovery_s:.1f}"
    cells = [scenario, fault, result.events, result.predicted, result.dead_letters,
             len(result.lost), result.duplicates, len(result.both), recovery,
             f"{wall_s:.0f}", notes, measured]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(scenario: str, fault: str, result: Reconciliation, *, recovery_s: float | None,
           wall_s: float, notes: str = "") -> str:
    """Print the scenario's summary row; append it to ``PRECOG_FAULTS_REPORT`` when set.

    Call it before asserting, so a failing scenario's numbers reach the table too.
    ``scenario`` is the row's key in docs/reliability.md (``./scripts/faults`` replaces the
    row with that key); ``recovery_s`` is from the fault's end (the service healthy again,
    or the worker restarted) until the worker's ``/health`` answered 200.
    """
    row = table_row(scenario, fault, result, recovery_s=recovery_s, wall_s=wall_s,
                    notes=notes, measured=_measured_at())
    print(f"[faults] {row}")
    path = os.environ.get("PRECOG_FAULTS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(row + "\n")
    return row
