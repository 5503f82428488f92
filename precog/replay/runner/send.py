"""The copy loop: read the ranges, merge by time, pace, produce into the parallel namespace.

The checkpoint follows the producer's delivery reports (an ack tracker advances only over a
contiguous acknowledged prefix), so an interrupted copy resumes without duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from precog.errors import ServiceUnavailable, StackError
from precog.io import kafka
from precog.progress import ProgressLine
from precog.replay.checkpoint import AckTracker, Checkpoint
from precog.replay.merge import TimeMerge
from precog.replay.pacing import Pacer, record_time_left_s
from precog.replay.request import ReplayRequest, ReplaySummary
from precog.replay.runner.job import (
    Job,
    Stream,
    last_record_time,
    resume_points,
    write_checkpoint,
)
from precog.replay.runner.topics import TIMEOUT, consumer, kafka_error, timestamp

#: Pause a partition whose merge buffer holds this many records; resume below the low mark.
_HIGH_WATER, _LOW_WATER = 5000, 1000


class ReplayInterrupted(StackError):
    """A replay stopped before its end (``stop_after``); resume it to finish."""


def send(request: ReplayRequest, job: Job, ckpt: Checkpoint, path: Path,
         summary: ReplaySummary) -> None:
    """Copy what ``ckpt`` has not delivered yet; counts go into ``summary``."""
    source, target, pace = request.source, request.target, request.pace
    resume_at, skip = resume_points(target, job, ckpt)
    position = dict(resume_at)  # next source offset expected per stream
    live = {s: r for s, r in job.streams.items() if resume_at[s] < r.end}
    merge = TimeMerge(sorted(job.streams))
    for s in job.streams:
        if s not in live:
            merge.finish(s)
    tracker = AckTracker()
    producer = kafka.producer(target, **{"enable.idempotence": True, "acks": "all",
                                         "linger.ms": 5, "client.id": "precog-replay"})
    reader = consumer(source, target)
    pacer = Pacer(pace)
    last_ms = last_record_time(request, job, resume_at) if pace and request.progress else None
    bar = ProgressLine(f"replay {job.event_topic} -> {summary.target_topic}",
                       sum(max(0, r.end - resume_at[s]) for s, r in live.items()),
                       enabled=request.progress)
    paused: set[Stream] = set()
    last_ckpt = time.monotonic()

    def flush_checkpoint(complete: bool = False) -> None:
        for (src, p), (off, tgt) in tracker.positions().items():
            ckpt.record_ack(src, p, off, tgt)
        ckpt.complete = complete
        ckpt.updated_time = int(time.time() * 1000)
        write_checkpoint(path, ckpt)

    def delivered(stream: Stream, offset: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                tracker.acked(stream, offset, int(msg.offset()))
                ckpt.sent += 1
            else:
                tracker.failed(stream, offset, str(err))
        return report

    try:
        if live:
            reader.assign([TopicPartition(t, p, resume_at[(t, p)]) for (t, p) in live])
        sent = 0
        while not merge.done:
            if merge.waiting_for() or not any(merge.buffered(s) for s in job.streams):
                for msg in reader.consume(500, timeout=0.2):
                    _take(msg, job, merge, skip, position, summary)
                _flow(reader, merge, paused)
            for msg in merge.ready():
                record_ms = timestamp(msg)
                delay = pacer.delay_ms(record_ms, time.time() * 1000)
                while delay > 0:
                    producer.poll(min(delay, 50) / 1000)
                    delay = pacer.delay_ms(record_ms, time.time() * 1000)
                _produce(producer, msg, job, delivered((msg.topic(), msg.partition()),
                                                       msg.offset()))
                tracker.sent((msg.topic(), msg.partition()), msg.offset())
                sent += 1
                _count(summary, msg, job)
                if tracker.errors:
                    raise ServiceUnavailable("kafka", target.kafka.bootstrap,
                                             f"delivery failed: {tracker.errors[0]}")
                if request.stop_after is not None and sent >= request.stop_after:
                    producer.flush(TIMEOUT)  # delivered, but the checkpoint may lag: resume
                    raise ReplayInterrupted(f"stopped after {sent} records (stop_after)")
                if time.monotonic() - last_ckpt >= request.checkpoint_every_s:
                    producer.poll(0)
                    flush_checkpoint()
                    last_ckpt = time.monotonic()
                bar.update(sent, min_eta_s=record_time_left_s(record_ms, last_ms, pace))
                _flow(reader, merge, paused)
        if producer.flush(30) > 0 or tracker.errors or tracker.pending:
            detail = tracker.errors[0] if tracker.errors else f"{tracker.pending} undelivered"
            flush_checkpoint()
            raise ServiceUnavailable("kafka", target.kafka.bootstrap,
                                     f"replay incomplete ({detail}); run it again to resume")
        flush_checkpoint(complete=True)
    except KafkaException as exc:
        raise kafka_error(target, exc) from None
    finally:
        bar.close()
        reader.close()


def _count(summary: ReplaySummary, msg: Message, job: Job) -> None:
    if msg.topic() == job.event_topic:
        summary.sent += 1
        part = str(msg.partition())
        summary.per_partition[part] = summary.per_partition.get(part, 0) + 1
    else:
        summary.outcomes_sent += 1


def _take(msg: Message, job: Job, merge: TimeMerge, skip: dict[Stream, int],
          position: dict[Stream, int], summary: ReplaySummary) -> None:
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
        merge.push(stream, timestamp(msg), msg)
    if offset + 1 >= r.end:
        merge.finish(stream)


def _flow(reader: Consumer, merge: TimeMerge, paused: set[Stream]) -> None:
    """Bound memory: pause partitions far ahead of the merge, resume them when drained."""
    for s in list(paused):
        if merge.buffered(s) < _LOW_WATER:
            reader.resume([TopicPartition(s[0], s[1])])
            paused.discard(s)
    for over in merge.streams_over(_HIGH_WATER):
        s = cast(Stream, over)
        if s not in paused:
            reader.pause([TopicPartition(s[0], s[1])])
            paused.add(s)


def _produce(producer: Producer, msg: Message, job: Job,
             on_delivery: Callable[[Any, Any], None]) -> None:
    kw: dict[str, Any] = {"key": msg.key(), "value": msg.value(), "partition": msg.partition(),
                          "on_delivery": on_delivery}
    ts = timestamp(msg)
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
