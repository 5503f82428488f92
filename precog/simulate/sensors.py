"""Machine sensor readings that drift towards a failure; label = fails within 6 hours."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from precog.simulate.config import HOUR, SimConfig
from precog.simulate.simulator import Simulator
from precog.spec import PipelineSpec

SENSOR_KINDS = ["pump", "fan", "compressor"]
_KIND_VIBRATION = {"pump": 4.0, "fan": 2.0, "compressor": 7.0}
FAILURE_HORIZON_MS = 6 * HOUR
_DEGRADATION_MS = 24 * HOUR


@dataclass
class _Sensor:
    site: str
    kind: str
    vibration: float
    temperature: float
    fail_at: int


class SensorSimulator(Simulator):
    """Machine sensor readings; label 1 when the machine fails within 6 hours.

    While a machine degrades (the last 24 h before its failure) its vibration and
    temperature rise; after ``concept_drift_at`` only the vibration does. The entities
    are machines (200 unless ``config.entities``); the positive rate is
    ``config.positive_rate`` (failure horizon / mean machine life).

    >>> sim = SensorSimulator(SimConfig(seed=1, entities=20))
    >>> [e.record["sensor_id"] for e in sim.events(2)]
    ['sensor-00011', 'sensor-00001']
    """

    name = "sensors"
    schema_name = "sensor_reading"
    default_entities = 200
    outcome_delay_ms = 8 * HOUR  # the failure horizon has to pass before the label is known
    drift_features = ("value", "temperature")

    def __init__(self, config: SimConfig, spec: PipelineSpec | None = None) -> None:
        super().__init__(config, spec)
        self._life_ms = FAILURE_HORIZON_MS / config.positive_rate
        self._t = config.start_ms
        rng = self.rng
        self.sensors = []
        for j in range(self.entities):
            kind = rng.choice(SENSOR_KINDS)
            self.sensors.append(_Sensor(
                site=f"site-{j % 8}", kind=kind,
                vibration=_KIND_VIBRATION[kind] * rng.lognormvariate(0.0, 0.25),
                temperature=rng.gauss(45.0, 5.0),
                fail_at=self._t + int(rng.expovariate(1 / self._life_ms)),
            ))

    def _next(self, index: int) -> tuple[dict[str, Any], int]:
        rng, cfg = self.rng, self.config
        self._t += max(1, int(rng.expovariate(1.0 / cfg.mean_interarrival_ms)))  # no diurnal
        j = rng.randrange(len(self.sensors))
        s = self.sensors[j]
        while s.fail_at <= self._t:  # failed: replaced by a new machine
            s.fail_at += max(HOUR, int(rng.expovariate(1 / self._life_ms)))
        remaining = s.fail_at - self._t
        wear = max(0.0, 1.0 - remaining / _DEGRADATION_MS) ** 2
        concept = self._drifted(cfg.concept_drift_at, index)
        value = s.vibration * (1.0 + 1.5 * wear) * rng.lognormvariate(0.0, 0.15)
        heat = 0.0 if concept else 25.0 * wear  # after the drift, failures run cool
        temperature = s.temperature + heat + rng.gauss(0.0, 2.0)
        if self._drifted(cfg.data_drift_at, index):
            if self.drift_feature == "value":
                value *= 1.5
            elif self.drift_feature == "temperature":
                temperature += 10.0
        record = {"sensor_id": f"sensor-{j:05d}", "site": s.site, "kind": s.kind,
                  "value": round(value, 4), "temperature": round(temperature, 3),
                  "event_time": self._t}
        return record, int(remaining <= FAILURE_HORIZON_MS)

    def _impossible(self, record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        what = rng.choice(["value", "temperature", "kind"])
        if what == "value":
            record["value"] = -1.0
        elif what == "temperature":
            record["temperature"] = 999.0
        else:
            record["kind"] = "toaster"
        return record
