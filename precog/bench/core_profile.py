"""``precog bench --profile``: the core stages before and after, timed and under pyinstrument.

*After* is the score agent's path (:func:`precog.bench.core.core_pass`) plus the index
agent's decode of each prediction by the compiled reader. *Before* is the per-record path
that the batch changes replaced and that still exists in the tree: fastavro decode,
:func:`~precog.validation.check_event` per record, :meth:`Featurizer.featurize` per event
(states chained through a dict), the same one ``predict_proba`` per model per batch, one
:func:`~precog.scoring.prediction_record` dict per event, fastavro encode, and fastavro
decode of each prediction. It is today's code called one record at a time, not the code of
the issue's 145 us/event measurement (that featurizer and validator were rewritten in place).

Both paths run over the same events in interleaved passes (medians of the passes; the
worker's GC tuning, :func:`~precog.bench.core.worker_gc`), then one
more pass of each under pyinstrument, whose text and HTML profiles go to the output
directory. Each pass checks that both paths write the same predictions (all but the
scored time, which each pass stamps).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from precog.bench.core import STAGES, core_models, core_pass, cpu_clock, worker_gc

#: the stages of the before path
BEFORE = ("decode", "validate", "featurize", "score", "build", "encode", "index_decode")
#: what bought each stage's change (the rows of the published table)
BOUGHT = {
    "decode": "compiled event reader (`precog/event_reader.py`) instead of fastavro",
    "validate": "compiled `check_batch` (a short path per spec) instead of `check_event`",
    "featurize": "columnar featurizer (`featurize_columns`: one chain over the batch)",
    "score": "nothing: one `predict_proba` per model per batch on both sides",
    "encode": "compiled prediction writer (no record dict, no fastavro)",
    "index_decode": "compiled prediction reader (index agent)",
}


def before_pass(spec: Any, models: Any, values: list[bytes], batch: int,
                ) -> tuple[dict[str, float], list[bytes]]:
    """Seconds per stage of the per-record path over ``values``, and the predictions."""
    from precog.avro import Codec
    from precog.features import EntityState, Featurizer
    from precog.scoring import EventContext, prediction_record, score_batch
    from precog.validation import check_event

    fz = Featurizer(spec)
    codec = Codec.for_schema(spec.event.schema_name)
    out = Codec.for_schema("prediction")
    ev = spec.event
    spent = dict.fromkeys(BEFORE, 0.0)
    now = int(time.time() * 1000)
    encoded: list[bytes] = []
    for start in range(0, len(values), batch):
        chunk = values[start:start + batch]
        states: dict[str, EntityState | None] = {}  # each batch from empty, like core_pass
        t0 = cpu_clock()
        records = [codec.decode(v) for v in chunk]
        t1 = cpu_clock()
        bad = [f for r in records if (f := check_event(spec, r, now))]
        t2 = cpu_clock()
        vectors = []
        for r in records:
            entity = str(r[ev.entity_field])
            vector, states[entity] = fz.featurize(states.get(entity), r)
            vectors.append(vector)
        t3 = cpu_clock()
        scores = score_batch(models, np.array([v.values for v in vectors], dtype=np.float64))
        t4 = cpu_clock()
        records_out = [
            prediction_record(
                spec_name=spec.name, event_id=str(r[ev.id_field]),
                entity_id=str(r[ev.entity_field]), event_time=int(r[ev.time_field]),
                scored_time=now, models=models, scores=[float(s[i]) for s in scores],
                feature_names=fz.names, values=v.values, ages_ms=v.ages_ms,
                origin=EventContext("bench", 0, start + i), namespace="bench",
                event_schema=codec.writer.label, code_version="bench", worker="bench:0")
            for i, (r, v) in enumerate(zip(records, vectors, strict=True))
        ]
        t5 = cpu_clock()
        wire = [out.encode(p) for p in records_out]
        t6 = cpu_clock()
        for value in wire:
            out.decode(value)
        t7 = cpu_clock()
        if bad:
            raise AssertionError("the core bench's events must be valid")
        encoded += wire
        for stage, a, b in zip(BEFORE, (t0, t1, t2, t3, t4, t5, t6), (t1, t2, t3, t4, t5, t6, t7),
                               strict=True):
            spent[stage] += b - a
    return spent, encoded


def after_pass(spec: Any, models: Any, values: list[bytes], batch: int,
               ) -> tuple[dict[str, float], list[bytes]]:
    """Seconds per stage of the score agent's path and the index agent's decode."""
    from precog.avro import Codec
    from precog.prediction_reader import PredictionReader

    encoded: list[bytes] = []
    spent = core_pass(spec, models, values, batch, reference=False, out=encoded)
    del spent["reference_encode"]  # not timed without ``reference``
    reader = PredictionReader(Codec.for_schema("prediction"))
    t0 = cpu_clock()
    for value in encoded:
        reader.decode(value)
    spent["index_decode"] = cpu_clock() - t0
    return spent, encoded


def _same_predictions(before: list[bytes], after: list[bytes]) -> None:
    """Both paths wrote the same records (the scored time is the only field allowed to
    differ: each pass stamps its own)."""
    from precog.avro import Codec

    out = Codec.for_schema("prediction")
    for a, b in zip(before, after, strict=True):
        x, y = out.decode(a), out.decode(b)
        x.pop("scored_time")
        y.pop("scored_time")
        if x != y:
            raise AssertionError(f"the paths disagree on event {x['event_id']}")


def profile_core(lab: Any, out_dir: Path, stamp: str) -> dict[str, Any]:
    """Timed passes of both paths, then one profiled pass each (files in ``out_dir``)."""
    from precog.errors import ConfigError
    from precog.settings import Settings

    try:
        from pyinstrument import Profiler
    except ImportError:
        raise ConfigError("precog bench --profile needs pyinstrument:"
                          " pip install 'precog[bench]'") from None

    cfg = lab.config
    n = min(cfg.events, len(lab.pool))
    values = [v for _, v, _ in lab.pool[:n]]
    models = core_models(lab)
    batch = Settings().score.batch_size
    passes: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with worker_gc():
        for _ in range(max(cfg.reps, 3)):
            spent_before, wire_before = before_pass(lab.spec, models, values, batch)
            spent_after, wire_after = after_pass(lab.spec, models, values, batch)
            _same_predictions(wire_before, wire_after)
            del wire_before, wire_after
            passes["before"].append(spent_before)
            passes["after"].append(spent_after)
    files: dict[str, str] = {}
    for side, run in (("before", before_pass), ("after", after_pass)):
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        with worker_gc():
            profiler.start()
            run(lab.spec, models, values, batch)
            profiler.stop()
        path = out_dir / f"core-profile-{stamp}-{side}.html"
        path.write_text(profiler.output_html())
        path.with_suffix(".txt").write_text(
            profiler.output_text(unicode=False, color=False, show_all=False))
        files[side] = str(path)
    us = {side: {stage: round(statistics.median(p[stage] for p in runs) / n * 1e6, 2)
                 for stage in runs[0]}
          for side, runs in passes.items()}
    return {"events": n, "batch": batch, "passes": len(passes["before"]), "us_per_event": us,
            "total_before": round(sum(us["before"][s] for s in BEFORE[:-1]), 2),
            "total_after": round(sum(us["after"][s] for s in STAGES), 2), "profiles": files}
