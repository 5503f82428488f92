"""One batch scoring run: input chunks -> validate -> featurize -> score -> output, resumable.

Per chunk (``chunk_size`` input rows): the DLQ's checks (:func:`~precog.validation.check_batch`,
the same reasons), one :meth:`~precog.features_columnar.ColumnarChain.featurize` over the
chunk's valid events chained through the run's entity states (bit-identical to
:meth:`~precog.features.Featurizer.featurize_columns`), one ``predict_proba`` per
model (:func:`~precog.scoring.score_batch`), then the predictions (Parquet or Avro), the
rejects and, optionally, the Elasticsearch documents; the checkpoint moves on only once
all of them are written. A resumed run featurizes the rows of the chunks already written
again without writing them (the entity states of the chunk it resumes at depend on every
earlier row), then writes from there on: each row exactly once.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precog.avro import Codec
from precog.batch_scoring import checkpoint as ckpts
from precog.batch_scoring.chunks import ChunkScorer, reject_line, take_rows
from precog.batch_scoring.sinks import PART, AvroSink, ParquetSink, RejectsSink
from precog.batch_scoring.sources import Chunk, FileSource, TopicRange, TopicSource
from precog.batch_scoring.state import StateStart, write_snapshot
from precog.errors import ConfigError
from precog.features import EntityState, Featurizer
from precog.models import LightGBMRuntime
from precog.prediction_writer import BatchRows
from precog.progress import ProgressLine
from precog.registry.provenance import file_sha256
from precog.scoring import ModelSet
from precog.settings import Settings
from precog.spec import PipelineSpec

OUT_FORMATS = ("parquet", "avro")


def max_model_threads() -> int:
    """The most prediction threads this process may run: the CPUs it may use (OpenMP's own
    bound, which the compiled trees refuse to exceed), or ``OMP_NUM_THREADS`` if lower."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return min(cpus, int(omp)) if omp.isdigit() and int(omp) > 0 else cpus


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
    model_threads: int = 1  # LightGBM's predict threads, 0: all cores (docs/batch-scoring.md)
    resume: bool = True
    max_chunks: int | None = None
    progress: bool = True
    after_chunk: Callable[[int], None] | None = None  # tests: called after each chunk written

    def __post_init__(self) -> None:
        if (self.input is None) == (self.topic is None):
            raise ConfigError("give exactly one of --input FILE and --topic")
        if self.model_threads < 0:
            raise ConfigError(f"--model-threads must be 0 (all cores) or more, not"
                              f" {self.model_threads}")
        if self.model_threads > max_model_threads():
            raise ConfigError(f"--model-threads {self.model_threads}: at most"
                              f" {max_model_threads()} here (the CPUs this process may use;"
                              f" 0 uses them all)")
        if self.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be at least 1, not {self.chunk_size}")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ConfigError(f"--max-chunks must be at least 1, not {self.max_chunks}")
        if self.out_format is not None and self.out_format not in OUT_FORMATS:
            raise ConfigError(f"--format {self.out_format!r}: parquet or avro")
        if (self.state == "snapshot") != (self.snapshot is not None):
            raise ConfigError("--from-snapshot needs its file")
        if self.snapshot is not None and not self.snapshot.is_file():
            raise ConfigError(f"--from-snapshot {self.snapshot}: "
                              + ("a directory, not a snapshot file" if self.snapshot.is_dir()
                                 else "no such file"))
        if self.models is not None:
            _check_models(self.models)
        if self.input is not None and self.input.resolve() in {
                p.resolve() for p in (self.out, self.checkpoint_path, self.rejects_path)}:
            raise ConfigError(f"--out {self.out} would overwrite --input {self.input}")

    @property
    def input_name(self) -> str:
        """The input as the command line names it."""
        if self.input is not None:
            return f"--input {self.input}"
        assert self.topic is not None
        return f"--topic {self.topic.topic}"

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


def _check_models(record: dict[str, Any]) -> None:
    """Refuse a leader among its own challengers, or a challenger given twice.

    >>> ref = {"model_id": "m", "version": 1}
    >>> _check_models({"leader": ref, "challengers": [{"model_id": "m", "version": 2}, ref]})
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: --challenger m:1 is the leader, not a possible challenger
    """
    def name(ref: dict[str, Any]) -> str:
        return f"{ref['model_id']}:{ref['version']}"

    seen = {name(record["leader"])}
    for ref in record.get("challengers", []):
        if name(ref) == name(record["leader"]):
            raise ConfigError(f"--challenger {name(ref)} is the leader, not a possible"
                              " challenger")
        if name(ref) in seen:
            raise ConfigError(f"--challenger {name(ref)} is given twice")
        seen.add(name(ref))


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
    first_reject: str | None = None  # "stage: message" of the first rejects line, if any

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
                                  Featurizer(req.spec).names, salt=req.spec.traffic.salt)
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


