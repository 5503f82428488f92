"""What one chunk becomes: scored rows (validate, featurize, score) and reject lines.

:class:`ChunkScorer` holds a run's entity states across chunks (as arrays, in a
:class:`~precog.features_columnar.ColumnarChain`); the run (``job``) writes what it returns.
"""

from __future__ import annotations

import base64
import os
import socket
from dataclasses import replace
from typing import Any

import numpy as np

from precog.avro import Codec
from precog.batch_scoring.sinks import ParquetRows
from precog.batch_scoring.sources import Chunk
from precog.batch_scoring.state import StateStart
from precog.errors import ValidationError
from precog.features import EntityState, FeatureColumns, Featurizer
from precog.features_columnar import ColumnarChain
from precog.prediction_writer import BatchRows, PredictionWriter
from precog.scoring import EventContext, ModelSet, dead_letter, score_batch
from precog.spec import PipelineSpec
from precog.validation import check_batch, failure_reason


def reject_line(origin: EventContext, stage: str, error: BaseException, *,
                key: bytes | None, payload: bytes | None, record: dict[str, Any] | None,
                now: int) -> dict[str, Any]:
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


class ChunkScorer:
    """One run's models, featurizer, entity states and writers; scores chunk after chunk."""

    def __init__(self, spec: PipelineSpec, models: ModelSet, *, namespace: str,
                 code_version: str, parquet: bool) -> None:
        self.spec, self.models = spec, models
        self.featurizer = Featurizer(spec)
        self.event_codec = Codec.for_schema(spec.event.schema_name)
        #: the entities' start states (Redis, a snapshot, or none), read once per entity
        self.working: dict[str, EntityState | None] = {}
        self.chain = ColumnarChain(self.featurizer, self.working)
        context = dict(spec_name=spec.name, namespace=namespace,
                       event_schema=self.event_codec.writer.label, code_version=code_version,
                       worker=f"score-batch@{socket.gethostname()}:{os.getpid()}",
                       channel="batch")
        self.codec = Codec.for_schema("prediction")
        self.writer = PredictionWriter(self.codec, models, self.featurizer.names, **context)
        self.parquet = (ParquetRows(self.codec, models, self.featurizer.names, **context)
                        if parquet else None)

    def states(self) -> dict[str, EntityState | None]:
        """Every entity seen so far and its state now."""
        return self.chain.states()

    def featurize(self, records: list[dict[str, Any]], origins: list[EventContext]
                  ) -> tuple[list[int], FeatureColumns, list[tuple[int, Exception]]]:
        """Features of the chunk in one pass; record by record if one of them breaks it.

        The chain's states move with the rows featurized (a chunk that raises leaves them
        as they were before it is featurized record by record).
        """
        items = [(r, o.partition, o.offset) for r, o in zip(records, origins, strict=True)]
        try:
            return list(range(len(items))), self.chain.featurize(items), []
        except (ArithmeticError, ValueError, TypeError):
            pass
        kept: list[int] = []
        parts: list[FeatureColumns] = []
        failed: list[tuple[int, Exception]] = []
        for i, item in enumerate(items):
            try:
                one = self.chain.featurize([item])
            except (ArithmeticError, ValueError, TypeError) as exc:
                failed.append((i, exc))
                continue
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
        """The chunk's featurized rows (scores to come: :meth:`predict`) and its rejects; the
        entity states move on either way."""
        ev = self.spec.event
        checks = check_batch(self.spec, chunk.records, now)
        rejects = [reject_line(u.origin, "decode", u.error, key=u.key, payload=u.payload,
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
        if not write:
            return None, []
        rejects += [self._reject_row(chunk, valid[i], "featurize", exc, now)
                    for i, exc in failed]
        rejects.sort(key=lambda line: (line["partition"], line["offset"]))  # input order
        records = [records[i] for i in kept]
        entity_ids = [str(r[ev.entity_field]) for r in records]
        rows = BatchRows(
            event_ids=[str(r[ev.id_field]) for r in records],
            entity_ids=entity_ids, buckets=self.models.plan.buckets(entity_ids),
            event_times=np.array([int(r[ev.time_field]) for r in records], dtype=np.int64),
            X=cols.X, gaps_ms=cols.gaps_ms, scores=[],
            origins=[origins[i] for i in kept], stateful=cols.stateful)
        return rows, rejects

    def predict(self, rows: BatchRows) -> BatchRows:
        """``rows`` with their scores: one ``predict_proba`` per model (no state is read)."""
        scores = (score_batch(self.models, rows.X) if len(rows.event_ids)
                  else [np.empty(0) for _ in self.models.all])
        return replace(rows, scores=scores)

    def _reject_row(self, chunk: Chunk, i: int, stage: str, exc: BaseException, now: int
                    ) -> dict[str, Any]:
        return reject_line(chunk.origins[i], stage, exc, key=chunk.keys[i], payload=None,
                       record=chunk.records[i], now=now)


def take_rows(rows: BatchRows, keep: list[int]) -> BatchRows:
    return BatchRows(
        event_ids=[rows.event_ids[i] for i in keep],
        entity_ids=[rows.entity_ids[i] for i in keep],
        event_times=rows.event_times[keep], X=rows.X[keep], gaps_ms=rows.gaps_ms[keep],
        scores=[s[keep] for s in rows.scores], origins=[rows.origins[i] for i in keep],
        stateful=rows.stateful, buckets=rows.bucket_column()[keep])
