"""Which simulator a spec names (``simulation.simulator``), and making one."""

from __future__ import annotations

from precog.errors import ConfigError
from precog.settings import get_settings
from precog.simulate.config import SimConfig
from precog.simulate.sensors import SensorSimulator
from precog.simulate.simulator import Simulator
from precog.simulate.transactions import TransactionSimulator
from precog.spec import PipelineSpec, load_spec

_SIMULATORS: dict[str, type[Simulator]] = {
    cls.name: cls for cls in (TransactionSimulator, SensorSimulator)
}


def simulator_class(name: str) -> type[Simulator]:
    """The simulator called ``name`` (a spec's ``simulation.simulator``)."""
    cls = _SIMULATORS.get(name)
    if cls is None:
        raise ConfigError(f"no simulator named {name!r}; known: {', '.join(_SIMULATORS)}")
    return cls


def simulator_and_spec(config: SimConfig, spec: PipelineSpec | None = None
                       ) -> tuple[type[Simulator], PipelineSpec]:
    """Which simulator runs, for which spec: ``config.simulator`` if it names one (on
    ``spec``, else on its packaged spec), else the one ``spec`` names; without either, the
    settings' spec (``PRECOG_SPEC``, as every command without ``--spec``).

    >>> cls, spec = simulator_and_spec(SimConfig(simulator="sensors"))
    >>> cls.__name__, spec.name
    ('SensorSimulator', 'sensors')
    """
    if config.simulator is not None:
        cls = simulator_class(config.simulator)
        return cls, spec or cls.packaged_spec()
    spec = spec or load_spec(get_settings().spec)
    return simulator_class(simulator_name(spec)), spec


def simulator_for(config: SimConfig, spec: PipelineSpec | None = None) -> Simulator:
    """The simulator of :func:`simulator_and_spec`, ready to yield events."""
    cls, for_spec = simulator_and_spec(config, spec)
    return cls(config, for_spec)


def simulator_name(spec: PipelineSpec) -> str:
    """The simulator a spec names (``simulation.simulator``): its events fit the spec's schema.

    >>> from precog.spec import SPEC_DIR
    >>> simulator_name(load_spec(SPEC_DIR / "sensors.yaml"))
    'sensors'
    """
    name = spec.simulation.simulator
    if name is None:
        raise ConfigError(f"spec {spec.name} names no simulator (simulation.simulator); known:"
                          f" {', '.join(_SIMULATORS)}")
    simulator_class(name).check_fits(spec)
    return name
