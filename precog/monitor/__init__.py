"""Monitoring of a running pipeline: outcome join, online metrics, drift, pipeline health.

Pure core (no Kafka, Faust or Elasticsearch here); the agents in ``services/agents/join.py``
and ``services/agents/monitor.py`` decode records, call these and send what they return.
"""

from precog.monitor.join import JoinCounters, JoinOutput, JoinState
from precog.monitor.metrics import ExactROCAUC, MetricsBook
from precog.monitor.monitor import Monitor, MonitorConfig, TickOutput
from precog.monitor.reference import FeatureReference, Reference

__all__ = [
    "ExactROCAUC",
    "FeatureReference",
    "JoinCounters",
    "JoinOutput",
    "JoinState",
    "MetricsBook",
    "Monitor",
    "MonitorConfig",
    "Reference",
    "TickOutput",
]
