"""Replay a namespace's historic topic into a production-parallel namespace, and compare them.

The I/O edge of :mod:`precog.replay`: Kafka consumers and producers, the Redis warm-up, the
checkpoint file, Elasticsearch documents of a comparison. Modules:

* :mod:`~precog.replay.runner.run` — :func:`replay` of one :class:`ReplayRequest`;
* :mod:`~precog.replay.runner.job` — the plan: a request's ranges, its checkpoint file,
  where to resume;
* :mod:`~precog.replay.runner.send` — the copy loop into the parallel namespace;
* :mod:`~precog.replay.runner.topics` — reading topics: :func:`read_range`,
  :func:`read_topic`, :func:`count_topic`;
* :mod:`~precog.replay.runner.namespaces` — :func:`namespace_settings`,
  :func:`copy_roles`, :func:`compare_namespaces`.
"""

from precog.replay.request import ReplayRequest, ReplaySummary, checkpoint_path
from precog.replay.runner.namespaces import (
    compare_namespaces,
    copy_roles,
    index_report,
    namespace_settings,
)
from precog.replay.runner.run import replay
from precog.replay.runner.send import ReplayInterrupted
from precog.replay.runner.topics import count_topic, read_range, read_topic

__all__ = [
    "ReplayInterrupted", "ReplayRequest", "ReplaySummary", "checkpoint_path",
    "compare_namespaces", "copy_roles", "count_topic", "index_report", "namespace_settings",
    "read_range", "read_topic", "replay",
]
