"""Batch scoring (``precog score-batch``): files or Kafka ranges through the worker's features
and models, into Parquet or Avro with the prediction record's fields (docs/batch-scoring.md).

* :mod:`~precog.batch_scoring.sources` — events files and Kafka ranges, in fixed chunks;
* :mod:`~precog.batch_scoring.state` — where entity states start (input, Redis, snapshot);
* :mod:`~precog.batch_scoring.sinks` — Parquet parts, the Avro file, the rejects file;
* :mod:`~precog.batch_scoring.checkpoint` — how far a run got, to resume it;
* :mod:`~precog.batch_scoring.chunks` — what one chunk becomes: scored rows and rejects;
* :mod:`~precog.batch_scoring.index` — the documents of the index agent, into Elasticsearch;
* :mod:`~precog.batch_scoring.job` — the run: :func:`run_batch` of a :class:`BatchRequest`.
"""

from precog.batch_scoring.job import BatchRequest, BatchSummary, run_batch
from precog.batch_scoring.sources import TopicRange

__all__ = ["BatchRequest", "BatchSummary", "TopicRange", "run_batch"]
