"""The demo behind ``./scripts/demo``: the stack, proof of each service, then the pipeline.

Steps (each prints what it does): 1. local stack up, 2. Kafka Avro round trip, 3. Redis
pipeline round trip, 4. Elasticsearch bulk + search (2-4 in a throw-away namespace that is
dropped afterwards), then the pipeline demo of ``precog/pipeline_demo.py`` in its own
namespace (``demo``): history, training, a live worker, drift and garbage, the retrain the
drift triggers, a canary of the best retrained version stepped up and promoted or rolled
back on its evidence, reconciliation, provenance, every model's metrics, alerts, the decision
trail, and the dashboards' report.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

from precog.avro import Codec
from precog.errors import PrecogError
from precog.settings import Settings

Step = Callable[[Settings], str]


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def step_stack(settings: Settings) -> str:
    from precog import stack

    rows = stack.up(settings, echo=lambda m: say(f"  {m}"))
    return ", ".join(f"{r.name} {r.mode}" for r in rows)


def _sample_transaction(i: int) -> dict[str, Any]:
    return {"event_id": f"demo-{i}", "card_id": f"card-{i % 3}", "customer_id": "cust-1",
            "merchant_id": "m-1", "category": "grocery", "amount": 12.5 + i,
            "currency": "EUR", "country": "DE", "channel": "pos",
            "event_time": int(time.time() * 1000)}


def step_kafka(scratch: Settings) -> str:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import NewTopic

    from precog.io import kafka

    codec = Codec.for_schema("transaction")
    topic = scratch.topic("demo-check")
    admin = kafka.admin(scratch)  # keep the handle alive until the future resolves
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    records = [_sample_transaction(i) for i in range(10)]
    t0 = time.monotonic()
    producer = kafka.producer(scratch)
    for rec in records:
        producer.produce(topic, key=rec["card_id"].encode(), value=codec.encode(rec))
    producer.flush(15)
    consumer = kafka.consumer(scratch, scratch.group("demo"), **{"enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(got) < len(records) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got.append(codec.decode(msg.value()))
    consumer.close()
    if got != records:
        raise PrecogError(f"Kafka round trip returned {len(got)} of {len(records)} records")
    ms = (time.monotonic() - t0) * 1000
    return f"{len(records)} Avro {codec.writer.label} records produced and read back " \
           f"from {topic} in {ms:.0f} ms"


def step_redis(scratch: Settings) -> str:
    from precog.io.redis import redis_client

    client = redis_client(scratch, 5.0)
    keys = [scratch.redis_key("demo", str(i)) for i in range(100)]
    t0 = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for i, key in enumerate(keys):
        pipe.set(key, i, ex=300)
    pipe.execute()
    values = client.mget(keys)
    ms = (time.monotonic() - t0) * 1000
    client.close()
    if [int(v) for v in values] != list(range(100)):
        raise PrecogError("Redis returned different values than it was given")
    return f"100 keys written in one pipeline and read in one MGET in {ms:.0f} ms"


def step_elasticsearch(scratch: Settings) -> str:
    from elasticsearch import helpers

    from precog.io.elasticsearch import elasticsearch_client

    index = scratch.index("demo-check")
    docs = [{"_index": index, "_id": r["event_id"], **r}
            for r in (_sample_transaction(i) for i in range(50))]
    t0 = time.monotonic()
    with elasticsearch_client(scratch) as es:  # type: ignore[arg-type]
        helpers.bulk(es, docs, refresh="wait_for")
        found = es.count(index=index, query={"term": {"card_id.keyword": "card-1"}})["count"]
        # GET / (es.info, es.ping) is not part of the integ-test-zip distribution
        nodes = es.nodes.info(filter_path="nodes.*.version")["nodes"]
        version = next(iter(nodes.values()))["version"]
    ms = (time.monotonic() - t0) * 1000
    if found != 17:
        raise PrecogError(f"Elasticsearch search found {found} documents, expected 17")
    return f"Elasticsearch {version}: 50 documents bulk-indexed and searched in {ms:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--namespace", default="demo",
                        help="namespace of the pipeline demo, reset first (default: demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a shorter live stream (about a minute instead of three)")
    parser.add_argument("--services-only", action="store_true",
                        help="only bring the stack up and prove each service")
    args = parser.parse_args(argv)
    try:
        settings = Settings(namespace=args.namespace)
    except ValueError:
        parser.error(f"bad --namespace {args.namespace!r}: lowercase letters, digits, '-', '_'")
    scratch = Settings(namespace="demo" + uuid.uuid4().hex[:8])
    steps: list[tuple[str, Step, Settings]] = [
        ("local stack", step_stack, settings),
        ("kafka", step_kafka, scratch),
        ("redis", step_redis, scratch),
        ("elasticsearch", step_elasticsearch, scratch),
    ]
    results: list[tuple[str, str]] = []
    t0 = time.monotonic()
    try:
        for n, (name, step, s) in enumerate(steps, 1):
            say(f"step {n}/{len(steps)}: {name}")
            results.append((name, step(s)))
            say(f"  ok: {results[-1][1]}")
    except Exception as exc:  # one line naming the step, never a traceback
        say(f"FAILED at {name}: {type(exc).__name__}: {exc}")
        return 2
    finally:
        _drop(scratch)
    say(f"services ({time.monotonic() - t0:.1f}s):")
    for name, outcome in results:
        say(f"  {name:<16} OK  {outcome}")
    ok = True
    if not args.services_only:
        from precog.pipeline_demo import run

        say(f"the pipeline, in namespace {settings.namespace!r}")
        try:
            ok = run(settings, namespace=settings.namespace, quick=args.quick).ok
        except PrecogError as exc:
            say(f"FAILED: {exc}")
            return 2
    say("logs: .venv/bin/precog stack logs [kafka|elasticsearch|redis];"
        " stop: .venv/bin/precog stack down")
    say(f"finished in {time.monotonic() - t0:.0f}s: {'OK' if ok else 'counts do not reconcile'}")
    return 0 if ok else 1


def _drop(scratch: Settings) -> None:
    from precog.namespace import drop_namespace

    try:
        drop_namespace(scratch)
    except Exception as exc:  # a failed cleanup must not hide the demo's own result
        say(f"  (cleanup of {scratch.namespace} failed: {exc})")


if __name__ == "__main__":
    raise SystemExit(main())
