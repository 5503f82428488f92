"""Replay a namespace's historic topic into a production-parallel namespace, and compare them.

The I/O edge of :mod:`precog.replay`: Kafka consumers and producers, the Redis warm-up,
the checkpoint file, Elasticsearch documents of a comparison. Python API:

* :func:`replay` — one range of ``{from}.<topic>`` (and ``{from}.outcomes``) into ``{to}``;
* :func:`copy_roles` — ``{from}.model-control``'s current roles published to ``{to}``;
* :func:`compare_namespaces` — both namespaces' predictions joined by event id;
* :func:`namespace_settings`, :func:`read_range`, :func:`checkpoint_path`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from precog.avro import Codec
from precog.errors import ConfigError, ServiceUnavailable, StackError
from precog.io import kafka
from precog.io.kafka import CONTROL_TOPIC
from precog.progress import ProgressLine
from precog.replay.checkpoint import AckTracker, Checkpoint, already_delivered
from precog.replay.compare import CompareReport, compare, documents, latest_outcomes
from precog.replay.merge import TimeMerge
from precog.replay.pacing import Pacer, record_time_left_s
from precog.replay.plan import PartitionRange, parse_offsets, plan_ranges
from precog.replay.warmup import WarmupResult, rebuild_states
from precog.roles import Roles
from precog.settings import Settings
from precog.spec import PipelineSpec

_TIMEOUT = 10.0
#: Pause a partition whose merge buffer holds this many records; resume below the low mark.
_HIGH_WATER, _LOW_WATER = 5000, 1000


class ReplayInterrupted(StackError):
    """A replay stopped before its end (``stop_after``); resume it to finish."""


@dataclass
class ReplaySummary:
    """What one :func:`replay` call did."""

    source_topic: str
    target_topic: str
    planned: int
    sent: int
    outcomes_sent: int
    skipped_delivered: int
    warmup_events: int
    warmup_entities: int
    warmup_skipped: int
    resumed: bool
    complete: bool
    seconds: float
    checkpoint: str
    per_partition: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def namespace_settings(base: Settings, namespace: str) -> Settings:
    """``base`` with another namespace (validated like ``PRECOG_NAMESPACE``)."""
    try:
        Settings.model_validate({"namespace": namespace})
    except ValueError as exc:
        raise ConfigError(f"bad namespace {namespace!r}: lowercase letters, digits, '-', '_'"
                          ) from exc
    return base.model_copy(update={"namespace": namespace})


def checkpoint_path(directory: Path, to_namespace: str, topic: str) -> Path:
    """``<directory>/<to-ns>/<topic>.json``."""
    return directory / to_namespace / f"{topic}.json"


def _write_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Atomically replace the checkpoint file (fsynced temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with tmp.open("w") as fh:
        fh.write(ckpt.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _consumer(settings: Settings, owner: Settings | None = None, **extra: Any) -> Consumer:
    """An assign-only consumer; its group id (never joined, never committed) is named for
    ``owner`` (the namespace doing the work), so reading production leaves no trace there."""
    return kafka.reader(settings, (owner or settings).group("replay"),
                        **{"auto.offset.reset": "earliest", **extra})


def _kafka_error(settings: Settings, exc: KafkaException) -> ServiceUnavailable:
    return ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc.args[0])[:200])


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    parts = kafka.partitions(consumer, topic, _TIMEOUT)
    if parts is None:
        raise ConfigError(f"topic {topic} does not exist")
    return parts


def _watermarks(consumer: Consumer, topic: str, parts: list[int]) -> dict[int, tuple[int, int]]:
    return kafka.watermarks(consumer, topic, parts, _TIMEOUT)


def _offsets_for_time(consumer: Consumer, topic: str, parts: list[int], ms: int
                      ) -> dict[int, int | None]:
    """First offset per partition whose record timestamp is >= ``ms`` (-1: none)."""
    found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts],
                                       timeout=_TIMEOUT)
    return {tp.partition: tp.offset for tp in found}


def read_range(settings: Settings, ranges: Mapping[tuple[str, int], tuple[int, int]],
               owner: Settings | None = None) -> Iterator[Message]:
    """Every record of ``(topic, partition) -> [start, end)``, each partition in offset order
    (:func:`precog.io.kafka.read_ranges`)."""
    if not any(end > start for start, end in ranges.values()):
        return
    consumer = _consumer(settings, owner)
    try:
        yield from kafka.read_ranges(consumer, ranges, idle_timeout=2 * _TIMEOUT)
    except TimeoutError as exc:
        raise ServiceUnavailable("kafka", settings.kafka.bootstrap, str(exc)) from None
    except KafkaException as exc:
        raise _kafka_error(settings, exc) from None
    finally:
        consumer.close()


def _timestamp(msg: Message) -> int:
    kind, ts = msg.timestamp()
    return int(ts) if ts is not None and ts >= 0 else 0


def _edge_time(settings: Settings, owner: Settings, topic: str, ranges: list[PartitionRange],
               last: bool) -> int | None:
    """Oldest first / newest last record timestamp of the ranges (for the outcomes window)."""
    found = []
    for r in ranges:
        if r.size:
            at = r.end - 1 if last else r.start
            found += [_timestamp(m) for m in read_range(
                settings, {(topic, r.partition): (at, at + 1)}, owner)]
    if not found:
        return None
    return max(found) + 1 if last else min(found)


# --------------------------------------------------------------------------- roles


def copy_roles(source: Settings, target: Settings, spec: PipelineSpec, *, by: str = "replay",
               at: int | None = None) -> Roles:
    """Publish ``source``'s current roles of ``spec`` on ``target``'s model-control topic.

    The copy gets a revision above the target's current one (workers only move forward);
    afterwards the target's roles change independently (``precog models ...`` with
    ``PRECOG_NAMESPACE`` set to the target).
    """
    from precog.namespace import ensure_topics
    from precog.services.model_control import publish_roles, read_roles

    _distinct(source, target)
    roles = read_roles(source, spec.name)
    if roles is None:
        raise ConfigError(f"{source.topic(CONTROL_TOPIC)} has no roles for {spec.name}")
    ensure_topics(target, spec)
    existing = read_roles(target, spec.name)
    revision = max(roles.revision, existing.revision + 1) if existing else roles.revision
    copy = replace(roles, revision=revision, updated_time=at or int(time.time() * 1000),
                   updated_by=by, reason=f"copied from {source.namespace} revision "
                                         f"{roles.revision}")
    publish_roles(target, copy)
    return copy


def _distinct(source: Settings, target: Settings) -> None:
    if source.namespace == target.namespace:
        raise ConfigError(f"--from-namespace and --to-namespace are both {source.namespace!r}")


# --------------------------------------------------------------------------- replay


@dataclass
class _Job:
    """The resolved plan of one replay."""

    streams: dict[tuple[str, int], PartitionRange]  # source (topic, partition) -> range
    target_of: dict[str, str]  # source topic -> target topic
    event_topic: str


def _plan(source: Settings, target: Settings, spec: PipelineSpec, topic: str, *,
          start_ms: int | None, end_ms: int | None, start_offsets: str | None,
          end_offsets: str | None, with_outcomes: bool) -> _Job:
    src, dst = source.topic(topic), target.topic(topic)
    consumer = _consumer(source, target)
    try:
        parts = _partitions(consumer, src)
        _check_target(consumer, dst, parts)
        marks = _watermarks(consumer, src, parts)
        starts: dict[int, int | None] = {}
        ends: dict[int, int | None] = {}
        if start_ms is not None:
            starts = _offsets_for_time(consumer, src, parts, start_ms)
        elif start_offsets is not None:
            starts = dict(parse_offsets(start_offsets, parts))
        if end_ms is not None:
            ends = _offsets_for_time(consumer, src, parts, end_ms)
        elif end_offsets is not None:
            ends = dict(parse_offsets(end_offsets, parts))
        ranges = plan_ranges(marks, starts, ends)
        streams = {(src, r.partition): r for r in ranges}
        target_of = {src: dst}
        if with_outcomes:
            out_src = source.topic(spec.outcome.topic)
            out_dst = target.topic(spec.outcome.topic)
            out_parts = _partitions(consumer, out_src)
            _check_target(consumer, out_dst, out_parts)
            t0 = (start_ms if start_ms is not None
                  else _edge_time(source, target, src, ranges, False))
            t1 = end_ms if end_ms is not None else (
                _edge_time(source, target, src, ranges, True) if end_offsets is not None else None)
            o_starts = (_offsets_for_time(consumer, out_src, out_parts, t0)
                        if t0 is not None else {})
            o_ends = (_offsets_for_time(consumer, out_src, out_parts, t1)
                      if t1 is not None else {})
            o_marks = _watermarks(consumer, out_src, out_parts)
            for r in plan_ranges(o_marks, o_starts, o_ends):
                streams[(out_src, r.partition)] = r
            target_of[out_src] = out_dst
    except KafkaException as exc:
        raise _kafka_error(source, exc) from None
    finally:
        consumer.close()
    return _Job(streams, target_of, src)


def _check_target(consumer: Consumer, dst: str, parts: list[int]) -> None:
    target_parts = _partitions(consumer, dst)
    if len(target_parts) != len(parts):
        raise ConfigError(
            f"{dst} has {len(target_parts)} partitions, the source {len(parts)}: the replay "
            "keeps each record's partition, so both need the same count")


def _new_checkpoint(source: Settings, target: Settings, topic: str, job: _Job,
                    now_ms: int) -> Checkpoint:
    consumer = _consumer(target)
    try:
        target_start: dict[str, dict[str, int]] = {}
        for (src, p) in job.streams:
            dst = job.target_of[src]
            _, high = consumer.get_watermark_offsets(TopicPartition(dst, p), timeout=_TIMEOUT)
            target_start.setdefault(src, {})[str(p)] = int(high)
    except KafkaException as exc:
        raise _kafka_error(target, exc) from None
    finally:
        consumer.close()
    ranges: dict[str, dict[str, list[int]]] = {}
    for (src, p), r in job.streams.items():
        ranges.setdefault(src, {})[str(p)] = [r.start, r.end]
    return Checkpoint(source.namespace, target.namespace, topic, ranges, target_start,
                      started_time=now_ms, updated_time=now_ms)


def _job_from_checkpoint(ckpt: Checkpoint, source: Settings, target: Settings,
                         topic: str) -> _Job:
    streams = {(src, int(p)): PartitionRange(int(p), se[0], se[1])
               for src, parts in ckpt.ranges.items() for p, se in parts.items()}
    target_of = {src: target.topic(src.removeprefix(f"{source.namespace}."))
                 for src in ckpt.ranges}
    return _Job(streams, target_of, source.topic(topic))


def _warm_up(source: Settings, target: Settings, spec: PipelineSpec, job: _Job,
             warmup_start_ms: int, say: Callable[[str], None]) -> WarmupResult:
    """Rebuild entity state from ``[warmup_start, replay start)`` into the target's Redis."""
    from precog.services.feature_store import RedisOnlineStore

    src = job.event_topic
    consumer = _consumer(source, target)
    try:
        parts = sorted(p for (t, p) in job.streams if t == src)
        begin = _offsets_for_time(consumer, src, parts, warmup_start_ms)
    except KafkaException as exc:
        raise _kafka_error(source, exc) from None
    finally:
        consumer.close()
    ranges = {}
    for p in parts:
        stop = job.streams[(src, p)].start
        first = begin.get(p)
        ranges[(src, p)] = (stop if first is None or first < 0 else min(first, stop), stop)
    say(f"warm-up: {sum(e - s for s, e in ranges.values()):,} records of {src} "
        f"-> {target.redis_key('state', spec.name, '*')}")
    result = WarmupResult()
    chunk: list[tuple[bytes | None, int]] = []
    for msg in read_range(source, ranges, target):
        chunk.append((msg.value(), _timestamp(msg)))
        if len(chunk) >= 5000:
            rebuild_states(spec, chunk, into=result)
            chunk = []
    rebuild_states(spec, chunk, into=result)
    store = RedisOnlineStore(target, spec)
    items = list(result.states.items())
    for i in range(0, len(items), 1000):
        store.write_sync(dict(items[i:i + 1000]))
    say(f"warm-up: {result.events:,} events, {len(result.states):,} entities written, "
        f"{result.skipped:,} skipped (undecodable or invalid)")
    return result


