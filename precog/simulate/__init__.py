"""Event simulator: seeded events of a spec's domain as history files or a live Kafka stream.

Everything is deterministic given :class:`SimConfig` (seed, start time, rates, drift
schedule). The simulator is the one the spec names (``simulation.simulator``,
:func:`simulator_name`); what a domain calls its outcomes, its default history span and
drifting input come from its spec's ``simulation`` too. Modules:

* :mod:`~precog.simulate.config` — :class:`SimConfig`, :class:`SimEvent`, :func:`event_id`;
* :mod:`~precog.simulate.simulator` — the shared generator (:class:`Simulator`): arrivals,
  outcomes, garbage, volume drops, the drift schedule;
* :mod:`~precog.simulate.transactions`, :mod:`~precog.simulate.sensors` — the two domains;
* :mod:`~precog.simulate.catalog` — which simulator a spec names (:func:`simulator_for`);
* :mod:`~precog.simulate.history` — history files (:func:`write_history`);
* :mod:`~precog.simulate.live` — a live stream to Kafka (:func:`produce_live`).

Every valid event gets an outcome (label, outcome time = event time + a lognormal delay;
a few arrive after the spec's label window). Garbage (``garbage_fraction``) replaces an
event by malformed bytes, a record written with another Avro schema, or a record with
impossible values; garbage and volume drops draw from their own random streams, so the
valid events of a seed are the same with or without them.
"""

from precog.simulate.catalog import simulator_and_spec, simulator_for, simulator_name
from precog.simulate.config import (
    DAY,
    DEFAULT_START_MS,
    GARBAGE_KINDS,
    HOUR,
    MINUTE,
    SimConfig,
    SimEvent,
    event_id,
)
from precog.simulate.history import HistorySummary, read_history, write_history
from precog.simulate.live import DeliveryError, LiveSummary, produce_live
from precog.simulate.sensors import SensorSimulator
from precog.simulate.simulator import Simulator
from precog.simulate.transactions import TransactionSimulator

__all__ = [
    "DAY", "DEFAULT_START_MS", "GARBAGE_KINDS", "HOUR", "MINUTE", "DeliveryError",
    "HistorySummary", "LiveSummary", "SensorSimulator", "SimConfig", "SimEvent", "Simulator",
    "TransactionSimulator", "event_id", "produce_live", "read_history", "simulator_and_spec",
    "simulator_for", "simulator_name", "write_history",
]
