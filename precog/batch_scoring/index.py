"""Index a batch run's predictions into Elasticsearch ``{ns}-predictions``, as the index agent does.

The documents are the index agent's: each encoded prediction is read back with the
compiled :class:`~precog.prediction_reader.PredictionReader` and turned into one document
per model by :func:`~precog.scoring.prediction_documents`, with the same deterministic
``_id``. They are written with the Elasticsearch bulk helper as ``create``: a document that
is already there (409, a chunk indexed again after an interruption) counts as written,
as in the agent; any other refusal stops the run before its checkpoint moves on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from precog.avro import Codec
from precog.errors import ConfigError, ServiceUnavailable
from precog.prediction_reader import PredictionReader
from precog.scoring import prediction_documents
from precog.settings import Settings
from precog.spec import PipelineSpec


class Indexer:
    """Bulk ``create`` of prediction documents into one namespace's predictions index."""

    def __init__(self, settings: Settings, spec: PipelineSpec) -> None:
        from precog.io.elasticsearch import elasticsearch_client
        from precog.namespace import apply_index_templates

        self.settings = settings
        self.index = settings.index("predictions")
        self.amount_feature = spec.business.amount_feature
        self.reader = PredictionReader(Codec.for_schema("prediction"))
        apply_index_templates(settings)  # the strict mapping before the first document
        self.es = elasticsearch_client(settings)

    def _actions(self, encoded: Sequence[bytes], indexed_time: int) -> Iterator[dict[str, Any]]:
        for value in encoded:
            prediction = self.reader.decode(value)
            for doc_id, doc in prediction_documents(prediction, indexed_time,
                                                    self.amount_feature):
                yield {"_op_type": "create", "_index": self.index, "_id": doc_id,
                       "_source": doc}

    def write(self, encoded: Sequence[bytes]) -> int:
        """Index the documents of ``encoded`` predictions; returns the documents written."""
        from elasticsearch import TransportError, helpers

        written = 0
        try:
            for ok, item in helpers.streaming_bulk(
                    self.es, self._actions(encoded, int(time.time() * 1000)), chunk_size=500,
                    max_retries=8, initial_backoff=0.5, raise_on_error=False):
                info = next(iter(item.values()))
                if ok or info.get("status") == 409:
                    written += 1
                    continue
                error = info.get("error") or {}
                raise ConfigError(f"{self.index}: document {info.get('_id')} refused:"
                                  f" {error.get('type')}: {error.get('reason')}")
        except TransportError as exc:
            raise ServiceUnavailable("elasticsearch", self.settings.elasticsearch.url,
                                     str(exc)[:200]) from exc
        return written

    def refresh(self) -> None:
        self.es.indices.refresh(index=self.index)

    def close(self) -> None:
        self.es.close()
