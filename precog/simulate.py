"""Event simulator: seeded card transactions (and sensor readings) as history files or live Kafka.

Everything is deterministic given :class:`SimConfig` (seed, start time, rates, drift
schedule). Two simulators, chosen by ``SimConfig.spec_name`` (from a spec:
:func:`simulator_name`, its ``simulation.simulator``); what a domain calls its outcomes,
its default history span and drifting input come from its spec's ``simulation``:

* ``transactions`` (:class:`TransactionSimulator`): cards with their own spending
  profiles (typical amount, home country, category mix, online propensity, activity),
  merchants with a category and a country, a diurnal arrival rate in history, and fraud
  in bursts on compromised cards: online/foreign, new merchants, amounts far above the
  card's profile, uniform over the day (so relatively more at night). After
  ``concept_drift_at`` the fraud looks like card-present skimming instead: domestic,
  point of sale, the card's usual categories and near-usual amounts; only the burst and
  the new merchants remain.
* ``sensors`` (:class:`SensorSimulator`): machines whose vibration and temperature rise
  while they degrade towards a failure; label = the machine fails within 6 hours.

Every valid event gets an outcome (label, outcome time = event time + a lognormal delay;
a few arrive after the spec's label window). Garbage (``garbage_fraction``) replaces an
event by malformed bytes, a record written with another Avro schema, or a record with
impossible values; garbage and volume drops draw from their own random streams, so the
valid events of a seed are the same with or without them.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fastavro.write import Writer

from precog import history
from precog.avro import Codec, SchemaVersion
from precog.errors import ConfigError, ServiceUnavailable
from precog.progress import ProgressLine
from precog.settings import Settings
from precog.spec import SPEC_DIR, PipelineSpec, load_spec, parse_duration

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
GARBAGE_KINDS = ("malformed", "wrong_schema", "impossible")
#: Default start of simulated time when none is given: 2024-01-01T00:00:00Z.
DEFAULT_START_MS = 1_704_067_200_000

# relative arrival intensity of legitimate transactions per UTC hour (mean 1 after scaling)
_DIURNAL_RAW = [0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.5, 0.9, 1.2, 1.3, 1.4, 1.5,
                1.6, 1.5, 1.4, 1.4, 1.5, 1.6, 1.7, 1.6, 1.4, 1.1, 0.7, 0.35]
DIURNAL = [x * 24 / sum(_DIURNAL_RAW) for x in _DIURNAL_RAW]


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Times are epoch milliseconds; indices count yielded events."""

    seed: int = 7
    #: the simulator: the packaged spec it simulates (a spec's ``simulation.simulator``)
    spec_name: str = "transactions"
    n_cards: int = 2000
    n_merchants: int = 500
    n_sensors: int = 200
    fraud_rate: float = 0.02
    start_ms: int = DEFAULT_START_MS
    mean_interarrival_ms: float = 30_000.0
    diurnal: bool = True
    garbage_fraction: float = 0.0
    garbage_kinds: tuple[str, ...] = GARBAGE_KINDS
    concept_drift_at: int | None = None
    data_drift_at: int | None = None
    #: None: the simulator's spec's ``simulation.data_drift_feature``
    data_drift_feature: str | None = None
    volume_drop_at: int | None = None
    volume_drop_len: int = 0
    volume_drop: float = 0.3
    outcome_delay_median_ms: float | None = None  # None: the domain's (3 d / 8 h)
    outcome_delay_sigma: float = 0.5
    #: >1 compresses a fraud burst's timing (15 min to start, ~5 min apart) by this factor,
    #: for worlds that run faster than real time (the demo's)
    burst_time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.garbage_fraction < 1:
            raise ConfigError("garbage fraction must be in [0, 1)")
        if not 0 < self.fraud_rate < 0.5:
            raise ConfigError("fraud rate must be in (0, 0.5)")
        if not 0 <= self.volume_drop <= 1:
            raise ConfigError("volume drop must be a fraction in [0, 1]")
        if self.mean_interarrival_ms <= 0:
            raise ConfigError("mean interarrival must be > 0")
        if self.burst_time_scale <= 0:
            raise ConfigError("burst time scale must be > 0")
        unknown = set(self.garbage_kinds) - set(GARBAGE_KINDS)
        if unknown or not self.garbage_kinds:
            raise ConfigError(f"garbage kinds must be among {', '.join(GARBAGE_KINDS)}")


