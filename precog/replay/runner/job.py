"""A replay's plan: the source ranges of a request, its checkpoint file, where to resume."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from precog.errors import ConfigError
from precog.replay.checkpoint import Checkpoint, already_delivered
from precog.replay.plan import PartitionRange, parse_offsets, plan_ranges
from precog.replay.request import ReplayRequest
from precog.replay.runner.topics import (
    TIMEOUT,
    consumer,
    edge_time,
    kafka_error,
    offsets_for_time,
    partitions,
    read_range,
    timestamp,
    watermarks,
)
from precog.settings import Settings

Stream = tuple[str, int]  # a source (topic, partition)


@dataclass
class Job:
    """The resolved plan of one replay."""

    streams: dict[Stream, PartitionRange]  # source (topic, partition) -> range
    target_of: dict[str, str]  # source topic -> target topic
    event_topic: str


    @property
    def planned(self) -> int:
        """Offsets in all ranges (0: nothing to replay)."""
        return sum(r.size for r in self.streams.values())


def plan(request: ReplayRequest) -> Job:
    """The ranges of ``request`` (times turned into offsets) on the source only: the target
    is not touched (:func:`check_targets` once its topics exist)."""
    source, target, spec = request.source, request.target, request.spec
    src, dst = source.topic(request.replayed_topic), target.topic(request.replayed_topic)
    reader = consumer(source, target)
    try:
        parts = partitions(reader, src)
        ranges = plan_ranges(watermarks(reader, src, parts),
                             _bound(reader, src, parts, request.start_ms, request.start_offsets),
                             _bound(reader, src, parts, request.end_ms, request.end_offsets))
        streams = {(src, r.partition): r for r in ranges}
        target_of = {src: dst}
        if request.with_outcomes:
            out_src = source.topic(spec.outcome.topic)
            out_dst = target.topic(spec.outcome.topic)
            out_parts = partitions(reader, out_src)
            t0 = (request.start_ms if request.start_ms is not None
                  else edge_time(source, target, src, ranges, False))
            t1 = request.end_ms if request.end_ms is not None else (
                edge_time(source, target, src, ranges, True)
                if request.end_offsets is not None else None)
            for r in plan_ranges(watermarks(reader, out_src, out_parts),
                                 _bound(reader, out_src, out_parts, t0, None),
                                 _bound(reader, out_src, out_parts, t1, None)):
                streams[(out_src, r.partition)] = r
            target_of[out_src] = out_dst
    except KafkaException as exc:
        raise kafka_error(source, exc) from None
    finally:
        reader.close()
    return Job(streams, target_of, src)


def _bound(reader: Consumer, topic: str, parts: list[int], ms: int | None,
           offsets: str | None) -> dict[int, int | None]:
    """One end of the range per partition: from a time, from offsets, or open."""
    if ms is not None:
        return offsets_for_time(reader, topic, parts, ms)
    if offsets is not None:
        return dict(parse_offsets(offsets, parts))
    return {}


def check_targets(request: ReplayRequest, job: Job) -> None:
    """Every target topic exists with as many partitions as its source topic."""
    reader = consumer(request.target)
    try:
        for src, dst in job.target_of.items():
            parts = sorted(p for (t, p) in job.streams if t == src)
            target_parts = partitions(reader, dst)
            if len(target_parts) != len(parts):
                raise ConfigError(
                    f"{dst} has {len(target_parts)} partitions, the source {len(parts)}: the "
                    "replay keeps each record's partition, so both need the same count")
    except KafkaException as exc:
        raise kafka_error(request.target, exc) from None
    finally:
        reader.close()


def prepare_checkpoint_dir(path: Path) -> None:
    """Create the checkpoint file's directory before anything connects; a path that is a
    file or cannot be created is a one-line ConfigError naming --checkpoint-dir."""
    for d in (path.parent, *path.parent.parents):
        if d.exists():
            if not d.is_dir():
                raise ConfigError(f"--checkpoint-dir: {d} exists and is not a directory")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--checkpoint-dir: cannot create {path.parent}: "
                          f"{exc.strerror or exc}") from None


def load_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at ``path``; an unreadable one is a one-line ConfigError naming it."""
    try:
        return Checkpoint.from_json(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: unreadable replay checkpoint (not UTF-8 text); "
                          "use --restart") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def check_resumable(ckpt: Checkpoint, request: ReplayRequest, path: Path) -> None:
    """A checkpoint is resumed only by the replay it belongs to, asked with the same range
    options (:attr:`ReplayRequest.range_options`; the pace may change)."""
    if (ckpt.from_namespace, ckpt.to_namespace, ckpt.topic) != (
            request.source.namespace, request.target.namespace, request.replayed_topic):
        raise ConfigError(f"{path} belongs to another replay; use --restart")
    changed = ckpt.changed_options(request.range_options)
    if changed:
        raise ConfigError(f"{path} is from a replay with other options (it differs in "
                          f"{', '.join(changed)}): repeat them to resume, or --restart "
                          "starts over")


