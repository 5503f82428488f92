"""Which simulator a spec names (``simulation.simulator``), and making one."""

from __future__ import annotations

from precog.errors import ConfigError
from precog.simulate.config import SimConfig
from precog.simulate.sensors import SensorSimulator
from precog.simulate.simulator import Simulator
from precog.simulate.transactions import TransactionSimulator
from precog.spec import PipelineSpec

_SIMULATORS: dict[str, type[Simulator]] = {
    "transactions": TransactionSimulator,
    "sensors": SensorSimulator,
}


def simulator_class(name: str) -> type[Simulator]:
    cls = _SIMULATORS.get(name)
    if cls is None:
        raise ConfigError(f"no simulator for spec {name!r}; known: {', '.join(_SIMULATORS)}")
    return cls


def simulator_for(config: SimConfig) -> Simulator:
    """The simulator of ``config.spec_name`` (``transactions`` or ``sensors``)."""
    return simulator_class(config.spec_name)(config)


def simulator_name(spec: PipelineSpec) -> str:
    """The simulator a spec names (``simulation.simulator``): its events fit the spec's schema.

    >>> from precog.spec import SPEC_DIR, load_spec
    >>> simulator_name(load_spec(SPEC_DIR / "sensors.yaml"))
    'sensors'
    """
    name = spec.simulation.simulator
    if name is None:
        raise ConfigError(f"spec {spec.name} names no simulator (simulation.simulator); known:"
                          f" {', '.join(_SIMULATORS)}")
    cls = simulator_class(name)
    if cls.schema_name != spec.event.schema_name:
        raise ConfigError(f"spec {spec.name}: simulator {name} writes {cls.schema_name} events,"
                          f" not {spec.event.schema_name}")
    return name
