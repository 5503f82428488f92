"""Benchmark baselines as Faust apps, run as their own process like a worker.

``python -m precog.bench.apps passthrough``: the Faust ceiling: consume the events topic
and produce every record unchanged to ``{ns}.predictions`` (same Faust settings as the
worker, :func:`precog.services.runtime.create_app`; micro-batches like the score agent).

``python -m precog.bench.apps naive [--index]``: the pipeline a first implementation
would write: per event decode, validate, one Redis GET, featurize, a single-row
``predict_proba`` per model, encode, send, one Redis SET; with ``--index`` a second
agent indexes each prediction document with its own Elasticsearch request. The work per
event is the same as precog's (same featurizer, models and records); only the I/O and
call pattern differ.

``python -m precog.bench.apps profile OUT.html [agents]``: a precog worker under
pyinstrument; the profile is written when the worker stops (SIGINT/SIGTERM).

Everything is configured by ``PRECOG_*`` like the worker (:class:`Settings`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import faust

from precog.settings import Settings


def _run(app: faust.App, settings: Settings) -> None:
    """Run ``app`` like the worker does (the loop is installed before the app is built)."""
    from precog.services.runtime import run_worker

    run_worker(app, settings, "warning")


def passthrough(settings: Settings) -> faust.App:
    """Consume -> produce, no work: the ceiling of a Faust worker on this machine."""
    from precog.services.runtime import create_app
    from precog.spec import load_spec

    spec = load_spec(settings.spec)
    app = create_app(settings, app_id=settings.group("bench-passthrough"))
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    source = app.topic(settings.topic(spec.event.topic), **raw)
    sink = app.topic(settings.topic("predictions"), **raw)
    size, within = settings.score.batch_size, settings.score.batch_timeout

    @app.agent(source, name=f"{settings.namespace}-passthrough")
    async def forward(stream: Any) -> None:
        async for events in stream.take_events(size, within=within):
            futures = [await sink.send(key=e.message.key, value=e.message.value)
                       for e in events]
            await asyncio.gather(*futures)

    return app


def naive(settings: Settings, index: bool) -> faust.App:
    """Per-event Redis calls, single-row predictions, one Elasticsearch request per document."""
    from precog.bench.naive import NaiveJob
    from precog.io.redis import async_redis_client
    from precog.services.runtime import create_app, now_ms

    job = NaiveJob(settings, worker="bench-naive")
    app = create_app(settings, app_id=settings.group("bench-naive"))
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    source = app.topic(settings.topic(job.spec.event.topic), **raw)
    sink = app.topic(settings.topic("predictions"), **raw)
    out_codec = job.out_codec
    redis = async_redis_client(settings)  # the workers' client options (auth, TLS CA)

    @app.agent(source, name=f"{settings.namespace}-naive")
    async def score(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            record = job.codec.decode(msg.value)
            if not job.valid(record, now_ms()):
                continue
            key = job.state_key(record)
            prediction, new_state = job.score(record, await redis.get(key), msg.topic,
                                              msg.partition, msg.offset, now_ms())
            await sink.send(key=prediction["event_id"].encode(), value=out_codec.encode(prediction))
            await redis.set(key, new_state, ex=job.ttl)

    if index:
        from precog.io.elasticsearch import async_elasticsearch_client
        from precog.scoring import prediction_documents

        es = async_elasticsearch_client(settings)
        target = settings.index("predictions")

        @app.agent(sink, name=f"{settings.namespace}-naive-index")
        async def index_docs(stream: Any) -> None:
            async for value in stream:
                for doc_id, doc in prediction_documents(out_codec.decode(value), now_ms()):
                    await es.index(index=target, id=doc_id, document=doc)

    return app


def profiled_worker(settings: Settings, out: Path, agents: tuple[str, ...]) -> None:
    """Run a precog worker under pyinstrument; write text and HTML profiles when it stops."""
    from pyinstrument import Profiler

    from precog.namespace import ensure_topics
    from precog.services.runtime import run_worker
    from precog.services.worker import build_runtime

    rt = build_runtime(settings, agents)
    ensure_topics(settings, rt.spec)
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        run_worker(rt.app, settings, "warning")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        profiler.stop()
        out.write_text(profiler.output_html())
        out.with_suffix(".txt").write_text(
            profiler.output_text(unicode=False, color=False, show_all=False)
        )
        root = profiler.last_session.root_frame() if profiler.last_session else None
        out.with_suffix(".json").write_text(json.dumps(profile_summary(root), indent=2))


def profile_summary(root: Any, top: int = 40) -> dict[str, Any]:
    """Self and inclusive time per function (seconds) of a pyinstrument frame tree."""
    own: dict[str, float] = {}
    inclusive: dict[str, float] = {}

    def walk(frame: Any, on_stack: frozenset[str]) -> None:
        name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        children = [c for c in frame.children if not c.is_synthetic]  # "[self]" leaves
        own[name] = own.get(name, 0.0) + frame.time - sum(c.time for c in children)
        if name not in on_stack:  # recursion counted once
            inclusive[name] = inclusive.get(name, 0.0) + frame.time
        for child in children:
            walk(child, on_stack | {name})

    if root is None:
        return {"total_s": 0.0, "self": [], "inclusive": []}
    walk(root, frozenset())

    def ranked(d: dict[str, float]) -> list[dict[str, Any]]:
        best = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [{"function": k, "seconds": round(v, 4), "share": round(v / root.time, 4)}
                for k, v in best]

    return {"total_s": round(root.time, 3), "self": ranked(own), "inclusive": ranked(inclusive)}


def main(argv: list[str]) -> None:
    from precog.services.runtime import install_event_loop

    settings = Settings()
    install_event_loop(settings)  # the worker's loop; its GC tuning comes with run_worker
    kind = argv[0] if argv else ""
    if kind == "passthrough":
        _run(passthrough(settings), settings)
    elif kind == "naive":
        _run(naive(settings, index="--index" in argv[1:]), settings)
    elif kind == "profile" and len(argv) >= 2:
        agents = tuple((argv[2] if len(argv) > 2 else "control,score").split(","))
        profiled_worker(settings, Path(argv[1]), agents)
    else:
        raise SystemExit("usage: python -m precog.bench.apps passthrough | naive [--index]"
                         " | profile OUT.html [agents]")


if __name__ == "__main__":
    main(sys.argv[1:])
