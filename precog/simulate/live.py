"""A live simulated stream to Kafka: events at a rate, delayed outcomes, volume manifests."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from precog.errors import ConfigError, ServiceUnavailable
from precog.progress import ProgressLine
from precog.schema_registry import namespace_codec
from precog.settings import Settings
from precog.simulate.catalog import simulator_for
from precog.simulate.config import SimConfig, SimEvent
from precog.simulate.simulator import Simulator, outcome_record
from precog.spec import PipelineSpec, parse_duration


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
    last_event_ms: int = 0  # the event time of the last event (sent or dropped)


@dataclass
class _Window:
    records: int = 0
    valid: int = 0


class _Live:
    """The bookkeeping of one live run: windows for manifests, pending outcomes, counts."""

    def __init__(self, settings: Settings, spec: PipelineSpec, sim: Simulator,
                 producer: Any, scale: float) -> None:
        self.settings, self.spec, self.sim, self.producer = settings, spec, sim, producer
        self.scale = scale
        self.topic = settings.topic(spec.event.topic)
        self.window_ms = parse_duration(spec.volume.window)
        self.windows: dict[int, _Window] = {}
        self.outcomes: list[tuple[int, int, bytes, bytes]] = []
        self.errors: list[str] = []
        self.producer_id = f"simulate-{sim.config.seed}-{sim.config.start_ms}"
        # the namespace's wire format (docs/schemas.md); garbage stays as the simulator made it
        self.codec_out = namespace_codec(settings, spec, spec.outcome.schema_name)
        self.codec_manifest = namespace_codec(settings, spec, "manifest")
        self.codec_event = namespace_codec(settings, spec, spec.event.schema_name)
        self.sent = self.valid = self.dropped = 0
        self.outcomes_sent = self.manifests_sent = self.manifest_records = 0
        self.garbage: dict[str, int] = {}
        self.last_event_ms = 0

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
        self.last_event_ms = max(self.last_event_ms, t)
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
            self._produce(self.topic, key, self.codec_event.encode(ev.record), t)
            self.valid += 1
            assert ev.outcome_time is not None and ev.label is not None
            due = t + round((ev.outcome_time - t) * self.scale)
            rec = outcome_record(ev, self.spec, due)
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
    about now (every event time lies in the past, so the skew check holds). Entities then
    keep their realistic activity (events hours apart in event time), the diurnal profile
    and bursts are kept, and outcomes arrive after their simulated delay times
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
    cfg = replace(base, start_ms=start_ms, mean_interarrival_ms=interarrival,
                  diurnal=base.diurnal and time_scale > 1)

    def event_now() -> int:  # the simulated clock
        return start_ms + int((clock() * 1000 - wall_start) * time_scale)

    sim = simulator_for(cfg, spec)
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
        delivery_errors=list(live.errors), last_event_ms=live.last_event_ms,
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
