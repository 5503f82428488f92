"""One batch scoring run: input chunks -> validate -> featurize -> score -> output, resumable.

Per chunk (``chunk_size`` input rows): the DLQ's checks (:func:`~precog.validation.check_batch`,
the same reasons), one :meth:`~precog.features.Featurizer.featurize_columns` over the
chunk's valid events chained through the run's entity states, one ``predict_proba`` per
model (:func:`~precog.scoring.score_batch`), then the predictions (Parquet or Avro), the
rejects and, optionally, the Elasticsearch documents; the checkpoint moves on only once
all of them are written. A resumed run featurizes the rows of the chunks already written
again without writing them (the entity states of the chunk it resumes at depend on every
earlier row), then writes from there on: each row exactly once.
"""

from __future__ import annotations

import base64
import gc
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from precog.avro import Codec
from precog.batch_scoring import checkpoint as ckpts
from precog.batch_scoring.sinks import AvroSink, ParquetRows, ParquetSink, RejectsSink
from precog.batch_scoring.sources import Chunk, FileSource, TopicRange, TopicSource
from precog.batch_scoring.state import StateStart, file_sha256, write_snapshot
from precog.errors import ConfigError, ValidationError
from precog.features import EntityState, FeatureColumns, Featurizer
from precog.prediction_writer import BatchRows, PredictionWriter
from precog.progress import ProgressLine
from precog.scoring import EventContext, ModelSet, dead_letter, score_batch
from precog.settings import Settings
from precog.spec import PipelineSpec
from precog.validation import check_batch, failure_reason

OUT_FORMATS = ("parquet", "avro")


@dataclass(frozen=True)
class BatchRequest:
    """What ``precog score-batch`` was asked (checked before anything connects)."""

    settings: Settings
    spec: PipelineSpec
    out: Path
    input: Path | None = None
    input_format: str | None = None
    topic: TopicRange | None = None
    out_format: str | None = None  # None: from the suffix of ``out`` (.avro), else parquet
    state: str = "input"
    snapshot: Path | None = None
    state_out: Path | None = None
    models: dict[str, Any] | None = None  # a model-control record; None: the namespace's roles
    index_namespace: str | None = None
    chunk_size: int = 10_000
    resume: bool = True
    max_chunks: int | None = None
    progress: bool = True
    after_chunk: Callable[[int], None] | None = None  # tests: called after each chunk written

    def __post_init__(self) -> None:
        if (self.input is None) == (self.topic is None):
            raise ConfigError("give exactly one of --input FILE and --topic")
        if self.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be at least 1, not {self.chunk_size}")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ConfigError(f"--max-chunks must be at least 1, not {self.max_chunks}")
        if self.out_format is not None and self.out_format not in OUT_FORMATS:
            raise ConfigError(f"--format {self.out_format!r}: parquet or avro")
        if (self.state == "snapshot") != (self.snapshot is not None):
            raise ConfigError("--from-snapshot needs its file")
        if self.input is not None and self.input.resolve() in {
                p.resolve() for p in (self.out, self.checkpoint_path, self.rejects_path)}:
            raise ConfigError(f"--out {self.out} would overwrite --input {self.input}")

    @property
    def format(self) -> str:
        if self.out_format is not None:
            return self.out_format
        return "avro" if self.out.suffix.lower() == ".avro" else "parquet"

    @property
    def checkpoint_path(self) -> Path:
        return self.out.with_name(self.out.name + ".checkpoint.json")

    @property
    def rejects_path(self) -> Path:
        return self.out.with_name(self.out.name + ".rejects.jsonl")


@dataclass
class BatchSummary:
    """What a run did, cumulated over its resumed parts (from the checkpoint)."""

    out: str
    rejects_file: str
    rows: int
    predictions: int
    rejects: int
    chunks: int
    complete: bool
    resumed_at_chunk: int
    seconds: float
    rows_this_run: int = 0
    indexed_documents: int = 0
    models: str = ""
    states_written: int | None = None
    reject_stages: dict[str, int] = field(default_factory=dict)

    def reconciliation(self) -> str:
        ok = "ok" if self.rows == self.predictions + self.rejects else "MISMATCH"
        stages = ", ".join(f"{k} {v:,}" for k, v in sorted(self.reject_stages.items()))
        return (f"rows in {self.rows:,} = predictions {self.predictions:,} + rejects"
                f" {self.rejects:,}{f' ({stages})' if stages else ''}: {ok}")


