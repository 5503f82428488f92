"""One replay end to end: checkpoint or plan, the warm-up of entity state, then the copy."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from confluent_kafka import KafkaException

from precog.replay.checkpoint import Checkpoint
from precog.replay.request import ReplayRequest, ReplaySummary
from precog.replay.runner.job import (
    Job,
    check_resumable,
    check_targets,
    job_from_checkpoint,
    load_checkpoint,
    new_checkpoint,
    plan,
    prepare_checkpoint_dir,
    write_checkpoint,
)
from precog.replay.runner.send import send
from precog.replay.runner.topics import (
    TIMEOUT,
    consumer,
    kafka_error,
    offsets_for_time,
    read_range,
    timestamp,
)
from precog.replay.warmup import WarmupResult, rebuild_states


def replay(request: ReplayRequest, echo: Callable[[str], None] | None = None) -> ReplaySummary:
    """Replay ``{source}.<topic>`` (default: the spec's event topic) into ``{target}``.

    Keys, values, headers, record timestamps and partition numbers are kept; records leave
    in timestamp order across partitions (offset order within one), paced by record time.
    With ``with_outcomes`` the outcomes of the same time range are merged in by time. With
    ``warmup_start_ms`` the events of ``[warmup_start, start)`` rebuild the target's entity
    state first, without scoring. The checkpoint follows delivery reports; a second call
    resumes after it, asked with the same range options (``resume=False`` starts over).
    The range is planned on the source first: an empty one creates no target topic and
    writes no checkpoint (``summary.empty``). Messages go to ``echo`` (default: stderr),
    the progress line to stderr.
    """
    say = echo or (lambda m: print(m, file=sys.stderr))
    target = request.target
    started = time.monotonic()
    path = request.checkpoint_path
    prepare_checkpoint_dir(path)
    ckpt: Checkpoint | None = None
    if path.exists() and request.resume:
        ckpt = load_checkpoint(path)
        check_resumable(ckpt, request, path)
        say(f"resuming the replay of {path} (the same range; {ckpt.sent:,} records sent "
            "before)")
    resumed = ckpt is not None
    if ckpt is None:
        job = plan(request)
        if path.exists():
            say(f"restarting: {path} discarded; records it covered will be sent again")
            path.unlink()
        if not job.planned:
            say(f"nothing to replay: the range of {job.event_topic} is empty; no topics "
                f"created in {target.namespace}, no checkpoint written")
            return ReplaySummary(job.event_topic, target.topic(request.replayed_topic),
                                 planned=0, empty=True, complete=True,
                                 seconds=round(time.monotonic() - started, 3))
        _ensure_target(request, job)
        ckpt = new_checkpoint(request, job, int(time.time() * 1000))
        write_checkpoint(path, ckpt)
    else:
        job = job_from_checkpoint(ckpt, request)
        _ensure_target(request, job)
    summary = ReplaySummary(job.event_topic, target.topic(request.replayed_topic),
                            planned=sum(r.size for r in job.streams.values()),
                            resumed=resumed, complete=ckpt.complete, checkpoint=str(path))
    if ckpt.complete:
        say(f"replay already complete ({path}); use --restart to send it again")
        return summary
    if request.warmup_start_ms is not None and not ckpt.warmup_done:
        result = warm_up(request, job, request.warmup_start_ms, say)
        ckpt.warmup_done, ckpt.warmup_entities = True, len(result.states)
        summary.warmup_events, summary.warmup_skipped = result.events, result.skipped
        summary.warmup_entities = len(result.states)
        write_checkpoint(path, ckpt)
    send(request, job, ckpt, path, summary)
    summary.complete = True
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _ensure_target(request: ReplayRequest, job: Job) -> None:
    """The target namespace's topics (created when missing), partitioned like the source."""
    from precog.namespace import ensure_topics

    try:
        # the replay's Kafka timeout (10 s), not setup's 30 s: an unreachable Kafka is
        # one line as soon as in the other commands
        ensure_topics(request.target, request.spec, timeout=TIMEOUT)
    except KafkaException as exc:
        raise kafka_error(request.target, exc) from None
    check_targets(request, job)


def warm_up(request: ReplayRequest, job: Job, warmup_start_ms: int,
            say: Callable[[str], None]) -> WarmupResult:
    """Rebuild entity state from ``[warmup_start, replay start)`` into the target's Redis."""
    from precog.services.feature_store import RedisOnlineStore

    source, target, spec = request.source, request.target, request.spec
    src = job.event_topic
    reader = consumer(source, target)
    try:
        parts = sorted(p for (t, p) in job.streams if t == src)
        begin = offsets_for_time(reader, src, parts, warmup_start_ms)
    except KafkaException as exc:
        raise kafka_error(source, exc) from None
    finally:
        reader.close()
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
        chunk.append((msg.value(), timestamp(msg)))
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
