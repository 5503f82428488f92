"""What one replay is asked to do (:class:`ReplayRequest`) and what it did (:class:`ReplaySummary`).

A request is checked when it is made, before anything connects: the namespaces differ, a
range end is a time or offsets (not both), a warm-up reads the spec's event topic and ends
where the replay starts.

>>> from precog.settings import Settings
>>> from precog.spec import SPEC_DIR, load_spec
>>> prod, spec = Settings(namespace="prod"), load_spec(SPEC_DIR / "transactions.yaml")
>>> r = ReplayRequest(prod, prod.model_copy(update={"namespace": "parallel"}), spec,
...                   pace=10.0)
>>> r.replayed_topic, str(r.checkpoint_path)
('events.transactions', '.precog/replay/parallel/events.transactions.json')
>>> ReplayRequest(prod, prod, spec)
Traceback (most recent call last):
...
precog.errors.ConfigError: --from-namespace and --to-namespace are both 'prod'
>>> ReplayRequest(r.target, prod, spec)
Traceback (most recent call last):
...
precog.errors.ConfigError: refusing to replay into namespace 'prod' without --force
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precog.errors import ConfigError
from precog.replay.plan import check_offsets
from precog.settings import Settings
from precog.spec import PipelineSpec

DEFAULT_CHECKPOINT_DIR = Path(".precog/replay")


def check_distinct(source: Settings, target: Settings) -> None:
    """A replay (or a copy of roles) never writes into the namespace it reads."""
    if source.namespace == target.namespace:
        raise ConfigError(f"--from-namespace and --to-namespace are both {source.namespace!r}")


@dataclass(frozen=True)
class ReplayRequest:
    """One replay of ``{source}.<topic>`` into ``{target}`` (``precog replay run``).

    The range is ``start`` to ``end`` as record times (epoch ms, via offsets-for-times) or
    offsets (``"N"`` for every partition or ``"P:N,P:N"``); None: from the beginning / up to
    the high watermarks at the start. ``pace``: None as fast as possible, 1.0 real time, N
    N times. ``warmup_start_ms`` rebuilds the target's entity state from ``[warmup_start,
    start)`` first. ``resume`` continues after the checkpoint in
    ``checkpoint_dir/<to-ns>/<topic>.json`` (False: start over). ``stop_after`` stops after
    that many records (tests; ReplayInterrupted), ``checkpoint_every_s`` is how often the
    checkpoint follows the delivery reports. Writing into ``prod`` needs ``force``.
    """

    source: Settings
    target: Settings
    spec: PipelineSpec
    topic: str | None = None  # None: the spec's event topic
    start_ms: int | None = None
    end_ms: int | None = None
    start_offsets: str | None = None
    end_offsets: str | None = None
    pace: float | None = None
    warmup_start_ms: int | None = None
    with_outcomes: bool = False
    resume: bool = True
    checkpoint_dir: Path = field(default=DEFAULT_CHECKPOINT_DIR)
    progress: bool = True
    stop_after: int | None = None
    checkpoint_every_s: float = 0.5
    force: bool = False

    def __post_init__(self) -> None:
        check_distinct(self.source, self.target)
        if self.target.namespace == "prod" and not self.force:
            raise ConfigError("refusing to replay into namespace 'prod' without --force")
        for text, option in ((self.start_offsets, "--start-offset"),
                             (self.end_offsets, "--end-offset")):
            if text is not None:
                check_offsets(text, option)
        event_topic = self.spec.event.topic
        if self.warmup_start_ms is not None and self.replayed_topic != event_topic:
            raise ConfigError(f"--warmup-start needs the spec's event topic {event_topic}")
        if self.start_ms is not None and self.start_offsets is not None:
            raise ConfigError("give --start or --start-offset, not both")
        if self.end_ms is not None and self.end_offsets is not None:
            raise ConfigError("give --end or --end-offset, not both")
        if (self.warmup_start_ms is not None and self.start_ms is not None
                and self.warmup_start_ms > self.start_ms):
            raise ConfigError("--warmup-start must not be after --start")

    @property
    def replayed_topic(self) -> str:
        """The topic without namespace: ``topic`` or the spec's event topic."""
        return self.topic or self.spec.event.topic

    @property
    def range_options(self) -> dict[str, Any]:
        """What decides the records a replay sends, by option name: a resumed replay must
        be asked for the same (its checkpoint keeps them). The pace may change."""
        return {
            "--start": self.start_ms, "--end": self.end_ms,
            "--start-offset": None if self.start_offsets is None
            else check_offsets(self.start_offsets, "--start-offset"),
            "--end-offset": None if self.end_offsets is None
            else check_offsets(self.end_offsets, "--end-offset"),
            "--warmup-start": self.warmup_start_ms, "--with-outcomes": self.with_outcomes,
        }

    @property
    def checkpoint_path(self) -> Path:
        """``<checkpoint_dir>/<to-ns>/<topic>.json``."""
        return checkpoint_path(self.checkpoint_dir, self.target.namespace, self.replayed_topic)


def checkpoint_path(directory: Path, to_namespace: str, topic: str) -> Path:
    """``<directory>/<to-ns>/<topic>.json``."""
    return directory / to_namespace / f"{topic}.json"


@dataclass
class ReplaySummary:
    """What one replay did."""

    source_topic: str
    target_topic: str
    planned: int
    empty: bool = False  # nothing to replay: nothing created, no checkpoint written
    sent: int = 0
    outcomes_sent: int = 0
    skipped_delivered: int = 0
    warmup_events: int = 0
    warmup_entities: int = 0
    warmup_skipped: int = 0
    resumed: bool = False
    complete: bool = False
    seconds: float = 0.0
    checkpoint: str = ""
    per_partition: dict[str, int] = field(default_factory=dict)