def _remove(path: Path) -> None:
    """Delete an output of an earlier run: a file, or a directory of Parquet parts only."""
    if path.is_dir():
        other = [p.name for p in path.iterdir()
                 if not (p.name.startswith("part-") and p.name.endswith((".parquet", ".tmp")))]
        if other:
            raise ConfigError(f"--out {path} holds other files than Parquet parts"
                              f" ({', '.join(sorted(other)[:3])}): not deleting it")
        for p in path.iterdir():
            p.unlink()
        path.rmdir()
    elif path.exists():
        path.unlink()


def _reject(origin: EventContext, stage: str, error: BaseException, *, key: bytes | None,
            payload: bytes | None, record: dict[str, Any] | None, now: int) -> dict[str, Any]:
    """A rejects line: the dead letter's fields and reason, and the row as JSON."""
    dl, _ = dead_letter(origin=origin, stage=stage, error=error, key=key, payload=payload,
                        failed_time=now)
    line = {k: dl[k] for k in ("source_topic", "partition", "offset", "stage", "error_class",
                               "error_message", "failed_time")}
    line["key"] = None if key is None else key.decode("utf-8", "backslashreplace")
    line["record"] = record
    line["payload_base64"] = (base64.b64encode(dl["payload"]).decode()
                              if record is None and dl["payload"] is not None else None)
    return line


class _Run:
    """The state of one run: models, featurizer, the entity states, the writers."""

    def __init__(self, req: BatchRequest, models: ModelSet, source: Any) -> None:
        self.req, self.spec, self.models, self.source = req, req.spec, models, source
        self.featurizer = Featurizer(req.spec)
        self.event_codec = Codec.for_schema(req.spec.event.schema_name)
        self.working: dict[str, EntityState | None] = {}
        from precog.registry.provenance import code_version

        # the namespace the predictions belong to: where they are indexed, if they are
        # (its dashboards filter on it), else the one the run reads
        context = dict(spec_name=req.spec.name,
                       namespace=req.index_namespace or req.settings.namespace,
                       event_schema=self.event_codec.writer.label,
                       code_version=code_version(req.settings),
                       worker=f"score-batch@{socket.gethostname()}:{os.getpid()}")
        self.codec = Codec.for_schema("prediction")
        self.writer = PredictionWriter(self.codec, models, self.featurizer.names, **context)
        self.parquet = (ParquetRows(self.codec, models, self.featurizer.names, **context)
                        if req.format == "parquet" else None)

    def featurize(self, records: list[dict[str, Any]], origins: list[EventContext]
                  ) -> tuple[list[int], FeatureColumns, list[tuple[int, Exception]]]:
        """Features of the chunk in one pass; record by record if one of them breaks it."""
        items = [(r, o.partition, o.offset) for r, o in zip(records, origins, strict=True)]
        try:
            cols = self.featurizer.featurize_columns(self.working, items)
            return list(range(len(items))), cols, []
        except (ArithmeticError, ValueError, TypeError):
            pass
        kept: list[int] = []
        parts: list[FeatureColumns] = []
        failed: list[tuple[int, Exception]] = []
        for i, item in enumerate(items):
            try:
                one = self.featurizer.featurize_columns(self.working, [item])
            except (ArithmeticError, ValueError, TypeError) as exc:
                failed.append((i, exc))
                continue
            self.working.update(one.changed)
            kept.append(i)
            parts.append(one)
        n = len(self.featurizer.names)
        return kept, FeatureColumns(
            X=np.vstack([p.X for p in parts]) if parts else np.empty((0, n)),
            gaps_ms=(np.concatenate([p.gaps_ms for p in parts]) if parts
                     else np.empty(0, np.int64)),
            stateful=self.featurizer.stateful, changed={}), failed

    def score(self, chunk: Chunk, now: int, start: StateStart, write: bool
              ) -> tuple[BatchRows | None, list[dict[str, Any]]]:
        """The chunk's scored rows and its rejects; the entity states move on either way."""
        ev = self.spec.event
        checks = check_batch(self.spec, chunk.records, now)
        rejects = [_reject(u.origin, "decode", u.error, key=u.key, payload=u.payload,
                           record=None, now=now) for u in chunk.undecodable] if write else []
        valid = [i for i, failures in enumerate(checks) if not failures]
        if write:
            for i, failures in enumerate(checks):
                if failures:
                    rejects.append(self._reject_row(chunk, i, "validate",
                                                    ValidationError(failure_reason(failures)),
                                                    now))
        records = [chunk.records[i] for i in valid]
        origins = [chunk.origins[i] for i in valid]
        start.fill(self.working, [str(r[ev.entity_field]) for r in records])
        kept, cols, failed = self.featurize(records, origins)
        self.working.update(cols.changed)
        if not write:
            return None, []
        rejects += [self._reject_row(chunk, valid[i], "featurize", exc, now)
                    for i, exc in failed]
        records = [records[i] for i in kept]
        rows = BatchRows(
            event_ids=[str(r[ev.id_field]) for r in records],
            entity_ids=[str(r[ev.entity_field]) for r in records],
            event_times=np.array([int(r[ev.time_field]) for r in records], dtype=np.int64),
            X=cols.X, gaps_ms=cols.gaps_ms,
            scores=(score_batch(self.models, cols.X) if records
                    else [np.empty(0) for _ in self.models.all]),
            origins=[origins[i] for i in kept], stateful=cols.stateful)
        return rows, rejects

    def _reject_row(self, chunk: Chunk, i: int, stage: str, exc: BaseException, now: int
                    ) -> dict[str, Any]:
        return _reject(chunk.origins[i], stage, exc, key=chunk.keys[i], payload=None,
                       record=chunk.records[i], now=now)