@dataclass
class SimEvent:
    """One simulated event: a valid record, garbage replacing it, or a dropped one."""

    index: int
    record: dict[str, Any]
    label: int | None
    outcome_time: int | None
    garbage: bytes | None = None
    garbage_kind: str | None = None
    dropped: bool = False

    @property
    def valid(self) -> bool:
        return self.garbage is None and not self.dropped


@dataclass
class HistorySummary:
    """What :func:`write_history` wrote (also ``manifest.json``)."""

    out_dir: str
    spec: str
    seed: int
    events: int
    positives: int
    fraud_rate: float
    outcomes: int
    outcomes_pending: int
    first_event_time: int
    last_event_time: int
    end_ms: int
    seconds: float


@dataclass
class LiveSummary:
    """What :func:`produce_live` sent."""

    topic: str
    sent: int
    valid: int
    garbage: dict[str, int]
    dropped: int
    outcomes_sent: int
    outcomes_pending: int
    manifests_sent: int
    manifest_records: int
    seconds: float
    delivery_errors: list[str] = field(default_factory=list)


def event_id(seed: int, start_ms: int, index: int) -> str:
    """Deterministic, run-unique event id (a UUID from a hash of seed, start and index).

    >>> event_id(7, 0, 1) == event_id(7, 0, 1) != event_id(7, 0, 2)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{start_ms}:{index}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def _weighted(rng: random.Random, cum: list[float]) -> int:
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


class _Simulator:
    """Shared machinery: arrivals, ids, outcome delays, garbage, volume drops, drift."""

    spec_name = ""
    schema_name = ""
    outcome_delay_ms = 3 * DAY  # median delay of outcomes unless the config says otherwise
    drift_features: tuple[str, ...] = ()  # inputs data drift can shift

    def __init__(self, config: SimConfig) -> None:
        self.spec = load_spec(SPEC_DIR / f"{self.spec_name}.yaml")
        drift = (config.data_drift_feature or self.spec.simulation.data_drift_feature
                 or self.drift_features[0])
        if config.data_drift_at is not None and drift not in self.drift_features:
            raise ConfigError(
                f"data drift of {drift!r} is not simulated for"
                f" {self.spec_name}; choose one of {', '.join(self.drift_features)}"
            )
        self.config = config
        #: the input data drift shifts (after ``config.data_drift_at``)
        self.drift_feature = drift
        self.rng = random.Random(f"{config.seed}:{self.spec_name}:world")
        self._garbage_rng = random.Random(f"{config.seed}:garbage")
        self._drop_rng = random.Random(f"{config.seed}:drop")
        self.codec = Codec.for_schema(self.schema_name)
        self._legacy = _legacy_codec(self.spec)

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


# -- card transactions -----------------------------------------------------------------

CATEGORIES = ["grocery", "fuel", "restaurant", "travel", "electronics", "fashion",
              "entertainment", "cash", "digital", "health"]
_CATEGORY_POPULARITY = [0.26, 0.12, 0.14, 0.03, 0.04, 0.08, 0.06, 0.06, 0.12, 0.09]
_CATEGORY_FACTOR = {"grocery": 1.0, "fuel": 1.3, "restaurant": 0.9, "travel": 5.0,
                    "electronics": 3.5, "fashion": 1.8, "entertainment": 0.8, "cash": 2.0,
                    "digital": 0.35, "health": 1.0}
HOME_COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "GB", "PL", "SE", "US"]
_HOME_WEIGHTS = [0.30, 0.15, 0.10, 0.10, 0.10, 0.08, 0.07, 0.05, 0.05]
FRAUD_COUNTRIES = ["US", "BR", "NG", "RO", "CN", "TR", "MX", "UA"]
_FRAUD_ONLINE = ["electronics", "digital", "travel", "fashion"]
_FRAUD_ONLINE_W = [0.4, 0.3, 0.15, 0.15]


@dataclass
class _Card:
    typical: float
    home: str
    online_p: float
    categories: list[float]  # cumulative weights over CATEGORIES
    favourites: list[int]


class TransactionSimulator(_Simulator):
    """Card transactions with learnable fraud bursts (see the module docstring).

    >>> sim = TransactionSimulator(SimConfig(seed=1, n_cards=50, n_merchants=40))
    >>> [e.record["card_id"] for e in sim.events(3)]
    ['card-000009', 'card-000041', 'card-000004']
    """

    spec_name = "transactions"
    schema_name = "transaction"
    drift_features = ("amount", "country", "channel")
    _BURST_MAX = 6  # a compromised card sees 1..6 fraudulent transactions

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        rng = self.rng
        self.merchants = self._make_merchants(rng)
        self.cards = [self._make_card(rng) for _ in range(config.n_cards)]
        self._activity = _cumulative([rng.gammavariate(2.0, 1.0) for _ in self.cards])
        burst_mean = (1 + self._BURST_MAX) / 2
        self._episode_p = config.fraud_rate / ((1 - config.fraud_rate) * burst_mean)
        self._t = config.start_ms
        self._next_legit = config.start_ms + self._gap(config.start_ms)
        self._fraud: list[tuple[int, int, int, int]] = []  # (time, seq, card, n-th in burst)
        self._seq = 0

    def _make_merchants(self, rng: random.Random) -> list[tuple[str, str, str]]:
        merchants = []
        cum_home, cum_cat = _cumulative(_HOME_WEIGHTS), _cumulative(_CATEGORY_POPULARITY)
        for j in range(self.config.n_merchants):
            if rng.random() < 0.85:
                country = HOME_COUNTRIES[_weighted(rng, cum_home)]
            else:
                country = rng.choice(FRAUD_COUNTRIES)
            merchants.append((f"m-{j:05d}", CATEGORIES[_weighted(rng, cum_cat)], country))
        self._by_country_cat: dict[tuple[str, str], list[int]] = {}
        self._by_country: dict[str, list[int]] = {}
        self._by_cat: dict[str, list[int]] = {}
        for j, (_, cat, country) in enumerate(merchants):
            self._by_country_cat.setdefault((country, cat), []).append(j)
            self._by_country.setdefault(country, []).append(j)
            self._by_cat.setdefault(cat, []).append(j)
        return merchants

    def _make_card(self, rng: random.Random) -> _Card:
        home = HOME_COUNTRIES[_weighted(rng, _cumulative(_HOME_WEIGHTS))]
        cats = [rng.gammavariate(p * 4.0, 1.0) + 1e-9 for p in _CATEGORY_POPULARITY]
        local = self._by_country.get(home) or list(range(len(self.merchants)))
        return _Card(
            typical=rng.lognormvariate(math.log(35.0), 0.6),
            home=home,
            online_p=rng.betavariate(2.0, 6.0),
            categories=_cumulative(cats),
            favourites=[rng.choice(local) for _ in range(8)],
        )

    def _merchant(self, country: str, category: str) -> int:
        pool = (self._by_country_cat.get((country, category)) or self._by_cat.get(category)
                or self._by_country.get(country) or [0])
        return self.rng.choice(pool)

    def _next(self, index: int) -> tuple[dict[str, Any], int]:
        if self._fraud and self._fraud[0][0] <= self._next_legit:
            t, _, c, nth = heapq.heappop(self._fraud)
            self._t = max(self._t, t)
            return self._fraud_tx(index, c, nth), 1
        self._t = t = self._next_legit
        self._next_legit = t + self._gap(t)
        c = _weighted(self.rng, self._activity)
        self._maybe_compromise(t)
        return self._legit_tx(index, c), 0

    def _maybe_compromise(self, t: int) -> None:
        p = self._episode_p
        if self.config.diurnal:  # episodes uniform over the day, legit traffic is not
            p /= DIURNAL[(t // HOUR) % 24]
        if self.rng.random() >= p:
            return
        victim = _weighted(self.rng, self._activity)
        scale = self.config.burst_time_scale
        when = t + int(self.rng.expovariate(scale / (15 * MINUTE)))
        for nth in range(self.rng.randint(1, self._BURST_MAX)):
            self._seq += 1
            heapq.heappush(self._fraud, (when, self._seq, victim, nth))
            when += 1 + int(self.rng.expovariate(scale / (5 * MINUTE)))

    def _tx(self, c: int, m: int, channel: str, amount: float, category: str) -> dict[str, Any]:
        mid, _, country = self.merchants[m]
        return {"card_id": f"card-{c:06d}", "customer_id": f"cust-{c:06d}",
                "merchant_id": mid, "category": category, "amount": amount, "currency": "EUR",
                "country": country, "channel": channel, "event_time": self._t}

    def _amount(self, index: int, base: float, category: str, atm: bool) -> float:
        amount = base * _CATEGORY_FACTOR[category]
        if self._drifted(self.config.data_drift_at, index) and self.drift_feature \
                == "amount":
            amount *= 2.5
        if atm:
            return float(min(1000, max(20, round(amount / 20) * 20)))
        return round(min(49_000.0, max(0.5, amount)), 2)

    def _legit_tx(self, index: int, c: int) -> dict[str, Any]:
        rng, card, cfg = self.rng, self.cards[c], self.config
        drift = self._drifted(cfg.data_drift_at, index)
        travel_p = 0.35 if drift and self.drift_feature == "country" else 0.03
        online_p = min(0.95, card.online_p + (0.45 if drift and self.drift_feature
                                                == "channel" else 0.0))
        if rng.random() < 0.65:
            m = rng.choice(card.favourites)
            category = self.merchants[m][1]
        else:
            category = CATEGORIES[_weighted(rng, card.categories)]
            m = self._merchant(card.home, category)
        if rng.random() < travel_p:
            away = rng.choice([x for x in HOME_COUNTRIES if x != card.home])
            m = self._merchant(away, category)
        if category == "cash":
            channel = "atm"
        elif category == "digital" or rng.random() < online_p:
            channel = "online"
        else:
            channel = "pos"
        base = card.typical * rng.lognormvariate(0.0, 0.5)
        return self._tx(c, m, channel, self._amount(index, base, category, channel == "atm"),
                        category)

    def _fraud_tx(self, index: int, c: int, nth: int) -> dict[str, Any]:
        rng, card = self.rng, self.cards[c]
        if self._drifted(self.config.concept_drift_at, index):  # skimming: card present
            category = CATEGORIES[_weighted(rng, card.categories)]
            if category == "cash":
                category = "grocery"
            m = self._merchant(card.home, category)
            base = card.typical * rng.lognormvariate(math.log(1.3), 0.4)
            return self._tx(c, m, "pos", self._amount(index, base, category, False), category)
        u = rng.random()
        channel = "online" if u < 0.7 else ("atm" if u < 0.8 else "pos")
        if channel == "atm":
            category = "cash"
        elif channel == "online":
            category = _FRAUD_ONLINE[_weighted(rng, _cumulative(_FRAUD_ONLINE_W))]
        else:
            category = rng.choice(["electronics", "fashion"])
        country = rng.choice(FRAUD_COUNTRIES) if rng.random() < 0.7 else card.home
        m = self._merchant(country, category)
        if nth == 0 and rng.random() < 0.3:  # a small test charge first
            return self._tx(c, m, channel, round(rng.uniform(1.0, 5.0), 2), category)
        base = card.typical * rng.lognormvariate(math.log(3.5), 0.5)
        return self._tx(c, m, channel, self._amount(index, base, category, channel == "atm"),
                        category)

    def _impossible(self, record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        what = rng.choice(["negative_amount", "huge_amount", "channel", "country", "category"])
        if what == "negative_amount":
            record["amount"] = -abs(record["amount"])
        elif what == "huge_amount":
            record["amount"] = 1e7
        elif what == "channel":
            record["channel"] = rng.choice(["fax", "telex", "POS"])
        elif what == "country":
            record["country"] = rng.choice(["XXX", "de", "1A", ""])
        else:
            record["category"] = rng.choice(["weapons", "unknown", ""])
        return record


# -- sensors ---------------------------------------------------------------------------

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


class SensorSimulator(_Simulator):
    """Machine sensor readings; label 1 when the machine fails within 6 hours.

    While a machine degrades (the last 24 h before its failure) its vibration and
    temperature rise; after ``concept_drift_at`` only the vibration does. The
    positive rate is ``fraud_rate`` (failure horizon / mean machine life).

    >>> sim = SensorSimulator(SimConfig(seed=1, spec_name="sensors", n_sensors=20))
    >>> [e.record["sensor_id"] for e in sim.events(2)]
    ['sensor-00011', 'sensor-00001']
    """

    spec_name = "sensors"
    schema_name = "sensor_reading"
    outcome_delay_ms = 8 * HOUR  # the failure horizon has to pass before the label is known
    drift_features = ("value", "temperature")

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self._life_ms = FAILURE_HORIZON_MS / config.fraud_rate
        self._t = config.start_ms
        rng = self.rng
        self.sensors = []
        for j in range(config.n_sensors):
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


_SIMULATORS: dict[str, type[_Simulator]] = {
    "transactions": TransactionSimulator,
    "sensors": SensorSimulator,
}


def _simulator_class(name: str) -> type[_Simulator]:
    cls = _SIMULATORS.get(name)
    if cls is None:
        raise ConfigError(f"no simulator for spec {name!r}; known: {', '.join(_SIMULATORS)}")
    return cls


def simulator_for(config: SimConfig) -> _Simulator:
    """The simulator of ``config.spec_name`` (``transactions`` or ``sensors``)."""
    return _simulator_class(config.spec_name)(config)


def simulator_name(spec: PipelineSpec) -> str:
    """The simulator a spec names (``simulation.simulator``): its events fit the spec's schema.

    >>> simulator_name(load_spec(SPEC_DIR / "sensors.yaml"))
    'sensors'
    """
    name = spec.simulation.simulator
    if name is None:
        raise ConfigError(f"spec {spec.name} names no simulator (simulation.simulator); known:"
                          f" {', '.join(_SIMULATORS)}")
    cls = _simulator_class(name)
    if cls.schema_name != spec.event.schema_name:
        raise ConfigError(f"spec {spec.name}: simulator {name} writes {cls.schema_name} events,"
                          f" not {spec.event.schema_name}")
    return name


# -- history ---------------------------------------------------------------------------

def _history_config(config: SimConfig, n_events: int, end_ms: int, days: float) -> SimConfig:
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
    sim = simulator_for(probe)
    time_field = sim.spec.event.time_field
    last = start
    for ev in sim.events(n_events):
        last = ev.record[time_field]
    if not config.diurnal:  # no hour-of-day profile to keep: end right before end_ms
        return replace(probe, start_ms=start + (end_ms - 1000 - last))
    shift = (end_ms - last) // DAY * DAY
    return replace(probe, start_ms=start + shift)


def write_history(
    out_dir: Path | str,
    n_events: int,
    seed: int,
    end_ms: int | None = None,
    progress: bool = True,
    *,
    config: SimConfig | None = None,
    days: float | None = None,
) -> HistorySummary:
    """Write ``events.avro``, ``outcomes.avro`` and ``manifest.json`` to ``out_dir``.

    Events span about ``days`` days (default: the spec's ``simulation.history_days``) ending
    within the day before ``end_ms`` (default now). Only outcomes known by ``end_ms`` are
    written (``outcomes_pending`` counts the others). History holds no garbage and no
    volume drops.
    """
    if n_events <= 0:
        raise ConfigError("history needs at least one event")
    started = time.monotonic()
    end = int(time.time() * 1000) if end_ms is None else end_ms
    base = replace(config or SimConfig(), seed=seed)
    packaged = load_spec(SPEC_DIR / f"{_simulator_class(base.spec_name).spec_name}.yaml")
    span = days if days is not None else packaged.simulation.history_days
    cfg = _history_config(base, n_events, end, span)
    sim = simulator_for(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    out_codec = Codec.for_schema(sim.spec.outcome.schema_name)
    time_field = sim.spec.event.time_field
    positives = outcomes = pending = 0
    first = last = 0
    with open(out / history.EVENTS_FILE, "wb") as ef, \
            open(out / history.OUTCOMES_FILE, "wb") as of, \
            ProgressLine(f"history {cfg.spec_name}", n_events, enabled=progress) as bar:
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
                outcomes_w.write(_outcome(ev, sim.spec, ev.outcome_time))
                outcomes += 1
            else:
                pending += 1
            bar.update(ev.index + 1)
        events_w.flush()
        outcomes_w.flush()
    summary = HistorySummary(
        out_dir=str(out), spec=cfg.spec_name, seed=seed, events=n_events, positives=positives,
        fraud_rate=positives / n_events, outcomes=outcomes, outcomes_pending=pending,
        first_event_time=first, last_event_time=last, end_ms=end,
        seconds=round(time.monotonic() - started, 3),
    )
    manifest = {**asdict(summary), "config": _jsonable(asdict(cfg))}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _outcome(ev: SimEvent, spec: PipelineSpec, outcome_time: int) -> dict[str, Any]:
    """The outcome record of a valid event; ``source`` is the spec's outcome source."""
    return {"event_id": ev.record[spec.event.id_field], "label": int(ev.label or 0),
            "event_time": ev.record[spec.event.time_field], "outcome_time": outcome_time,
            "source": spec.simulation.outcome_source}


def read_history(directory: Path | str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The (events, outcomes) of a history directory (:func:`precog.history.read_history`)."""
    return history.read_history(directory)


# -- live ------------------------------------------------------------------------------


@dataclass
class _Window:
    records: int = 0
    valid: int = 0


class _Live:
    """The bookkeeping of one live run: windows for manifests, pending outcomes, counts."""

    def __init__(self, settings: Settings, spec: PipelineSpec, sim: _Simulator,
                 producer: Any, scale: float) -> None:
        self.settings, self.spec, self.sim, self.producer = settings, spec, sim, producer
        self.scale = scale
        self.topic = settings.topic(spec.event.topic)
        self.window_ms = parse_duration(spec.volume.window)
        self.windows: dict[int, _Window] = {}
        self.outcomes: list[tuple[int, int, bytes, bytes]] = []
        self.errors: list[str] = []
        self.producer_id = f"simulate-{sim.config.seed}-{sim.config.start_ms}"
        self.codec_out = Codec.for_schema(spec.outcome.schema_name)
        self.codec_manifest = Codec.for_schema("manifest")
        self.sent = self.valid = self.dropped = 0
        self.outcomes_sent = self.manifests_sent = self.manifest_records = 0
        self.garbage: dict[str, int] = {}

    def note(self) -> str:
        """What the progress line says after the count."""
        return f"garbage {sum(self.garbage.values())} outcomes {self.outcomes_sent}"

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")

    def _produce(self, topic: str, key: bytes, value: bytes, timestamp: int) -> None:
        """Produce with the record timestamp = the simulated (event) time it belongs to."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, timestamp=timestamp,
                                      on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self.producer.poll(0.1)
        self.producer.poll(0)

    def event(self, ev: SimEvent) -> None:
        ev_spec = self.spec.event
        t = int(ev.record[ev_spec.time_field])
        self.close_windows(before=t - t % self.window_ms)
        w = self.windows.setdefault(t - t % self.window_ms, _Window())
        w.records += 1
        w.valid += ev.garbage is None  # a dropped event would have been valid
        if ev.dropped:
            self.dropped += 1
            return
        key = str(ev.record.get(ev_spec.entity_field, "")).encode()
        if ev.garbage is not None:
            self._produce(self.topic, key, ev.garbage, t)
            kind = ev.garbage_kind or "unknown"
            self.garbage[kind] = self.garbage.get(kind, 0) + 1
        else:
            self._produce(self.topic, key, self.sim.codec.encode(ev.record), t)
            self.valid += 1
            assert ev.outcome_time is not None and ev.label is not None
            due = t + round((ev.outcome_time - t) * self.scale)
            rec = _outcome(ev, self.spec, due)
            heapq.heappush(self.outcomes, (due, ev.index, str(rec["event_id"]).encode(),
                                           self.codec_out.encode(rec)))
        self.sent += 1

    def send_due_outcomes(self, now_ms: int) -> None:
        topic = self.settings.topic(self.spec.outcome.topic)
        while self.outcomes and self.outcomes[0][0] <= now_ms:
            due, _, key, value = heapq.heappop(self.outcomes)
            self._produce(topic, key, value, due)
            self.outcomes_sent += 1

    def close_windows(self, before: int | None = None) -> None:
        topic = self.settings.topic("manifests")
        for start in sorted(self.windows):
            if before is not None and start >= before:
                break
            w = self.windows.pop(start)
            rec = {"producer_id": self.producer_id, "source": self.spec.name,
                   "window_start": start, "window_end": start + self.window_ms,
                   "record_count": w.records, "valid_count": w.valid,
                   "sent_time": int(time.time() * 1000)}
            self._produce(topic, self.spec.name.encode(), self.codec_manifest.encode(rec),
                          start + self.window_ms)
            self.manifests_sent += 1
            self.manifest_records += w.records


def produce_live(
    settings: Settings,
    spec: PipelineSpec,
    n_events: int,
    rate: float,
    config: SimConfig | None = None,
    progress: bool = True,
    *,
    outcome_delay_scale: float = 1 / 8640,
    outcome_wait_s: float | None = None,
    clock: Callable[[], float] = time.time,
    time_scale: float = 1.0,
    start_ms: int | None = None,
) -> LiveSummary:
    """Produce ``n_events`` at ``rate``/s to ``{ns}.<spec.event.topic>`` with event time ≈ now.

    Outcomes go to ``{ns}.<spec.outcome.topic>`` (key = event id) once their delay times
    ``outcome_delay_scale`` has elapsed (the default 1/8640 turns one day into 10 s), and
    their ``outcome_time`` is that scaled time. Control totals go to ``{ns}.manifests``
    per event-time window of ``spec.volume.window``: ``record_count`` counts every record
    the producer *meant* to send in the window, garbage included and events removed by a
    volume drop included (that is how the volume monitor sees the gap), ``valid_count``
    the valid ones among them. After the last event it waits for pending outcomes, at
    most ``outcome_wait_s`` seconds (None: all of them).

    ``time_scale`` > 1 runs the simulated world faster than the wall clock: ``rate`` events
    per wall second still, but event time advances ``time_scale`` times faster and ends at
    about now (every event time lies in the past, so the skew check holds). Cards then keep
    their realistic activity (events hours apart in event time), the diurnal profile and
    fraud bursts are kept, and outcomes arrive after their simulated delay times
    ``outcome_delay_scale`` in event time (pass 1.0 for realistic delays), i.e. divided by
    ``time_scale`` on the wall clock. ``start_ms`` (accelerated runs only) starts the event
    time there instead, e.g. right after a history; it must leave the run in the past.
    """
    from confluent_kafka import KafkaException  # I/O edge: only here

    from precog.io import kafka

    if n_events <= 0 or rate <= 0 or time_scale <= 0:
        raise ConfigError("live needs events > 0, rate > 0 and time scale > 0")
    wall_start = int(clock() * 1000)
    interarrival = 1000.0 / rate * time_scale
    if start_ms is None or time_scale <= 1:
        start_ms = wall_start - int(n_events * interarrival) if time_scale > 1 else wall_start
    elif start_ms + n_events * interarrival > wall_start:
        raise ConfigError("start_ms leaves the accelerated run's event times in the future")
    base = config or SimConfig()
    cfg = replace(base, spec_name=simulator_name(spec), start_ms=start_ms,
                  mean_interarrival_ms=interarrival, diurnal=base.diurnal and time_scale > 1)

    def event_now() -> int:  # the simulated clock
        return start_ms + int((clock() * 1000 - wall_start) * time_scale)

    sim = simulator_for(cfg)
    producer = kafka.producer(settings, **{"linger.ms": "10", "enable.idempotence": "true",
                                           "client.id": "precog-simulate"})
    try:
        producer.list_topics(timeout=10)
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from exc
    live = _Live(settings, spec, sim, producer, outcome_delay_scale)
    started = time.monotonic()
    with ProgressLine(f"live {spec.name} -> {live.topic}", n_events, enabled=progress) as bar:
        for ev in sim.events(n_events):
            due = int(ev.record[spec.event.time_field])
            while (now := event_now()) < due:
                live.send_due_outcomes(now)
                time.sleep(min(0.05, (due - now) / 1000 / time_scale))
            live.send_due_outcomes(now)
            live.event(ev)
            bar.update(ev.index + 1, note=live.note())
        live.close_windows()
        deadline = None if outcome_wait_s is None else clock() + outcome_wait_s
        while live.outcomes and (deadline is None or clock() < deadline):
            live.send_due_outcomes(event_now())
            producer.poll(0.05)
            bar.update(n_events, note=live.note())
    remaining = producer.flush(30)
    summary = LiveSummary(
        topic=live.topic, sent=live.sent, valid=live.valid, garbage=dict(live.garbage),
        dropped=live.dropped, outcomes_sent=live.outcomes_sent,
        outcomes_pending=len(live.outcomes), manifests_sent=live.manifests_sent,
        manifest_records=live.manifest_records, seconds=round(time.monotonic() - started, 3),
        delivery_errors=list(live.errors),
    )
    if remaining or live.errors:
        detail = f"{remaining} messages undelivered; {len(live.errors)} delivery errors"
        if live.errors:
            detail += f", first: {live.errors[0]}"
        raise DeliveryError(summary, settings.kafka.bootstrap, detail)
    return summary


class DeliveryError(ServiceUnavailable):
    """Kafka did not acknowledge every record of a live run; carries the run's summary."""

    def __init__(self, summary: LiveSummary, address: str, detail: str) -> None:
        super().__init__("kafka", address, detail)
        self.summary = summary

