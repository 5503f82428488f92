"""The one tree of precog's errors; handlers decide skip-or-raise by class, in one place.

Per-event errors (:class:`EventError` and below) send the event to the dead-letter topic
and the worker goes on; everything else is fatal at startup or for a command.
"""

from __future__ import annotations


class PrecogError(Exception):
    """Base of every error precog raises on purpose."""


class ConfigError(PrecogError):
    """Settings, a pipeline spec or a CLI argument is wrong."""


class ServiceUnavailable(PrecogError):
    """A backing service (Kafka, Redis, Elasticsearch) does not answer at its address."""

    def __init__(self, service: str, address: str, detail: str = "") -> None:
        self.service = service
        self.address = address
        msg = f"{service} is not reachable at {address}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class StackError(PrecogError):
    """The local stack cannot start: a tool is missing, a port is taken, a service died."""


class SchemaError(PrecogError):
    """An Avro schema is missing, invalid, or an incompatible change."""


class EventError(PrecogError):
    """One event cannot be processed; it goes to the dead-letter topic with this reason."""


class DecodeError(EventError):
    """The bytes are not a record of the expected schema (malformed or wrong schema)."""


class ValidationError(EventError):
    """The record decoded but breaks the pipeline spec (impossible or missing values)."""


class ModelError(PrecogError):
    """A model cannot be registered, found or loaded."""


class ArtifactIntegrityError(ModelError):
    """A model artifact's sha256 does not match the registry: it is refused."""


class UnsafeArtifactError(ModelError):
    """A model artifact is not in a safe format (pickle, joblib, unknown skops types)."""