def _load_models(req: BatchRequest, record: dict[str, Any] | None) -> ModelSet:
    """The models of a model-control record (the checkpoint's, the request's or the roles')."""
    from precog.registry import ModelRegistry
    from precog.registry.model_set import model_set_from_roles

    if record is None:
        record = req.models
    if record is None:
        from precog.services.model_control import read_roles

        roles = read_roles(req.settings, req.spec.name)
        if roles is None:
            raise ConfigError(f"no model roles for {req.spec.name} in namespace"
                              f" {req.settings.namespace}: run `precog train` or give --leader")
        record = roles.to_record()
    models = model_set_from_roles(ModelRegistry(req.settings.registry_dir), record,
                                  Featurizer(req.spec).names)
    wanted = [(c["model_id"], int(c["version"])) for c in [record["leader"],
                                                           *record["challengers"]]]
    if [m.key for m in models.all] != wanted:
        raise ConfigError(f"models {wanted} could not all be loaded from"
                          f" {req.settings.registry_dir} (see the log)")
    return models


def _models_record(models: ModelSet) -> dict[str, Any]:
    return {"revision": models.revision,
            "leader": {"model_id": models.leader.model.model_id,
                       "version": models.leader.model.version},
            "challengers": [{"model_id": c.model.model_id, "version": c.model.version}
                            for c in models.challengers],
            "sha256": [m.model.artifact_sha256 for m in models.all]}


def _source(req: BatchRequest, saved: dict[str, Any] | None) -> FileSource | TopicSource:
    codec = Codec.for_schema(req.spec.event.schema_name)
    if req.input is not None:
        return FileSource(req.input, codec, req.input_format)
    assert req.topic is not None
    ranges = None
    if saved is not None and "ranges" in saved.get("input", {}):
        ranges = {int(p): (int(r[0]), int(r[1])) for p, r in saved["input"]["ranges"].items()}
    return TopicSource(req.settings, codec, req.topic, ranges)


