"""What a batch run reads: an events file (Avro, CSV, JSON lines, Parquet) or a Kafka range.

Both hand the run fixed-size :class:`Chunk` s of input rows in input order (file order; per
partition offset order for a topic), so a resumed run cuts the input at the same places.
A row that is not a record of the event schema is kept in the chunk as undecodable, with
what the dead-letter queue would carry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precog.avro import Codec
from precog.errors import ConfigError, DecodeError, EventError
from precog.history import count_rows, file_format, read_rows
from precog.scoring import EventContext
from precog.settings import Settings


@dataclass
class Undecodable:
    """An input row that is not a record of the event schema (stage ``decode``)."""

    origin: EventContext
    error: EventError
    key: bytes | None = None
    payload: bytes | None = None


@dataclass
class Chunk:
    """``rows`` consecutive input rows: the decoded records and the undecodable rows."""

    index: int
    rows: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    origins: list[EventContext] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    undecodable: list[Undecodable] = field(default_factory=list)


class FileSource:
    """An events file, read lazily; rows are numbered from 0 (the provenance ``offset``)."""

    def __init__(self, path: Path, codec: Codec, fmt: str | None = None) -> None:
        if not path.is_file():
            raise ConfigError(f"--input {path}: no such file")
        self.path, self.codec = path.resolve(), codec
        try:
            self.format = file_format(path, fmt)
        except ConfigError as exc:
            raise ConfigError(f"--input-format: {exc}") from None
        self.topic = f"file:{self.path}"  # provenance source_topic of its rows

    def identity(self) -> dict[str, Any]:
        """What a checkpoint remembers of the input, to refuse resuming on another one."""
        st = self.path.stat()
        return {"file": str(self.path), "format": self.format, "size": st.st_size,
                "mtime_ns": st.st_mtime_ns}

    def total(self) -> int:
        """The file's rows (CSV, JSON lines: from its lines); reads every Avro block, so a
        truncated or corrupt Avro file fails here, before the run writes anything."""
        try:
            return count_rows(self.path, self.format)
        except ConfigError as exc:
            raise ConfigError(f"--input {exc}") from None

    def chunks(self, size: int) -> Iterator[Chunk]:
        def rows() -> Iterator[tuple[EventContext, dict[str, Any] | Undecodable, None]]:
            i = -1
            try:
                for i, row in enumerate(read_rows(self.path, self.codec, self.format)):
                    origin = EventContext(self.topic, 0, i)
                    yield origin, (Undecodable(origin, DecodeError(str(row)))
                                   if isinstance(row, ConfigError) else row), None
            except ConfigError as exc:  # the file breaks off (it changed since total())
                why = exc.__context__ or exc
                raise ConfigError(f"--input {self.path}: truncated or corrupt {self.format}"
                                  f" file: unreadable after {i + 1:,} rows ({why})") from None

        return chunked(rows(), size)


def chunked(rows: Iterator[tuple[EventContext, dict[str, Any] | Undecodable, bytes | None]],
            size: int) -> Iterator[Chunk]:
    """(origin, record or undecodable row, key) rows in chunks of ``size`` rows."""
    chunk = Chunk(0)
    for origin, row, key in rows:
        if isinstance(row, Undecodable):
            chunk.undecodable.append(row)
        else:
            chunk.records.append(row)
            chunk.origins.append(origin)
            chunk.keys.append(key)
        chunk.rows += 1
        if chunk.rows == size:
            yield chunk
            chunk = Chunk(chunk.index + 1)
    if chunk.rows or chunk.index == 0:  # an empty input: one empty chunk (an empty part)
        yield chunk


@dataclass(frozen=True)
class TopicRange:
    """What to read of a topic: times (epoch ms) or offsets (``N`` or ``P:N,P:N``); None is open."""

    topic: str  # without the namespace
    start_ms: int | None = None
    end_ms: int | None = None
    start_offsets: str | None = None
    end_offsets: str | None = None

    def __post_init__(self) -> None:
        if self.start_ms is not None and self.start_offsets is not None:
            raise ConfigError("give --start or --start-offset, not both")
        if self.end_ms is not None and self.end_offsets is not None:
            raise ConfigError("give --end or --end-offset, not both")
        if self.start_ms is not None and self.end_ms is not None and self.start_ms > self.end_ms:
            raise ConfigError(f"--start ({self.start_ms} ms) is after --end ({self.end_ms} ms):"
                              " the range is empty")
        start, end = (self.start_offsets or "").strip(), (self.end_offsets or "").strip()
        if start.isdigit() and end.isdigit() and int(start) > int(end):
            raise ConfigError(f"--start-offset {start} is after --end-offset {end}: the range"
                              " is empty")


class TopicSource:
    """Offset ranges of a Kafka topic, resolved once (the run's checkpoint keeps them)."""

    def __init__(self, settings: Settings, codec: Codec, want: TopicRange,
                 ranges: dict[int, tuple[int, int]] | None = None) -> None:
        self.settings, self.codec = settings, codec
        self.topic = settings.topic(want.topic)
        self.ranges = ranges if ranges is not None else resolve_ranges(settings, self.topic, want)

    def identity(self) -> dict[str, Any]:
        return {"topic": self.topic,
                "ranges": {str(p): list(r) for p, r in sorted(self.ranges.items())}}

    def total(self) -> int:
        return sum(max(0, end - start) for start, end in self.ranges.values())

    def chunks(self, size: int) -> Iterator[Chunk]:
        from precog.io import kafka
        from precog.replay.runner.topics import read_range

        def rows() -> Iterator[tuple[EventContext, dict[str, Any] | Undecodable, bytes | None]]:
            ranges = {(self.topic, p): r for p, r in self.ranges.items()}
            for msg in read_range(self.settings, ranges):
                (_, partition), offset = kafka.where(msg)
                origin = EventContext(self.topic, partition, offset)
                key, value = msg.key(), msg.value()
                try:
                    yield origin, self.codec.decode(value), key
                except DecodeError as exc:
                    yield origin, Undecodable(origin, exc, key, value), key

        return chunked(rows(), size)


def resolve_ranges(settings: Settings, topic: str, want: TopicRange
                   ) -> dict[int, tuple[int, int]]:
    """``partition -> [start, end)`` of ``want`` on ``topic`` now (open ends: the watermarks)."""
    from confluent_kafka import KafkaException

    from precog.replay.plan import parse_offsets, plan_ranges
    from precog.replay.runner.topics import (
        consumer,
        kafka_error,
        offsets_for_time,
        partitions,
        watermarks,
    )

    reader = consumer(settings)
    try:
        parts = partitions(reader, topic)

        def bound(ms: int | None, offsets: str | None, option: str) -> dict[int, int | None]:
            if ms is not None:
                return offsets_for_time(reader, topic, parts, ms)
            try:
                return dict(parse_offsets(offsets, parts)) if offsets is not None else {}
            except ConfigError as exc:
                raise ConfigError(f"{option}: {exc}") from None

        starts = bound(want.start_ms, want.start_offsets, "--start-offset")
        ends = bound(want.end_ms, want.end_offsets, "--end-offset")
        for p in sorted(starts.keys() & ends.keys()):
            s, e = starts[p], ends[p]
            if s is not None and e is not None and 0 <= e < s:
                raise ConfigError(
                    f"{'--start' if want.start_ms is not None else '--start-offset'} is after"
                    f" {'--end' if want.end_ms is not None else '--end-offset'} on partition"
                    f" {p} (offset {s} > {e}): the range is empty")
        planned = plan_ranges(watermarks(reader, topic, parts), starts, ends)
    except KafkaException as exc:
        raise kafka_error(settings, exc) from None
    finally:
        reader.close()
    return {r.partition: (r.start, r.end) for r in planned}
