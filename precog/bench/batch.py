"""Batch scoring (``precog score-batch``) in process, next to the streaming worker's rate.

The bench's events (the same pool the throughput runs produce to Kafka) are written once
to an Avro container file; then :func:`~precog.batch_scoring.run_batch` scores the file
with the bench's leader and challenger, entity states rebuilt from the input, into Parquet
and into Avro, in chunks of 10,000 (fewer events: a fifth of them, at least 1,000). The
rate, like the worker's (from its first to its last prediction), leaves out the start:
input rows over the time from the end of the first chunk's write to the end of the last
but one's (:func:`steady_rate`: a chunk is written after the next one was read and
featurized, so that window holds as many chunks read, validated and featurized as scored
and written, fsynced per chunk); the whole run's rate, with imports, model loading and the
first chunk, is reported beside it. The worker's rate is the throughput section's precog
median when it ran in the same report, else ``reps`` throughput runs of the worker measured
here.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from precog.bench.report import summarize


def _events_file(lab: Any, n: int) -> Any:
    from precog.avro import Codec
    from precog.history import write_records

    codec = Codec.for_schema(lab.spec.event.schema_name)
    path = lab.work / "batch-events.avro"
    write_records(path, codec, [codec.decode(v) for _, v, _ in lab.pool[:n]])
    return path


def batch_run(lab: Any, path: Any, n: int, fmt: str) -> tuple[float, float]:
    """One run over ``path``: (steady, whole-run) input rows per second."""
    from precog.batch_scoring import BatchRequest, run_batch

    roles = lab.roles(1)
    models = {"revision": roles.revision, "leader": roles.leader.to_record(),
              "challengers": [c.to_record() for c in roles.challengers]}
    out = lab.work / f"batch-out.{fmt}"
    chunk = max(1000, min(10_000, n // 5))
    ends: list[float] = []
    started = time.perf_counter()
    summary = run_batch(BatchRequest(
        settings=lab.template, spec=lab.spec, out=out, input=path, out_format=fmt,
        models=models, chunk_size=chunk, resume=False, progress=False,
        after_chunk=lambda _i: ends.append(time.perf_counter())))
    whole = n / (time.perf_counter() - started)
    if summary.rows != n or summary.predictions != n:
        raise AssertionError(f"batch bench: {summary.reconciliation()} for {n} events")
    for p in (out, out.with_name(out.name + ".rejects.jsonl"),
              out.with_name(out.name + ".checkpoint.json")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return steady_rate(ends, n, chunk, whole), whole


def steady_rate(ends: list[float], n: int, chunk: int, whole: float) -> float:
    """Rows per second between chunk ends, over a window holding as many chunks read and
    featurized as written.

    A chunk is written (``ends``) after the next one was read and featurized (its scores
    are computed meanwhile, in a thread), so from the first end to the last but one the run
    read and featurized chunks 2 .. L and wrote chunks 1 .. L-1: L-1 of each. With fewer
    than 3 chunks: from the first end to the last, else the whole run's rate.

    >>> steady_rate([1.0, 2.0, 3.0, 3.5], 40, 10, 5.0)  # 2 chunks of 10 rows in 2 s
    10.0
    """
    if len(ends) > 2:
        last_rows = n - (len(ends) - 1) * chunk
        return (n - chunk - last_rows) / (ends[-2] - ends[0])
    return (n - chunk) / (ends[-1] - ends[0]) if len(ends) > 1 else whole


def bench_batch(lab: Any, report: dict[str, Any]) -> dict[str, Any]:
    """Batch events/s per process (Parquet and Avro out) and the ratio to the worker's."""
    cfg = lab.config
    n = min(cfg.batch_events, len(lab.pool))
    path = _events_file(lab, n)
    runs = {fmt: [batch_run(lab, path, n, fmt) for _ in range(cfg.reps)]
            for fmt in ("parquet", "avro")}
    rates = {fmt: [steady for steady, _ in r] for fmt, r in runs.items()}
    worker = (report.get("throughput") or {}).get("precog")
    if worker is None:
        worker = summarize([lab.throughput_run("precog", cfg.events)["events_per_s"]
                            for _ in range(cfg.reps)])
    base = float(worker["median"])
    return {
        "events": n,
        "events_per_s": summarize(rates["parquet"]),
        "avro_events_per_s": summarize(rates["avro"]),
        "whole_run_events_per_s": summarize([whole for _, whole in runs["parquet"]]),
        "avro_whole_run_events_per_s": summarize([whole for _, whole in runs["avro"]]),
        "worker_events_per_s": worker,
        "ratio": summarize([r / base for r in rates["parquet"]]),
        "avro_ratio": summarize([r / base for r in rates["avro"]]),
        "worker_from": ("the throughput section's precog median" if "throughput" in report
                        else f"{cfg.reps} worker run(s) of {cfg.events:,} events in this section"),
        "chunk": max(1000, min(10_000, n // 5)),
    }