def _skips(target: Settings, job: _Job, ckpt: Checkpoint) -> tuple[dict[tuple[str, int], int],
                                                                      dict[tuple[str, int], int]]:
    """Per stream: the source offset to resume at and how many records to skip because the
    target already has them (acknowledged after the checkpoint's last write)."""
    consumer = _consumer(target)
    resume, skip = {}, {}
    try:
        for (src, p), r in job.streams.items():
            pos = ckpt.resume_offset(src, p)
            resume[(src, p)] = r.start if pos is None else pos
            _, high = consumer.get_watermark_offsets(TopicPartition(job.target_of[src], p),
                                                     timeout=_TIMEOUT)
            skip[(src, p)] = already_delivered(ckpt.next_target_offset(src, p), int(high))
    except KafkaException as exc:
        raise _kafka_error(target, exc) from None
    finally:
        consumer.close()
    return resume, skip


def replay(
    source: Settings,
    target: Settings,
    spec: PipelineSpec,
    *,
    topic: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    start_offsets: str | None = None,
    end_offsets: str | None = None,
    pace: float | None = None,
    warmup_start_ms: int | None = None,
    with_outcomes: bool = False,
    resume: bool = True,
    checkpoint_dir: Path = Path(".precog/replay"),
    progress: bool = True,
    stop_after: int | None = None,
    checkpoint_every_s: float = 0.5,
    echo: Callable[[str], None] | None = None,
) -> ReplaySummary:
    """Replay ``{source}.<topic>`` (default: the spec's event topic) into ``{target}``.

    Keys, values, headers, record timestamps and partition numbers are kept; records leave
    in timestamp order across partitions (offset order within one), paced by record time
    (``pace``: None = as fast as possible, 1.0 = real time, N = N times). With
    ``with_outcomes`` the outcomes of the same time range are merged in by time. With
    ``warmup_start_ms`` the events of ``[warmup_start, start)`` rebuild the target's entity
    state first, without scoring. The checkpoint (``checkpoint_dir/<to-ns>/<topic>.json``)
    follows delivery reports; a second call resumes after it (``resume=False`` starts
    over). ``stop_after`` stops after that many records (tests), raising ReplayInterrupted.
    """
    from precog.namespace import ensure_topics

    say = echo or (lambda m: print(m, file=sys.stderr))
    _distinct(source, target)
    topic = topic or spec.event.topic
    if warmup_start_ms is not None and topic != spec.event.topic:
        raise ConfigError(f"--warmup-start needs the spec's event topic {spec.event.topic}")
    if start_ms is not None and start_offsets is not None:
        raise ConfigError("give --start or --start-offset, not both")
    if end_ms is not None and end_offsets is not None:
        raise ConfigError("give --end or --end-offset, not both")
    if warmup_start_ms is not None and start_ms is not None and warmup_start_ms > start_ms:
        raise ConfigError("--warmup-start must not be after --start")
    started = time.monotonic()
    try:
        ensure_topics(target, spec)
    except KafkaException as exc:
        raise _kafka_error(target, exc) from None
    path = checkpoint_path(checkpoint_dir, target.namespace, topic)
    ckpt: Checkpoint | None = None
    if path.exists() and resume:
        ckpt = Checkpoint.from_json(path.read_text())
        if (ckpt.from_namespace, ckpt.to_namespace, ckpt.topic) != (
                source.namespace, target.namespace, topic):
            raise ConfigError(f"{path} belongs to another replay; use --restart")
        say(f"resuming the replay of {path} (its range; {ckpt.sent:,} records sent before)")
    elif path.exists():
        say(f"restarting: {path} discarded; records it covered will be sent again")
        path.unlink()
    resumed = ckpt is not None
    if ckpt is None:
        job = _plan(source, target, spec, topic, start_ms=start_ms, end_ms=end_ms,
                    start_offsets=start_offsets, end_offsets=end_offsets,
                    with_outcomes=with_outcomes)
        ckpt = _new_checkpoint(source, target, topic, job, int(time.time() * 1000))
        _write_checkpoint(path, ckpt)
    else:
        job = _job_from_checkpoint(ckpt, source, target, topic)
    planned = sum(r.size for r in job.streams.values())
    summary = ReplaySummary(job.event_topic, target.topic(topic), planned, 0, 0, 0, 0, 0, 0,
                            resumed, ckpt.complete, 0.0, str(path))
    if ckpt.complete:
        say(f"replay already complete ({path}); use --restart to send it again")
        return summary
    if warmup_start_ms is not None and not ckpt.warmup_done:
        result = _warm_up(source, target, spec, job, warmup_start_ms, say)
        ckpt.warmup_done, ckpt.warmup_entities = True, len(result.states)
        summary.warmup_events, summary.warmup_skipped = result.events, result.skipped
        summary.warmup_entities = len(result.states)
        _write_checkpoint(path, ckpt)
    _send(source, target, job, ckpt, path, summary, pace=pace, progress=progress,
          stop_after=stop_after, checkpoint_every_s=checkpoint_every_s)
    summary.complete = True
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _send(source: Settings, target: Settings, job: _Job, ckpt: Checkpoint, path: Path,
          summary: ReplaySummary, *, pace: float | None, progress: bool,
          stop_after: int | None, checkpoint_every_s: float) -> None:
    """The copy loop: read, merge by time, pace, produce, checkpoint from delivery reports."""
    resume_at, skip = _skips(target, job, ckpt)
    position = dict(resume_at)  # next source offset expected per stream
    live = {s: r for s, r in job.streams.items() if resume_at[s] < r.end}
    merge = TimeMerge(sorted(job.streams))
    for s in job.streams:
        if s not in live:
            merge.finish(s)
    tracker = AckTracker()
    producer = kafka.producer(target, **{"enable.idempotence": True, "acks": "all",
                                         "linger.ms": 5, "client.id": "precog-replay"})
    consumer = _consumer(source, target)
    pacer = Pacer(pace)
    last_ms = _last_record_time(source, target, job, resume_at) if pace and progress else None
    bar = ProgressLine(f"replay {job.event_topic} -> {summary.target_topic}",
                       sum(max(0, r.end - resume_at[s]) for s, r in live.items()),
                       enabled=progress)
    paused: set[tuple[str, int]] = set()
    last_ckpt = time.monotonic()
    record_ms: int | None = None

    def flush_checkpoint(complete: bool = False) -> None:
        for (src, p), (off, tgt) in tracker.positions().items():
            ckpt.record_ack(src, p, off, tgt)
        ckpt.complete = complete
        ckpt.updated_time = int(time.time() * 1000)
        _write_checkpoint(path, ckpt)

    def delivered(stream: tuple[str, int], offset: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                tracker.acked(stream, offset, int(msg.offset()))
                ckpt.sent += 1
            else:
                tracker.failed(stream, offset, str(err))
        return report

    try:
        if live:
            consumer.assign([TopicPartition(t, p, resume_at[(t, p)]) for (t, p) in live])
        sent = 0
        while not merge.done:
            if merge.waiting_for() or not any(merge.buffered(s) for s in job.streams):
                for msg in consumer.consume(500, timeout=0.2):
                    _take(msg, job, merge, skip, position, summary)
                _flow(consumer, merge, paused)
            for msg in merge.ready():
                record_ms = _timestamp(msg)
                delay = pacer.delay_ms(record_ms, time.time() * 1000)
                while delay > 0:
                    producer.poll(min(delay, 50) / 1000)
                    delay = pacer.delay_ms(record_ms, time.time() * 1000)
                _produce(producer, msg, job, delivered((msg.topic(), msg.partition()),
                                                       msg.offset()))
                tracker.sent((msg.topic(), msg.partition()), msg.offset())
                sent += 1
                if msg.topic() == job.event_topic:
                    summary.sent += 1
                    summary.per_partition[str(msg.partition())] = (
                        summary.per_partition.get(str(msg.partition()), 0) + 1)
                else:
                    summary.outcomes_sent += 1
                if tracker.errors:
                    raise ServiceUnavailable("kafka", target.kafka.bootstrap,
                                             f"delivery failed: {tracker.errors[0]}")
                if stop_after is not None and sent >= stop_after:
                    producer.flush(_TIMEOUT)  # delivered, but the checkpoint may lag: resume
                    raise ReplayInterrupted(f"stopped after {sent} records (stop_after)")
                if time.monotonic() - last_ckpt >= checkpoint_every_s:
                    producer.poll(0)
                    flush_checkpoint()
                    last_ckpt = time.monotonic()
                bar.update(sent, min_eta_s=record_time_left_s(record_ms, last_ms, pace))
                _flow(consumer, merge, paused)
        if producer.flush(30) > 0 or tracker.errors or tracker.pending:
            detail = tracker.errors[0] if tracker.errors else f"{tracker.pending} undelivered"
            flush_checkpoint()
            raise ServiceUnavailable("kafka", target.kafka.bootstrap,
                                     f"replay incomplete ({detail}); run it again to resume")
        flush_checkpoint(complete=True)
    except KafkaException as exc:
        raise _kafka_error(target, exc) from None
    finally:
        bar.close()
        consumer.close()


def _last_record_time(source: Settings, target: Settings, job: _Job,
                      resume_at: dict[tuple[str, int], int]) -> int | None:
    """The newest timestamp among the last records still to send (a paced replay's ETA)."""
    ends = {s: (r.end - 1, r.end) for s, r in job.streams.items() if resume_at[s] < r.end}
    times = [_timestamp(m) for m in read_range(source, ends, target)]
    return max(times) if times else None


def _take(msg: Message, job: _Job, merge: TimeMerge, skip: dict[tuple[str, int], int],
          position: dict[tuple[str, int], int], summary: ReplaySummary) -> None:
    """Route one consumed record (or EOF) into the merge, skipping already-delivered ones."""
    stream, offset = kafka.where(msg)
    if msg.error() is not None:
        if kafka.is_partition_eof(msg):
            merge.finish(stream)  # the range ends at or before the high watermark we planned
            return
        raise KafkaException(msg.error())
    r = job.streams.get(stream)
    if r is None or offset >= r.end:
        merge.finish(stream)
        return
    if offset < position[stream]:
        return  # re-read after an offset reset: already taken
    position[stream] = offset + 1
    if skip.get(stream, 0) > 0:
        skip[stream] -= 1
        summary.skipped_delivered += 1
    else:
        merge.push(stream, _timestamp(msg), msg)
    if offset + 1 >= r.end:
        merge.finish(stream)


def _flow(consumer: Consumer, merge: TimeMerge, paused: set[tuple[str, int]]) -> None:
    """Bound memory: pause partitions far ahead of the merge, resume them when drained."""
    for s in list(paused):
        if merge.buffered(s) < _LOW_WATER:
            consumer.resume([TopicPartition(s[0], s[1])])
            paused.discard(s)
    for over in merge.streams_over(_HIGH_WATER):
        s = cast(tuple[str, int], over)
        if s not in paused:
            consumer.pause([TopicPartition(s[0], s[1])])
            paused.add(s)


def _produce(producer: Producer, msg: Message, job: _Job,
             on_delivery: Callable[[Any, Any], None]) -> None:
    kw: dict[str, Any] = {"key": msg.key(), "value": msg.value(), "partition": msg.partition(),
                          "on_delivery": on_delivery}
    ts = _timestamp(msg)
    if ts > 0:
        kw["timestamp"] = ts
    headers = msg.headers()
    if headers:
        kw["headers"] = headers
    while True:
        try:
            producer.produce(job.target_of[cast(str, msg.topic())], **kw)
            break
        except BufferError:  # local queue full: let librdkafka drain it
            producer.poll(0.1)
    producer.poll(0)


# --------------------------------------------------------------------------- compare


def _topic_marks(settings: Settings, topic: str,
                 owner: Settings | None) -> dict[int, tuple[int, int]]:
    """(low, high) watermark of every partition of ``topic`` now."""
    consumer = _consumer(settings, owner)
    try:
        return _watermarks(consumer, topic, _partitions(consumer, topic))
    except KafkaException as exc:
        raise _kafka_error(settings, exc) from None
    finally:
        consumer.close()


def read_topic(settings: Settings, name: str, owner: Settings | None = None) -> list[Message]:
    """Every record of ``{ns}.<name>`` up to the high watermarks at the time of the call."""
    topic = settings.topic(name)
    marks = _topic_marks(settings, topic, owner)
    return list(read_range(settings, {(topic, p): lh for p, lh in marks.items()}, owner))


def count_topic(settings: Settings, name: str, owner: Settings | None = None) -> int:
    """Records in ``{ns}.<name>`` (high minus low watermark over partitions)."""
    marks = _topic_marks(settings, settings.topic(name), owner)
    return sum(h - lo for lo, h in marks.values())


def compare_namespaces(left: Settings, right: Settings, spec: PipelineSpec, *, top: int = 10,
                       index_into: Settings | None = None,
                       now_ms: int | None = None) -> CompareReport:
    """Join both namespaces' predictions by event id (read from their predictions topics);
    with ``index_into``, write the report's documents into its ``{ns}-replay-compare``."""
    pred_codec = Codec.for_schema("prediction")
    out_codec = Codec.for_schema(spec.outcome.schema_name)

    def side(s: Settings) -> tuple[list[dict[str, Any]], dict[str, int], int]:
        preds = [pred_codec.decode(m.value()) for m in read_topic(s, "predictions", right)]
        outs = [out_codec.decode(m.value()) for m in read_topic(s, spec.outcome.topic, right)]
        labels = latest_outcomes(outs, spec.outcome.join_key, spec.outcome.label_field)
        return preds, labels, count_topic(s, "dlq", right)

    lp, lo, ld = side(left)
    rp, ro, rd = side(right)
    report = compare(lp, rp, lo, ro, left=left.namespace, right=right.namespace, top=top,
                     dead_letters=(ld, rd))
    if index_into is not None:
        index_report(index_into, report, now_ms or int(time.time() * 1000))
    return report


def index_report(settings: Settings, report: CompareReport, computed_time: int) -> int:
    """Bulk-write the report's documents into ``{ns}-replay-compare``; returns the count."""
    from elasticsearch import ApiError, TransportError, helpers

    from precog.io.elasticsearch import elasticsearch_client
    from precog.namespace import apply_index_templates

    apply_index_templates(settings)  # the strict mapping must exist before the first write
    index = settings.index("replay-compare")
    actions = [{"_op_type": "index", "_index": index, "_id": i, "_source": d}
               for i, d in documents(report, computed_time)]
    try:
        with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
            ok, _ = helpers.bulk(es, actions, refresh="wait_for")
    except (ApiError, helpers.BulkIndexError) as exc:
        raise ConfigError(f"{index}: documents rejected: {str(exc)[:300]}") from exc
    except TransportError as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url, str(exc)) from exc
    return int(ok)
