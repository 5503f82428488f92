"""Quix Streams baselines, each run as its own process like the Faust ones (``apps.py``).

``python -m precog.bench.quix_apps passthrough``: consume the events topic and produce every
record unchanged to ``{ns}.predictions`` (bytes in, bytes out, no work).

``python -m precog.bench.quix_apps naive``: the naive job written the natural Quix way: a
value deserializer decodes each record with precog's Avro codec, ``filter`` drops the
records that fail the spec's checks, ``apply`` reads the entity state with one Redis GET,
featurizes, predicts with a single-row ``predict_proba`` per model and writes the state
with one SET (:class:`~precog.bench.naive.NaiveJob`, the same work as the Faust naive
app), and a value serializer encodes each prediction; ``to_topic`` keys it by event id.

Both use Quix's defaults except where the benchmark needs otherwise: the consumer group
``precog-{ns}-bench-quix-{kind}``, ``auto_offset_reset="earliest"`` (the events are
produced before the app starts), ``processing_guarantee="at-least-once"`` (precog's),
no topic creation and no changelog topics (the namespace's topics exist; no Quix state is
used), and a state directory of their own under the worker data directory the bench gives
each process. Quix's producer keeps its defaults (murmur2, idempotent).

Quix produces a record with the timestamp of the record it came from; the benchmark
measures from the output records' timestamps (first to last, docs/benchmarks.md), so both
apps set the output timestamp to the wall clock, the time a worker's producer stamps.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from precog.settings import Settings


def _wall_clock(_value: Any, _key: Any, _timestamp: int, _headers: Any) -> int:
    return int(time.time() * 1000)


def application(settings: Settings, kind: str) -> Any:
    """A Quix Streams ``Application`` on the namespace's broker (module docstring)."""
    try:
        from quixstreams import Application
        from quixstreams.kafka.configuration import ConnectionConfig
    except ImportError:
        raise SystemExit("the Quix Streams baselines need quixstreams:"
                         " pip install 'precog[bench]'") from None

    return Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(settings.kafka.confluent_config()),
        consumer_group=settings.group(f"bench-quix-{kind}"),
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        state_dir=settings.worker.data_dir / "quix-state" / settings.namespace,
        auto_create_topics=False,
        use_changelog_topics=False,
        loglevel="WARNING",
    )


def passthrough(settings: Settings) -> Any:
    """Consume -> produce, no work: the ceiling of a Quix Streams app on this machine."""
    from precog.spec import load_spec

    spec = load_spec(settings.spec)
    app = application(settings, "passthrough")
    raw = {"key_deserializer": "bytes", "value_deserializer": "bytes",
           "key_serializer": "bytes", "value_serializer": "bytes"}
    source = app.topic(settings.topic(spec.event.topic), **raw)
    sink = app.topic(settings.topic("predictions"), **raw)
    app.dataframe(source).set_timestamp(_wall_clock).to_topic(sink)
    return app


def naive(settings: Settings) -> Any:
    """Per-record decode, validate, Redis GET, featurize, predict, Redis SET, encode."""
    from quixstreams import message_context
    from quixstreams.models.serializers import Deserializer, Serializer

    from precog.bench.naive import NaiveJob
    from precog.io.redis import redis_client

    job = NaiveJob(settings, worker="bench-quix-naive")
    redis = redis_client(settings)

    class EventDeserializer(Deserializer):
        def __call__(self, value: bytes, ctx: Any) -> Any:
            return job.codec.decode(value)

    class PredictionSerializer(Serializer):
        def __call__(self, value: Any, ctx: Any) -> bytes:
            return job.out_codec.encode(value)

    def score(record: dict[str, Any]) -> dict[str, Any]:
        ctx = message_context()
        key = job.state_key(record)
        prediction, state = job.score(record, redis.get(key), ctx.topic, ctx.partition,
                                      ctx.offset, int(time.time() * 1000))
        redis.set(key, state, ex=job.ttl)
        return prediction

    app = application(settings, "naive")
    source = app.topic(settings.topic(job.spec.event.topic), key_deserializer="bytes",
                       value_deserializer=EventDeserializer())
    sink = app.topic(settings.topic("predictions"), key_serializer="str",
                     value_serializer=PredictionSerializer())
    sdf = app.dataframe(source)
    sdf = sdf.filter(lambda record: job.valid(record, int(time.time() * 1000)))
    sdf = sdf.apply(score).set_timestamp(_wall_clock)
    sdf.to_topic(sink, key=lambda prediction: prediction["event_id"])
    return app


def main(argv: list[str]) -> None:
    from precog.services.runtime import tune_gc

    settings = Settings()
    kind = argv[0] if argv else ""
    if kind == "passthrough":
        app = passthrough(settings)
    elif kind == "naive":
        app = naive(settings)
    else:
        raise SystemExit("usage: python -m precog.bench.quix_apps passthrough | naive")
    tune_gc(settings)  # the worker's GC tuning, like the Faust baselines (run_worker)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
