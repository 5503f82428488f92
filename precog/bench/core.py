"""The score agent's core in process, no I/O: microseconds per event of each stage.

The same stages, in the same order, as ``services/agents/score.py`` runs on one batch:
decode (Avro, by the compiled event reader), validate (the spec's checks), featurize
(entity states chained through the batch, starting empty as in a fresh namespace), score
(one ``predict_proba`` per model)
and encode (the compiled prediction writer). In the same run the *reference* encode path
is timed too: one :func:`~precog.scoring.prediction_record` dict per event, then fastavro,
which is what the agent did before the writer; ``encode_vs_reference`` is their ratio.
Medians over ``reps`` passes over the same events, in CPU time of the process (``cpu_clock``),
with the worker's GC tuning (:func:`worker_gc`).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

STAGES = ("decode", "validate", "featurize", "score", "encode")
#: CPU time of this process: on a shared machine the wall clock also counts the time other
#: processes held the cores (the stages are CPU-bound and run on one thread)
cpu_clock = time.process_time


@contextmanager
def worker_gc() -> Iterator[None]:
    """The worker's GC tuning (:func:`precog.services.runtime.tune_gc`) while the passes run.

    Without it, the bench process (which holds the whole event pool) ran young and old
    collections over everything alive during the passes: featurize, which allocates the
    most, took 20.6-22.4 us/event for 50,000 events against 10.3-11.4 with it.
    """
    from precog.services.runtime import tune_gc
    from precog.settings import Settings

    threshold = gc.get_threshold()
    tune_gc(Settings())
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def core_models(lab: Any) -> Any:
    """The bench's trained leader and challenger, bound to the spec's features."""
    from precog.features import Featurizer
    from precog.registry import ModelRegistry
    from precog.scoring import make_model_set

    registry = ModelRegistry(lab.template.registry_dir)
    roles = lab.roles(1)
    return make_model_set(1, registry.load(roles.leader.model_id, roles.leader.version),
                          [registry.load(c.model_id, c.version) for c in roles.challengers],
                          Featurizer(lab.spec).names)


class CoreParts:
    """What the core's stages run with, built once: the featurizer, the event reader and
    the prediction writer of ``spec`` and ``models``."""

    def __init__(self, spec: Any, models: Any) -> None:
        from precog.avro import Codec
        from precog.event_reader import EventReader
        from precog.features import Featurizer
        from precog.prediction_writer import PredictionWriter

        self.featurizer = Featurizer(spec)
        codec = Codec.for_schema(spec.event.schema_name)
        self.reader = EventReader(codec)
        self.prediction = Codec.for_schema("prediction")
        self.writer = PredictionWriter(
            self.prediction, models, self.featurizer.names, spec_name=spec.name,
            namespace="bench", event_schema=codec.writer.label, code_version="bench",
            worker="bench:0")


def core_pass(spec: Any, models: Any, values: list[bytes], batch: int, reference: bool = True,
              out: list[bytes] | None = None, parts: CoreParts | None = None) -> dict[str, float]:
    """Seconds spent in each stage (and, with ``reference``, the reference encode) over
    ``values``; the encoded predictions are appended to ``out`` when given. ``parts``: built
    for this pass when not given."""
    from precog.prediction_writer import BatchRows
    from precog.scoring import EventContext, score_batch
    from precog.validation import check_batch

    parts = parts or CoreParts(spec, models)
    fz, reader, prediction, writer = parts.featurizer, parts.reader, parts.prediction, parts.writer
    ev = spec.event
    spent = dict.fromkeys((*STAGES, "reference_encode"), 0.0)
    now = int(time.time() * 1000)
    for start in range(0, len(values), batch):
        chunk = values[start:start + batch]
        t0 = cpu_clock()
        records = [reader.decode(v) for v in chunk]
        t1 = cpu_clock()
        bad = [f for f in check_batch(spec, records, now) if f]
        t2 = cpu_clock()
        cols = fz.featurize_columns({}, [(r, 0, start + i) for i, r in enumerate(records)])
        t3 = cpu_clock()
        X = cols.X
        scores = score_batch(models, X)
        t4 = cpu_clock()
        rows = BatchRows(
            gaps_ms=cols.gaps_ms, stateful=cols.stateful,
            event_ids=[str(r[ev.id_field]) for r in records],
            entity_ids=[str(r[ev.entity_field]) for r in records],
            event_times=np.array([int(r[ev.time_field]) for r in records], dtype=np.int64),
            X=X, scores=scores,
            origins=[EventContext("bench", 0, start + i) for i in range(len(records))])
        encoded = writer.encode(rows, now)
        t5 = cpu_clock()
        expected = ([prediction.encode(writer.record(rows, i, scored_time=now,
                                                     feature_names=fz.names))
                     for i in range(len(records))] if reference else encoded)
        t6 = cpu_clock()
        if bad or encoded != expected:
            raise AssertionError("the core bench's events must be valid and the writer exact")
        if out is not None:
            out += [e for e in encoded if isinstance(e, bytes)]
        for stage, a, b in zip((*STAGES, "reference_encode"), (t0, t1, t2, t3, t4, t5),
                               (t1, t2, t3, t4, t5, t6), strict=True):
            spent[stage] += b - a
    return spent


#: the after-idle pass: batches this small, each after this long asleep (an event loop
#: waiting for Kafka's acks or a Redis answer at a moderate rate)
IDLE_BATCH = 20
IDLE_SECONDS = 0.02


def idle_penalty(spec: Any, models: Any, values: list[bytes], batch: int = IDLE_BATCH,
                 idle: float = IDLE_SECONDS, rounds: int = 3) -> dict[str, Any]:
    """CPU per batch of ``batch`` events back to back, against the same batches each after
    ``idle`` s asleep: the machine's cost of waking to a burst, in the same run.

    Each round times the same batches both ways (busy first, then after idle), and the
    medians over the batches of each round are taken, then the median of the rounds. On
    the 2-core VM this was found on, a batch of 20 cost 1.3-1.9 ms of CPU back to back and
    2.6-5.7 ms after a sleep of 1-100 ms; batches of 200 and 1,000 gained the same ~3.5 ms
    (docs/benchmarks.md, round 11). The code is the same both ways: what differs is what
    the CPU kept warm.
    """
    chunks = [values[i:i + batch] for i in range(0, len(values) - batch + 1, batch)]
    if not chunks:
        raise ValueError(f"idle_penalty needs at least {batch} events")

    # built once: building them after each sleep would warm the CPU before the timed stages
    parts = CoreParts(spec, models)

    def per_batch(sleep: float) -> float:
        spent = []
        for chunk in chunks:
            if sleep:
                time.sleep(sleep)
            spent.append(sum(core_pass(spec, models, chunk, batch, reference=False,
                                       parts=parts).values()))
        return statistics.median(spent)

    busy, after = [], []
    for _ in range(rounds):
        busy.append(per_batch(0.0))
        after.append(per_batch(idle))
    b, a = statistics.median(busy), statistics.median(after)
    return {"batch": batch, "idle_s": idle, "batches": len(chunks), "rounds": rounds,
            "busy_ms_per_batch": round(b * 1e3, 3), "after_idle_ms_per_batch": round(a * 1e3, 3),
            "ratio": round(a / b, 2), "penalty_ms": round((a - b) * 1e3, 3)}


def bench_core(lab: Any) -> dict[str, Any]:
    """Per-event microseconds of each stage, medians of ``reps`` passes (docs/benchmarks.md)."""
    from precog.settings import Settings

    cfg = lab.config
    n = min(cfg.events, len(lab.pool))
    values = [v for _, v, _ in lab.pool[:n]]
    models = core_models(lab)
    batch = Settings().score.batch_size
    with worker_gc():
        passes = [core_pass(lab.spec, models, values, batch) for _ in range(max(cfg.reps, 3))]
        idle = idle_penalty(lab.spec, models, values[:min(n, 100 * IDLE_BATCH)])
    us = {stage: statistics.median(p[stage] for p in passes) / n * 1e6
          for stage in (*STAGES, "reference_encode")}
    total = sum(us[s] for s in STAGES)
    return {
        "events": n, "batch": batch, "passes": len(passes),
        "us_per_event": {k: round(v, 2) for k, v in us.items()},
        "total_us_per_event": round(total, 2),
        "reference_total_us_per_event": round(total - us["encode"] + us["reference_encode"], 2),
        "encode_vs_reference": round(us["encode"] / us["reference_encode"], 3),
        "after_idle": idle,
    }
