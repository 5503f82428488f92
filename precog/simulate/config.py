"""What to simulate (:class:`SimConfig`), one simulated event, and deterministic event ids."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from precog.errors import ConfigError

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
GARBAGE_KINDS = ("malformed", "wrong_schema", "impossible")
#: Default start of simulated time when none is given: 2024-01-01T00:00:00Z.
DEFAULT_START_MS = 1_704_067_200_000
#: the most entities a simulated world holds (a million cards take ~15 s to make)
MAX_ENTITIES = 1_000_000


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Times are epoch milliseconds; indices count yielded events.

    Nothing here names a domain: the simulator is the one the spec names
    (``simulation.simulator``), and so are its words (outcome source, drifting input).
    """

    seed: int = 7
    #: a simulator by name instead of the spec's ``simulation.simulator`` (None: the spec's)
    simulator: str | None = None
    #: how many entities the world holds (None: the simulator's ``default_entities``)
    entities: int | None = None
    #: share of events whose label is 1
    positive_rate: float = 0.02
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
    #: >1 compresses a burst of positives' timing (transactions: 15 min to start, ~5 min
    #: apart) by this factor, for worlds that run faster than real time (the demo's)
    burst_time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.garbage_fraction < 1:
            raise ConfigError("garbage fraction must be in [0, 1)")
        if not 0 < self.positive_rate < 0.5:
            raise ConfigError(f"positive rate (--positive-rate) must be in (0, 0.5), got"
                              f" {self.positive_rate}")
        if self.entities is not None and self.entities < 1:
            raise ConfigError("a world needs at least one entity")
        if self.entities is not None and self.entities > MAX_ENTITIES:
            raise ConfigError(f"--entities {self.entities}: a world holds at most"
                              f" {MAX_ENTITIES:,} entities")
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


def event_id(seed: int, start_ms: int, index: int) -> str:
    """Deterministic, run-unique event id (a UUID from a hash of seed, start and index).

    >>> event_id(7, 0, 1) == event_id(7, 0, 1) != event_id(7, 0, 2)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{start_ms}:{index}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))
