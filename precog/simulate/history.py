"""History files from a simulator: ``events.avro``, ``outcomes.avro`` and ``manifest.json``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fastavro.write import Writer

from precog import history
from precog.avro import Codec
from precog.errors import ConfigError
from precog.progress import ProgressLine
from precog.simulate.catalog import simulator_and_spec, simulator_for
from precog.simulate.config import DAY, SimConfig
from precog.simulate.simulator import outcome_record
from precog.spec import PipelineSpec

#: the most events a simulated history holds (two passes at ~100,000 events a second)
MAX_EVENTS = 10_000_000
#: the longest span of a simulated history, in days (shortest: :data:`MIN_DAYS`)
MAX_DAYS = 3650.0
MIN_DAYS = 0.01
#: the latest end time, 9999-12-31T23:59:59.999Z (the earliest: the epoch, 1970-01-01)
MAX_END_MS = 253_402_300_799_999


@dataclass
class HistorySummary:
    """What :func:`write_history` wrote (also ``manifest.json``)."""

    out_dir: str
    spec: str
    simulator: str
    seed: int
    events: int
    positives: int
    positive_rate: float
    outcomes: int
    outcomes_pending: int
    first_event_time: int
    last_event_time: int
    end_ms: int
    seconds: float


def _history_config(config: SimConfig, spec: PipelineSpec, n_events: int, end_ms: int,
                    days: float) -> SimConfig:
    """Config whose ``n_events`` end in the day before ``end_ms``.

    Arrivals follow the UTC-hour diurnal profile, so time is shifted only by whole days:
    one dry run finds where the events end, the second (written) run starts whole days
    later and its last event is at most one day before ``end_ms``. Without the diurnal
    profile (``config.diurnal`` false) the last event lands one second before ``end_ms``.
    """
    mean = days * DAY / max(n_events, 1)
    start = (end_ms - int(days * DAY)) // DAY * DAY
    probe = replace(config, start_ms=start, mean_interarrival_ms=mean, garbage_fraction=0.0,
                    volume_drop_at=None)
    sim = simulator_for(probe, spec)
    time_field = sim.spec.event.time_field
    last = start
    for ev in sim.events(n_events):
        last = ev.record[time_field]
    if not config.diurnal:  # no hour-of-day profile to keep: end right before end_ms
        return replace(probe, start_ms=start + (end_ms - 1000 - last))
    shift = (end_ms - last) // DAY * DAY
    return replace(probe, start_ms=start + shift)


def check_request(n_events: int, end_ms: int, days: float) -> None:
    """Refuse, in one line naming the option, a history too big or out of time's range.

    >>> check_request(10, 1_750_000_000_000, 30.0)
    >>> try:
    ...     check_request(10, 1_750_000_000_000, float("inf"))
    ... except ConfigError as exc:
    ...     print(exc)
    --days inf: a history spans 0.01 to 3650 days
    """
    if not 1 <= n_events <= MAX_EVENTS:
        raise ConfigError(f"--events {n_events}: a history holds 1 to {MAX_EVENTS:,} events")
    if not (math.isfinite(days) and MIN_DAYS <= days <= MAX_DAYS):
        raise ConfigError(f"--days {days}: a history spans {MIN_DAYS:g} to {MAX_DAYS:g} days")
    if not 0 <= end_ms <= MAX_END_MS:
        raise ConfigError(f"--end {end_ms}: give a time from 1970-01-01 to 9999-12-31"
                          f" (epoch ms 0 to {MAX_END_MS})")


def write_history(
    out_dir: Path | str,
    n_events: int,
    seed: int,
    end_ms: int | None = None,
    progress: bool = True,
    *,
    config: SimConfig | None = None,
    days: float | None = None,
    spec: PipelineSpec | None = None,
) -> HistorySummary:
    """Write ``events.avro``, ``outcomes.avro`` and ``manifest.json`` to ``out_dir``.

    The events are those of the simulator ``spec`` names (default: the settings' spec;
    :func:`~precog.simulate.catalog.simulator_and_spec`). They span about ``days`` days
    (default: the spec's ``simulation.history_days``) ending within the day before
    ``end_ms`` (default now). Only outcomes known by ``end_ms`` are written
    (``outcomes_pending`` counts the others). History holds no garbage and no
    volume drops. The files are written all or nothing, replacing a history in ``out_dir``
    (:func:`precog.history.writing_history`); :func:`check_request`'s bounds apply.
    """
    if n_events <= 0:
        raise ConfigError("history needs at least one event")
    started = time.monotonic()
    end = int(time.time() * 1000) if end_ms is None else end_ms
    base = replace(config or SimConfig(), seed=seed)
    cls, spec = simulator_and_spec(base, spec)
    span = days if days is not None else spec.simulation.history_days
    check_request(n_events, end, span)
    out = Path(out_dir)
    history.check_out(out, force=True)
    cfg = _history_config(replace(base, simulator=cls.name), spec, n_events, end, span)
    sim = simulator_for(cfg, spec)
    out_codec = Codec.for_schema(sim.spec.outcome.schema_name)
    time_field = sim.spec.event.time_field
    positives = outcomes = pending = 0
    first = last = 0
    with history.writing_history(out) as part, \
            open(part(history.EVENTS_FILE), "wb") as ef, \
            open(part(history.OUTCOMES_FILE), "wb") as of, \
            ProgressLine(f"history {spec.name}", n_events, enabled=progress) as bar:
        events_w = Writer(ef, sim.codec.schema, codec="deflate")
        outcomes_w = Writer(of, out_codec.schema, codec="deflate")
        for ev in sim.events(n_events):
            t = ev.record[time_field]
            first = t if ev.index == 0 else first
            last = t
            events_w.write(ev.record)
            positives += ev.label or 0
            assert ev.outcome_time is not None
            if ev.outcome_time <= end:
                outcomes_w.write(outcome_record(ev, sim.spec, ev.outcome_time))
                outcomes += 1
            else:
                pending += 1
            bar.update(ev.index + 1)
        events_w.flush()
        outcomes_w.flush()
        summary = HistorySummary(
            out_dir=str(out), spec=spec.name, simulator=cls.name, seed=seed, events=n_events,
            positives=positives, positive_rate=positives / n_events, outcomes=outcomes,
            outcomes_pending=pending,
            first_event_time=first, last_event_time=last, end_ms=end,
            seconds=round(time.monotonic() - started, 3),
        )
        manifest = {**asdict(summary), "config": _jsonable(asdict(cfg))}
        part(history.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def read_history(directory: Path | str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The (events, outcomes) of a history directory (:func:`precog.history.read_history`)."""
    return history.read_history(directory)
