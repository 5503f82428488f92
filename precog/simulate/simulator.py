"""The machinery every simulator shares: arrivals, ids, outcome delays, garbage, drops, drift."""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from precog.avro import Codec, SchemaVersion
from precog.errors import ConfigError
from precog.simulate.config import DAY, HOUR, SimConfig, SimEvent, event_id
from precog.spec import SPEC_DIR, PipelineSpec, load_spec

# relative arrival intensity per UTC hour, quiet nights (mean 1 after scaling)
_DIURNAL_RAW = [0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.5, 0.9, 1.2, 1.3, 1.4, 1.5,
                1.6, 1.5, 1.4, 1.4, 1.5, 1.6, 1.7, 1.6, 1.4, 1.1, 0.7, 0.35]
DIURNAL = [x * 24 / sum(_DIURNAL_RAW) for x in _DIURNAL_RAW]


def weighted(rng: random.Random, cum: list[float]) -> int:
    """An index drawn with the weights whose running sums are ``cum``."""
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def cumulative(weights: list[float]) -> list[float]:
    """Running sums of ``weights`` (what :func:`weighted` draws from).

    >>> cumulative([1.0, 2.0, 0.5])
    [1.0, 3.0, 3.5]
    """
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


class Simulator:
    """Shared machinery: arrivals, ids, outcome delays, garbage, volume drops, drift.

    A subclass is one domain: its ``name`` (what a spec's ``simulation.simulator`` says),
    the event ``schema_name`` it writes, how many entities its world holds by default,
    and ``_next`` / ``_impossible``. ``spec`` is the spec it simulates for (its field names
    and ``simulation`` words); None: the packaged spec of the same name.
    """

    name = ""
    schema_name = ""
    default_entities = 1
    outcome_delay_ms = 3 * DAY  # median delay of outcomes unless the config says otherwise
    drift_features: tuple[str, ...] = ()  # inputs data drift can shift

    def __init__(self, config: SimConfig, spec: PipelineSpec | None = None) -> None:
        self.spec = spec or self.packaged_spec()
        self.check_fits(self.spec)
        drift = (config.data_drift_feature or self.spec.simulation.data_drift_feature
                 or self.drift_features[0])
        if config.data_drift_at is not None and drift not in self.drift_features:
            raise ConfigError(
                f"data drift of {drift!r} is not simulated for"
                f" {self.name}; choose one of {', '.join(self.drift_features)}"
            )
        self.config = config
        #: how many entities (cards, machines, ...) the world holds
        self.entities = config.entities or self.default_entities
        #: the input data drift shifts (after ``config.data_drift_at``)
        self.drift_feature = drift
        self.rng = random.Random(f"{config.seed}:{self.name}:world")
        self._garbage_rng = random.Random(f"{config.seed}:garbage")
        self._drop_rng = random.Random(f"{config.seed}:drop")
        self.codec = Codec.for_schema(self.schema_name)
        self._legacy = _legacy_codec(self.spec)

    @classmethod
    def packaged_spec(cls) -> PipelineSpec:
        """The packaged spec of this domain (``pipelines/specs/<name>.yaml``)."""
        return load_spec(SPEC_DIR / f"{cls.name}.yaml")

    @classmethod
    def check_fits(cls, spec: PipelineSpec) -> None:
        """Refuse a spec whose events are not this simulator's records."""
        if cls.schema_name != spec.event.schema_name:
            raise ConfigError(f"spec {spec.name}: simulator {cls.name} writes {cls.schema_name}"
                              f" events, not {spec.event.schema_name}")

    # -- per domain ------------------------------------------------------------------
    def _next(self, index: int) -> tuple[dict[str, Any], int]:
        """The next valid record (without event_id) and its label."""
        raise NotImplementedError

    def _impossible(self, record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """The record with a value the spec's checks reject."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------
    def events(self, n: int) -> Iterator[SimEvent]:
        """The next ``n`` events (valid, garbage or dropped), in event-time order."""
        cfg = self.config
        for i in range(n):
            body, label = self._next(i)
            record = {self.spec.event.id_field: event_id(cfg.seed, cfg.start_ms, i), **body}
            median = cfg.outcome_delay_median_ms or self.outcome_delay_ms
            delay = self.rng.lognormvariate(math.log(median), cfg.outcome_delay_sigma)
            ev = SimEvent(i, record, label, record[self.spec.event.time_field] + int(delay))
            if self._dropped(i):
                ev.dropped, ev.outcome_time = True, None
            elif cfg.garbage_fraction and self._garbage_rng.random() < cfg.garbage_fraction:
                self._make_garbage(ev)
            yield ev

    def _dropped(self, i: int) -> bool:
        cfg = self.config
        if cfg.volume_drop_at is None or not (
            cfg.volume_drop_at <= i < cfg.volume_drop_at + cfg.volume_drop_len
        ):
            return False
        return self._drop_rng.random() < cfg.volume_drop

    def _make_garbage(self, ev: SimEvent) -> None:
        rng = self._garbage_rng
        kind = rng.choice(self.config.garbage_kinds)
        if kind == "malformed":
            if rng.random() < 0.5:
                ev.garbage = bytes(rng.randrange(256) for _ in range(rng.randint(3, 60)))
                if ev.garbage[:2] == b"\xc3\x01":
                    ev.garbage = b"\x00" + ev.garbage
            else:  # a valid header with a cut-off body
                full = self.codec.encode(ev.record)
                ev.garbage = full[: rng.randint(10, len(full) // 2)]
        elif kind == "wrong_schema":
            ev.garbage = self._legacy.encode({
                "event_id": ev.record[self.spec.event.id_field],
                "entity": str(ev.record[self.spec.event.entity_field]),
                "payload": json.dumps(ev.record, sort_keys=True),
                "ts": str(ev.record[self.spec.event.time_field]),
            })
        else:
            ev.record = self._impossible(dict(ev.record), rng)
            ev.garbage = self.codec.encode(ev.record)
        ev.garbage_kind, ev.label, ev.outcome_time = kind, None, None

    def _gap(self, t: int) -> int:
        """Milliseconds to the next arrival (diurnal intensity in history)."""
        gap = self.rng.expovariate(1.0 / self.config.mean_interarrival_ms)
        if self.config.diurnal:
            gap /= DIURNAL[(t // HOUR) % 24]
        return max(1, int(gap))

    def _drifted(self, at: int | None, index: int) -> bool:
        return at is not None and index >= at


def _legacy_codec(spec: PipelineSpec) -> Codec:
    """A codec for a made-up older, incompatible schema: the "wrong schema" garbage."""
    raw = {
        "type": "record", "name": f"Legacy{spec.name.title()}", "namespace": "precog.legacy",
        "fields": [{"name": "event_id", "type": "string"}, {"name": "entity", "type": "string"},
                   {"name": "payload", "type": "string"}, {"name": "ts", "type": "string"}],
    }
    return Codec([SchemaVersion(f"legacy_{spec.name}", 0, Path("<inline>"), raw)])


def outcome_record(ev: SimEvent, spec: PipelineSpec, outcome_time: int) -> dict[str, Any]:
    """The outcome record of a valid event; ``source`` is the spec's outcome source."""
    return {"event_id": ev.record[spec.event.id_field], "label": int(ev.label or 0),
            "event_time": ev.record[spec.event.time_field], "outcome_time": outcome_time,
            "source": spec.simulation.outcome_source}
