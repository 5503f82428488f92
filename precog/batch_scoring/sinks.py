"""Where a batch run writes, one chunk at a time: predictions (Parquet or Avro) and rejects.

Every sink can be cut back to the end of the last chunk a checkpoint recorded, so a
resumed run writes each row exactly once:

* Parquet: a dataset directory, one ``part-NNNNN.parquet`` per chunk (written to a temp
  name, then renamed); parts at or after the checkpoint's chunk are removed on resume.
  ``pyarrow.parquet.read_table(dir)`` and ``pandas.read_parquet(dir)`` read it whole.
* Avro: one object container file of ``schemas/prediction.v1.avsc``, one block per chunk
  (the compiled prediction writer's bytes, not re-encoded; deflate level 1); on resume the file is
  truncated to the checkpoint's size and appended to.
* Rejects: JSON lines, truncated and appended like the Avro file.

Parquet rows have the prediction record's fields and nesting (``leader`` a struct,
``challengers`` and ``features`` lists of structs, ``provenance`` a struct); enums are
strings, times epoch milliseconds (int64), as precog handles them everywhere.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from precog.avro import Codec
from precog.errors import ConfigError
from precog.prediction_writer import PREDICTION_LABEL, BatchRows
from precog.scoring import ModelSet, prediction_id

PART = "part-{:05d}.parquet"


def _pa() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401  (the sink writes with it)
    except ModuleNotFoundError:
        raise ConfigError("Parquet output needs pyarrow (pip install 'precog[batch]')") from None
    return pa


def arrow_type(avro: Any, pa: Any) -> Any:
    """The Arrow type of an Avro type of the prediction schema (a union is its one non-null
    branch: ``served``, nullable)."""
    if isinstance(avro, list):
        (branch,) = [b for b in avro if b != "null"]
        return arrow_type(branch, pa)
    if isinstance(avro, str):
        return {"string": pa.string(), "long": pa.int64(), "int": pa.int32(),
                "double": pa.float64(), "boolean": pa.bool_()}[avro]
    kind = avro["type"]
    if kind == "record":
        return pa.struct([pa.field(f["name"], arrow_type(f["type"], pa),
                                   nullable=isinstance(f["type"], list))
                          for f in avro["fields"]])
    if kind == "enum":
        return pa.string()
    if kind == "array":
        return pa.list_(pa.field("item", arrow_type(avro["items"], pa), nullable=False))
    return arrow_type(kind, pa)


def _expanded(schema: Any, named: dict[str, Any] | None = None) -> Any:
    """The schema with every reference to a named type replaced by its definition."""
    named = {} if named is None else named
    if isinstance(schema, str):
        return named.get(schema, schema)
    if isinstance(schema, list):
        return [_expanded(s, named) for s in schema]
    out = dict(schema)
    if out.get("type") in ("record", "enum"):
        named[out["name"]] = out
    if "fields" in out:
        out["fields"] = [{**f, "type": _expanded(f["type"], named)} for f in out["fields"]]
    if "items" in out:
        out["items"] = _expanded(out["items"], named)
    if isinstance(out.get("type"), dict | list):
        out["type"] = _expanded(out["type"], named)
    return out


class ParquetRows:
    """Arrow tables of scored chunks, built from the columns (no dict per row).

    ``table`` has exactly the prediction record's fields (the schema is derived from the
    ``.avsc`` and every table is cast to it); its rows equal
    :func:`~precog.scoring.prediction_record` of the same inputs.
    """

    def __init__(self, codec: Codec, models: ModelSet, feature_names: Sequence[str], *,
                 spec_name: str, namespace: str, event_schema: str, code_version: str,
                 worker: str, channel: str = "batch") -> None:
        self.pa = _pa()
        self.channel = channel
        self.schema = self.pa.schema(list(arrow_type(_expanded(codec.schema), self.pa)))
        self.models, self.names = models, list(feature_names)
        self.spec_name, self.namespace, self.event_schema = spec_name, namespace, event_schema
        self.code_version, self.worker = code_version, worker

    def _scores(self, n: int, models: Sequence[Any], scores: Sequence[np.ndarray]) -> Any:
        """One struct per (row, model), row-major: the ModelScore records."""
        pa, k = self.pa, len(models)
        s = (np.stack([np.asarray(x, dtype=np.float64) for x in scores], axis=1).reshape(-1)
             if k else np.empty(0))
        thresholds = np.tile(np.array([float(m.model.threshold) for m in models]), n)
        return pa.StructArray.from_arrays([
            pa.array([m.model.model_id for m in models] * n, pa.string()),
            pa.array(np.tile(np.array([int(m.model.version) for m in models], np.int32), n)),
            pa.array([m.role for m in models] * n, pa.string()),
            pa.array(s, pa.float64()),
            pa.array((s >= thresholds).astype(np.int32)),
            pa.array(thresholds, pa.float64()),
            pa.array([m.model.artifact_sha256 for m in models] * n, pa.string()),
        ], names=["model_id", "version", "role", "score", "label", "threshold",
                  "artifact_sha256"])

    def _served(self, rows: BatchRows, n: int) -> Any:
        """The ``served`` structs: each row's arm (by its bucket) and that arm's model."""
        pa, plan, models = self.pa, self.models.plan, self.models.all
        buckets = rows.bucket_column()
        arms = plan.arms_of(buckets)
        k = np.asarray(plan.model_index, dtype=np.int64)[arms]
        scores = (np.stack([np.asarray(x, dtype=np.float64) for x in rows.scores], axis=1)
                  if n else np.empty((0, len(models))))
        s = scores[np.arange(n), k]
        thresholds = np.array([float(m.model.threshold) for m in models])[k]
        decided_by = pa.StructArray.from_arrays([
            pa.array([models[i].model.model_id for i in k.tolist()], pa.string()),
            pa.array(np.array([int(m.model.version) for m in models], np.int32)[k]),
        ], names=["model_id", "version"])
        return pa.StructArray.from_arrays([
            pa.array([plan.policy] * n, pa.string()),
            pa.array([plan.names[a] for a in arms.tolist()], pa.string()),
            decided_by, pa.array(s, pa.float64()),
            pa.array((s >= thresholds).astype(np.int32)),
            pa.array(buckets.astype(np.int32)),
        ], names=["policy", "arm", "decided_by", "score", "label", "bucket"])

    def table(self, rows: BatchRows, scored_time: int) -> Any:
        pa = self.pa
        n, f = len(rows.event_ids), len(self.names)
        leader, *challengers = self.models.all
        k = len(challengers)
        ages = np.where(np.array(rows.stateful, dtype=bool), np.asarray(rows.gaps_ms)[:, None],
                        0).astype(np.int64) if n else np.empty((0, f), np.int64)
        features = pa.StructArray.from_arrays([
            pa.array(self.names * n, pa.string()),
            pa.array(np.ascontiguousarray(rows.X, dtype=np.float64).reshape(-1)),
            pa.array(ages.reshape(-1)),
        ], names=["name", "value", "age_ms"])

        def listed(values: Any, width: int) -> Any:
            offsets = (np.arange(n + 1) * width).astype(np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), values)

        def const(value: Any, typ: Any) -> Any:
            return pa.array([value] * n, typ)

        provenance = pa.StructArray.from_arrays([
            const(self.namespace, pa.string()), const(self.spec_name, pa.string()),
            const(self.event_schema, pa.string()), const(PREDICTION_LABEL, pa.string()),
            const(self.code_version, pa.string()),
            pa.array([o.topic for o in rows.origins], pa.string()),
            pa.array(np.array([o.partition for o in rows.origins], np.int32)),
            pa.array(np.array([o.offset for o in rows.origins], np.int64)),
            const(self.worker, pa.string()), const(self.channel, pa.string()),
        ], names=["namespace", "spec", "event_schema", "prediction_schema", "code_version",
                  "source_topic", "partition", "offset", "worker", "channel"])
        ids = [str(e) for e in rows.event_ids]
        table = pa.Table.from_arrays([
            pa.array([prediction_id(self.spec_name, e) for e in ids], pa.string()),
            pa.array(ids, pa.string()),
            pa.array([str(e) for e in rows.entity_ids], pa.string()),
            const(self.spec_name, pa.string()),
            pa.array(np.asarray(rows.event_times, dtype=np.int64)),
            pa.array(np.full(n, scored_time, np.int64)),
            self._scores(n, [leader], rows.scores[:1]),
            listed(self._scores(n, challengers, rows.scores[1:]), k),
            listed(features, f),
            provenance,
            self._served(rows, n),
        ], names=self.schema.names)
        return table.cast(self.schema)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ParquetSink:
    """A Parquet dataset directory, one part file per chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, chunks_done: int) -> None:
        """Keep the parts of the first ``chunks_done`` chunks; remove any later or partial one."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path}: Parquet output is a directory, this is a file")
        self.path.mkdir(parents=True, exist_ok=True)
        for p in self.path.iterdir():
            if p.name.endswith(".tmp") or (p.name.startswith("part-") and p.suffix == ".parquet"
                                           and int(p.stem[5:]) >= chunks_done):
                p.unlink()

    def write(self, index: int, table: Any) -> int:
        import pyarrow.parquet as pq

        final = self.path / PART.format(index)
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.path)
        return 0  # nothing to truncate on resume: parts are whole files


class _RawBlock:
    """What ``fastavro``'s ``Writer.write_block`` reads of a block: its records' bytes."""

    def __init__(self, data: bytes, n: int) -> None:
        self.bytes_ = io.BytesIO(data)
        self.num_records = n


class _Appendable:
    """A file cut back to a checkpoint's size, then appended to (and fsynced) per chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def _open(self, size: int) -> None:
        if self.path.exists() and self.path.is_dir():
            raise ConfigError(f"--out {self.path}: is a directory")
        mode = "r+b" if size and self.path.exists() else "w+b"
        self._fh = open(self.path, mode)  # noqa: SIM115 - kept open for the run
        self._fh.truncate(size)
        self._fh.seek(size)

    def _synced(self) -> int:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return int(self._fh.tell())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class AvroSink(_Appendable):
    """An Avro container file of prediction records, one block per chunk."""

    def __init__(self, path: Path, codec: Codec) -> None:
        super().__init__(path)
        self.codec = codec
        self._writer: Any = None

    def open(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (0: a new file with its header)."""
        from fastavro.write import Writer

        self._open(size)
        # deflate level 1: 17 against 40 us per prediction at the default 6, for a file
        # 8% larger (10,000 predictions of about 750 bytes, measured)
        self._writer = Writer(self._fh, self.codec.schema, codec="deflate", compression_level=1)
        self._writer.flush()  # a new file: the header; an existing one: read its header

    def header_size(self) -> int:
        return self._synced()

    def write(self, bodies: Sequence[bytes]) -> int:
        """One block of single-object bodies without their 10-byte header; the new size."""
        if bodies:
            self._writer.write_block(_RawBlock(b"".join(bodies), len(bodies)))
        return self._synced()


class RejectsSink(_Appendable):
    """JSON lines, one rejected input row per line."""

    def open(self, size: int) -> None:
        self._open(size)

    def write(self, lines: Sequence[dict[str, Any]]) -> int:
        for line in lines:
            self._fh.write(orjson.dumps(line, default=str) + b"\n")
        return self._synced()