def _writable_parent(path: Path, option: str) -> None:
    """Create the directory ``path`` goes into (as ``--state-out`` always did), or say why not."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise ConfigError(f"{option} {path}: cannot create its directory {parent}:"
                          f" {why or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write into {parent} (permission denied)")


def _check_outputs(req: BatchRequest, c: ckpts.Checkpoint) -> None:
    """Refuse to resume when what the checkpoint says is written is not on disk (deleted or
    cut): every Parquet part it counts (with its row count, where recorded), and the Avro and
    rejects files at least as long as it says."""
    def gone(what: str) -> ConfigError:
        chunks = f"{c.chunks} chunk{'s' if c.chunks != 1 else ''}"
        return ConfigError(f"--out {req.out}: {what}, though {req.checkpoint_path.name}"
                           f" records {chunks} ({c.rows:,} rows) written: --restart scores"
                           " the input again")

    def size(path: Path) -> int | None:
        return path.stat().st_size if path.is_file() else None

    if c.chunks and req.format == "parquet":
        import pyarrow.parquet as pq

        if not req.out.is_dir():
            raise gone(f"the Parquet directory {req.out} is missing")
        for i in range(c.chunks):
            part = req.out / PART.format(i)
            if not part.is_file():
                raise gone(f"{part.name} is missing")
            if i < len(c.parts):
                try:
                    rows = int(pq.ParquetFile(part).metadata.num_rows)
                except OSError as exc:  # pyarrow's ArrowInvalid too
                    raise gone(f"{part.name} is not a Parquet file ({exc})") from None
                if rows != c.parts[i]:
                    raise gone(f"{part.name} has {rows:,} rows, not {c.parts[i]:,}")
    if c.chunks and req.format == "avro":
        have = size(req.out)
        if have is None or have < c.out_bytes:
            raise gone("the file is missing" if have is None else
                       f"the file is {have:,} bytes, shorter than the {c.out_bytes:,} written")
    if c.rejects_bytes:
        have = size(req.rejects_path)
        if have is None or have < c.rejects_bytes:
            raise gone(f"{req.rejects_path.name} is missing" if have is None else
                       f"{req.rejects_path.name} is {have:,} bytes, shorter than the"
                       f" {c.rejects_bytes:,} written")


def _prepare(req: BatchRequest) -> ckpts.Checkpoint | None:
    """The checkpoint to resume from (None: a new run); clears the outputs of a restart."""
    _writable_parent(req.out, "--out")
    if req.state_out is not None:
        _writable_parent(req.state_out, "--state-out")
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
        _check_outputs(req, saved)
    ckpt = saved or ckpts.Checkpoint(run=run_info)
    summary = _summary(req, ckpt, started, models, resumed_at=ckpt.chunks)
    if ckpt.complete:
        return summary
    total = source.total()  # reads a file's blocks: a truncated one fails before any output
    from precog.registry.provenance import code_version

    # the namespace the predictions belong to: where they are indexed, if they are (its
    # dashboards filter on it), else the one the run reads
    for m in models.all:  # rows are scored independently: the same scores with any count
        runtime = getattr(m.model, "runtime", None)  # a LoadedModel's (Scorer does not say)
        if isinstance(runtime, LightGBMRuntime):
            runtime.num_threads = req.model_threads
    run = ChunkScorer(req.spec, models,
                      namespace=req.index_namespace or req.settings.namespace,
                      code_version=code_version(req.settings), parquet=req.format == "parquet")
    start = _state_start(req, isinstance(source, FileSource))
    with _lean_gc(req.settings):
        _execute(req, run, source, total, start, ckpt, summary)
    if ckpt.complete and req.state_out is not None:
        states = {e: s for e, s in run.states().items() if s is not None}
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
                        models=models.describe(), reject_stages=dict(c.counts),
                        first_reject=(_first_reject(req.rejects_path)
                                      if c.rejects and not c.predictions else None))


def _first_reject(path: Path) -> str | None:
    """``stage: message`` of the first line of a rejects file (None if it has none)."""
    import orjson

    try:
        with open(path, "rb") as fh:
            line = orjson.loads(fh.readline())
        return f"{line['stage']}: {line['error_message']}".replace("\n", " ")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _execute(req: BatchRequest, run: ChunkScorer, source: Any, total: int, start: StateStart,
             ckpt: ckpts.Checkpoint, summary: BatchSummary) -> None:
    """The chunk loop: replay the chunks already written, then score, write, checkpoint."""
    from precog.replay.runner.job import replace_file

    now = int(ckpt.run["validated_at"])
    rejects = RejectsSink(req.rejects_path)
    avro = AvroSink(req.out, run.codec) if req.format == "avro" else None
    parquet = ParquetSink(req.out) if req.format == "parquet" else None
    try:
        rejects.open(ckpt.rejects_bytes)
        if avro is not None:
            avro.open(ckpt.out_bytes)
        if parquet is not None:
            parquet.open(ckpt.chunks)
    except OSError as exc:  # e.g. --out /proc/x.avro: the directory exists, takes no files
        rejects.close()
        raise ConfigError(f"--out {req.out}: cannot write {exc.filename or req.out}:"
                          f" {exc.strerror or exc}") from None
    indexer = None
    if req.index_namespace is not None:
        from precog.batch_scoring.index import Indexer
        from precog.replay.runner import namespace_settings

        indexer = Indexer(namespace_settings(req.settings, req.index_namespace), req.spec)
    written = 0
    bar = ProgressLine(f"score-batch {req.spec.name}", total, enabled=req.progress)
    # chunk k's predict_proba (C code, without the GIL) runs in a thread while chunk k + 1
    # is read, validated and featurized; chunks are written in order, one at a time
    pool = ThreadPoolExecutor(1, thread_name_prefix="score-batch-predict")
    pending: tuple[Chunk, Future[BatchRows], list[dict[str, Any]]] | None = None

    def commit(chunk: Chunk, scored: Future[BatchRows], lines: list[dict[str, Any]]) -> None:
        nonlocal written
        n_pred, stages = _write_chunk(run, chunk, scored.result(), lines, avro, parquet,
                                      rejects, indexer, ckpt, summary)
        ckpt.chunks, ckpt.rows = chunk.index + 1, ckpt.rows + chunk.rows
        if parquet is not None and len(ckpt.parts) == chunk.index:  # (else: a checkpoint
            ckpt.parts.append(n_pred)  # of before ``parts``, whose rows are not recorded)
        ckpt.predictions += n_pred
        ckpt.rejects += len(lines)
        for stage in stages:
            ckpt.counts[stage] = ckpt.counts.get(stage, 0) + 1
        replace_file(req.checkpoint_path, ckpt.to_json())
        summary.rows_this_run += chunk.rows
        written += 1
        if req.after_chunk is not None:
            req.after_chunk(chunk.index)
        bar.update(chunk.index * req.chunk_size + chunk.rows, note=f"rejects {ckpt.rejects:,}")

    try:
        for chunk in source.chunks(req.chunk_size):
            replaying = chunk.index < ckpt.chunks
            rows, lines = run.score(chunk, now, start, write=not replaying)
            if replaying:
                bar.update(chunk.index * req.chunk_size + chunk.rows, note="replaying state")
                continue
            assert rows is not None
            scored = pool.submit(run.predict, rows)
            if pending is not None:
                commit(*pending)
                if req.max_chunks is not None and written >= req.max_chunks:
                    return
            pending = (chunk, scored, lines)
        if pending is not None:
            commit(*pending)
            if req.max_chunks is not None and written >= req.max_chunks:
                return
        ckpt.complete = True
        replace_file(req.checkpoint_path, ckpt.to_json())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        rejects.close()
        if avro is not None:
            avro.close()
        if indexer is not None:
            indexer.close()


def _write_chunk(run: ChunkScorer, chunk: Chunk, rows: BatchRows,
                 lines: list[dict[str, Any]],
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
                lines.append(reject_line(rows.origins[i], "encode", value, key=None,
                                         payload=None, record=None, now=scored_time))
                continue
            keep.append(i)
            encoded.append(value)
        if len(keep) < len(rows.event_ids):
            rows = take_rows(rows, keep)
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