def _state_start(req: BatchRequest, file_input: bool) -> StateStart:
    store = None
    if req.state == "redis":
        from precog.services.feature_store import RedisOnlineStore

        store = RedisOnlineStore(req.settings, req.spec)
        if not store.has_marker_sync():
            raise ConfigError(f"--from-redis: Redis {store.address} has no feature state for"
                              f" {req.spec.name} in namespace {req.settings.namespace}"
                              f" (no marker {store.marker_key})")
    return StateStart(req.state, snapshot=req.snapshot, store=store,
                      drop_watermarks=file_input)


def _prepare(req: BatchRequest) -> ckpts.Checkpoint | None:
    """The checkpoint to resume from (None: a new run); clears the outputs of a restart."""
    paths = (req.out, req.rejects_path, req.checkpoint_path)
    if not req.resume:
        for p in paths:
            _remove(p)
        return None
    saved = ckpts.load(req.checkpoint_path)
    if saved is None and (req.out.exists() or req.rejects_path.exists()):
        raise ConfigError(f"--out {req.out} exists and has no checkpoint next to it:"
                          " --restart overwrites it")
    return saved


def run_batch(req: BatchRequest) -> BatchSummary:
    """Score the request's input into its output; resume from its checkpoint if there is one."""
    started = time.monotonic()
    saved = _prepare(req)
    source = _source(req, saved.run if saved else None)
    models = _load_models(req, saved.run["models"] if saved and req.models is None else None)
    run_info = {
        "spec": req.spec.name, "namespace": req.settings.namespace, "input": source.identity(),
        "format": req.format, "chunk_size": req.chunk_size, "state": req.state,
        "snapshot_sha256": file_sha256(req.snapshot) if req.snapshot else None,
        "models": _models_record(models), "index_namespace": req.index_namespace,
        "validated_at": saved.run["validated_at"] if saved else int(time.time() * 1000),
    }
    if saved is not None:
        changed = ckpts.differences(saved.run, run_info)
        if changed:
            raise ConfigError(f"{req.checkpoint_path} is from another run (it differs in"
                              f" {', '.join(changed)}): --restart starts over")
    ckpt = saved or ckpts.Checkpoint(run=run_info)
    summary = _summary(req, ckpt, started, models, resumed_at=ckpt.chunks)
    if ckpt.complete:
        return summary
    run = _Run(req, models, source)
    start = _state_start(req, isinstance(source, FileSource))
    with _lean_gc(req.settings):
        _execute(req, run, source, start, ckpt, summary)
    if ckpt.complete and req.state_out is not None:
        states = {e: s for e, s in run.working.items() if s is not None}
        if isinstance(source, FileSource):  # file rows carry no Kafka offsets
            states = {e: EntityState(s.last_time, s.counts, s.sums, s.recent, {})
                      for e, s in states.items()}
        summary.states_written = write_snapshot(req.state_out, states)
    done = _summary(req, ckpt, started, models, resumed_at=summary.resumed_at_chunk)
    done.rows_this_run, done.indexed_documents = summary.rows_this_run, summary.indexed_documents
    done.states_written = summary.states_written
    return done