def new_checkpoint(request: ReplayRequest, job: Job, now_ms: int) -> Checkpoint:
    """A checkpoint of ``job`` with each target partition's high watermark before sending."""
    target = request.target
    reader = consumer(target)
    try:
        target_start: dict[str, dict[str, int]] = {}
        for (src, p) in job.streams:
            high = _new_topic_high(reader, TopicPartition(job.target_of[src], p))
            target_start.setdefault(src, {})[str(p)] = high
    except KafkaException as exc:
        raise kafka_error(target, exc) from None
    finally:
        reader.close()
    ranges: dict[str, dict[str, list[int]]] = {}
    for (src, p), r in job.streams.items():
        ranges.setdefault(src, {})[str(p)] = [r.start, r.end]
    return Checkpoint(request.source.namespace, target.namespace, request.replayed_topic,
                      ranges, target_start, started_time=now_ms, updated_time=now_ms,
                      options=request.range_options)


#: errors of a partition whose topic was just created and has no leader yet
_NO_LEADER_YET = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                            KafkaError.UNKNOWN_TOPIC_OR_PART})


def _new_topic_high(reader: Consumer, tp: TopicPartition) -> int:
    """The high watermark of a target partition, waiting (up to TIMEOUT) for the leader of
    a topic the replay has just created."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            _, high = reader.get_watermark_offsets(tp, timeout=TIMEOUT)
            return int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def job_from_checkpoint(ckpt: Checkpoint, request: ReplayRequest) -> Job:
    """The plan a checkpoint stored (the request asked for the same range:
    :func:`check_resumable`)."""
    source, target = request.source, request.target
    streams = {(src, int(p)): PartitionRange(int(p), se[0], se[1])
               for src, parts in ckpt.ranges.items() for p, se in parts.items()}
    target_of = {src: target.topic(src.removeprefix(f"{source.namespace}."))
                 for src in ckpt.ranges}
    return Job(streams, target_of, source.topic(request.replayed_topic))


def write_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Atomically replace the checkpoint file (fsynced temp file, then rename)."""
    replace_file(path, ckpt.to_json())


def replace_file(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``: an fsynced temp file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def resume_points(target: Settings, job: Job, ckpt: Checkpoint
                  ) -> tuple[dict[Stream, int], dict[Stream, int]]:
    """Per stream: the source offset to resume at and how many records to skip because the
    target already has them (acknowledged after the checkpoint's last write)."""
    reader = consumer(target)
    resume, skip = {}, {}
    try:
        for (src, p), r in job.streams.items():
            pos = ckpt.resume_offset(src, p)
            resume[(src, p)] = r.start if pos is None else pos
            _, high = reader.get_watermark_offsets(TopicPartition(job.target_of[src], p),
                                                   timeout=TIMEOUT)
            skip[(src, p)] = already_delivered(ckpt.next_target_offset(src, p), int(high))
    except KafkaException as exc:
        raise kafka_error(target, exc) from None
    finally:
        reader.close()
    return resume, skip


def last_record_time(request: ReplayRequest, job: Job,
                     resume_at: dict[Stream, int]) -> int | None:
    """The newest timestamp among the last records still to send (a paced replay's ETA)."""
    ends = {s: (r.end - 1, r.end) for s, r in job.streams.items() if resume_at[s] < r.end}
    times = [timestamp(m) for m in read_range(request.source, ends, request.target)]
    return max(times) if times else None
