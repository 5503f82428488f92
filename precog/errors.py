"""The one tree of precog's errors; handlers decide skip-or-raise by class, in one place.

Per-event errors (:class:`EventError` and below) send the event to the dead-letter topic
and the worker goes on; everything else is fatal at startup or for a command.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class PrecogError(Exception):
    """Base of every error precog raises on purpose."""


class ConfigError(PrecogError):
    """Settings, a pipeline spec or a CLI argument is wrong."""


def redacted(url: str) -> str:
    """The URL without credentials, for messages and logs (plain addresses unchanged).

    >>> redacted("rediss://user:secret@cache.example:6380/0")
    'rediss://cache.example:6380/0'
    >>> redacted("https://elastic:pw@es.example:9200")
    'https://es.example:9200'
    >>> redacted("127.0.0.1:19092")
    '127.0.0.1:19092'
    """
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class ServiceUnavailable(PrecogError):
    """A backing service (Kafka, Redis, Elasticsearch) does not answer at its address.

    The address is shown without credentials, wherever it came from:

    >>> str(ServiceUnavailable("Redis", "redis://u:secret@h:1/0", "at redis://u:secret@h:1/0"))
    'Redis is not reachable at redis://h:1/0: at redis://h:1/0'
    """

    def __init__(self, service: str, address: str, detail: str = "") -> None:
        self.service = service
        self.address = redacted(address)
        detail = detail.replace(address, self.address)
        msg = f"{service} is not reachable at {self.address}"
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