@contextmanager
def _lean_gc(settings: Settings) -> Iterator[None]:
    """The worker's collector settings (services/runtime.py ``tune_gc``) for the run.

    What is alive at the start (models, modules) is frozen and young passes run every
    ``PRECOG_WORKER_GC_GEN0_THRESHOLD`` allocations: the chunks allocate millions of small
    objects, and the default thresholds walked the heap again and again (featurize 24 ->
    13 us per event in a 20k-event measurement). Restored afterwards (the run may be one
    call in a longer process).
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(settings.worker.gc_gen0_threshold, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _summary(req: BatchRequest, c: ckpts.Checkpoint, started: float, models: ModelSet,
             resumed_at: int) -> BatchSummary:
    return BatchSummary(out=str(req.out), rejects_file=str(req.rejects_path), rows=c.rows,
                        predictions=c.predictions, rejects=c.rejects, chunks=c.chunks,
                        complete=c.complete, resumed_at_chunk=resumed_at,
                        seconds=round(time.monotonic() - started, 3),
                        models=models.describe(), reject_stages=dict(c.counts))


def _execute(req: BatchRequest, run: _Run, source: Any, start: StateStart,
             ckpt: ckpts.Checkpoint, summary: BatchSummary) -> None:
    """The chunk loop: replay the chunks already written, then score, write, checkpoint."""
    from precog.replay.runner.job import replace_file

    now = int(ckpt.run["validated_at"])
    rejects = RejectsSink(req.rejects_path)
    rejects.open(ckpt.rejects_bytes)
    avro = AvroSink(req.out, run.codec) if req.format == "avro" else None
    parquet = ParquetSink(req.out) if req.format == "parquet" else None
    if avro is not None:
        avro.open(ckpt.out_bytes)
    if parquet is not None:
        parquet.open(ckpt.chunks)
    indexer = None
    if req.index_namespace is not None:
        from precog.batch_scoring.index import Indexer
        from precog.replay.runner import namespace_settings

        indexer = Indexer(namespace_settings(req.settings, req.index_namespace), req.spec)
    written = 0
    bar = ProgressLine(f"score-batch {req.spec.name}", source.total(), enabled=req.progress)
    try:
        for chunk in source.chunks(req.chunk_size):
            replaying = chunk.index < ckpt.chunks
            rows, lines = run.score(chunk, now, start, write=not replaying)
            if not replaying:
                assert rows is not None
                n_pred, stages = _write_chunk(run, chunk, rows, lines, avro, parquet, rejects,
                                              indexer, ckpt, summary)
                ckpt.chunks, ckpt.rows = chunk.index + 1, ckpt.rows + chunk.rows
                ckpt.predictions += n_pred
                ckpt.rejects += len(lines)
                for stage in stages:
                    ckpt.counts[stage] = ckpt.counts.get(stage, 0) + 1
                replace_file(req.checkpoint_path, ckpt.to_json())
                summary.rows_this_run += chunk.rows
                written += 1
                if req.after_chunk is not None:
                    req.after_chunk(chunk.index)
            bar.update(chunk.index * req.chunk_size + chunk.rows,
                       note="replaying state" if replaying else f"rejects {ckpt.rejects:,}")
            if req.max_chunks is not None and written >= req.max_chunks:
                return
        ckpt.complete = True
        replace_file(req.checkpoint_path, ckpt.to_json())
    finally:
        bar.close()
        rejects.close()
        if avro is not None:
            avro.close()
        if indexer is not None:
            indexer.close()


def _write_chunk(run: _Run, chunk: Chunk, rows: BatchRows, lines: list[dict[str, Any]],
                 avro: AvroSink | None, parquet: ParquetSink | None, rejects: RejectsSink,
                 indexer: Any, ckpt: ckpts.Checkpoint, summary: BatchSummary
                 ) -> tuple[int, list[str]]:
    """Write one scored chunk everywhere; returns (predictions, the rejects' stages)."""
    scored_time = int(time.time() * 1000)
    encoded: list[bytes] = []
    if avro is not None or indexer is not None:
        keep = []
        for i, value in enumerate(run.writer.encode(rows, scored_time)):
            if isinstance(value, Exception):
                lines.append(_reject(rows.origins[i], "encode", value, key=None, payload=None,
                                     record=None, now=scored_time))
                continue
            keep.append(i)
            encoded.append(value)
        if len(keep) < len(rows.event_ids):
            rows = _take(rows, keep)
    if avro is not None:
        header = len(run.codec.encode_header())
        ckpt.out_bytes = avro.write([v[header:] for v in encoded])
    if parquet is not None:
        assert run.parquet is not None
        parquet.write(chunk.index, run.parquet.table(rows, scored_time))
    if indexer is not None:
        summary.indexed_documents += indexer.write(encoded)
    ckpt.rejects_bytes = rejects.write(lines)
    return len(rows.event_ids), [str(line["stage"]) for line in lines]


def _take(rows: BatchRows, keep: list[int]) -> BatchRows:
    return BatchRows(
        event_ids=[rows.event_ids[i] for i in keep],
        entity_ids=[rows.entity_ids[i] for i in keep],
        event_times=rows.event_times[keep], X=rows.X[keep], gaps_ms=rows.gaps_ms[keep],
        scores=[s[keep] for s in rows.scores], origins=[rows.origins[i] for i in keep],
        stateful=rows.stateful)
