"""Where one stack keeps its files (cache and home), which services it runs, how it reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from precog import resources
from precog.errors import ConfigError
from precog.settings import Settings

#: How the stack reports progress: one line at a time (``print``, ``typer.echo``, a list's
#: ``append`` in tests).
Echo = Callable[[str], None]

PROJECT_ROOT = resources.project_root()
#: Every service of the stack, in start order (``down`` stops them in reverse).
SERVICES = ("kafka", "elasticsearch", "redis", "schema-registry")


def echo_line(msg: str) -> None:
    """The default :data:`Echo`: print and flush (progress shows while a service starts)."""
    print(msg, flush=True)


@dataclass(frozen=True)
class Layout:
    """Where one stack keeps its downloads (cache) and its runtime files (home)."""

    home: Path
    cache: Path
    kafka_version: str
    elasticsearch_version: str
    apicurio_version: str = "2.4.2.Final"

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        home = settings.stack.home.expanduser()
        if not home.is_absolute():
            home = PROJECT_ROOT / home
        return cls(
            home=home,
            cache=settings.stack.cache.expanduser().resolve(),
            kafka_version=settings.stack.kafka_version,
            elasticsearch_version=settings.stack.elasticsearch_version,
            apicurio_version=settings.stack.apicurio_version,
        )

    def dir(self, service: str) -> Path:
        """The service's directory in the stack home."""
        return self.home / service

    def logs(self, service: str) -> Path:
        return self.dir(service) / "logs"

    def pid_file(self, service: str) -> Path:
        return self.home / "run" / f"{service}.pid"

    def stdout_log(self, service: str) -> Path:
        """Where the process's own stdout/stderr go."""
        return self.logs(service) / f"{service}.out"

    @property
    def kafka_libs(self) -> Path:
        return self.cache / f"kafka-{self.kafka_version}" / "libs"

    @property
    def elasticsearch_zip(self) -> Path:
        return self.cache / f"elasticsearch-{self.elasticsearch_version}.zip"

    @property
    def apicurio_build(self) -> Path:
        """The Maven project that builds Apicurio Registry (Quarkus), in the cache."""
        return self.cache / f"apicurio-registry-{self.apicurio_version}"

    @property
    def apicurio_jar(self) -> Path:
        """The runnable jar of the build (Quarkus legacy-jar: its ``lib/`` beside it)."""
        return self.apicurio_build / "target" / "precog-apicurio-registry-1-runner.jar"

    @property
    def elasticsearch_dist(self) -> Path:
        # Extracted into the stack home, not the cache: the unprivileged Elasticsearch user
        # must read it, and the cache usually sits in root's private home.
        es = self.dir("elasticsearch")
        return es / "dist" / f"elasticsearch-{self.elasticsearch_version}"

    @property
    def tls_dir(self) -> Path:
        """Secure stack: the local CA and the server certificate and key (PEM)."""
        return self.home / "tls"

    @property
    def credentials_file(self) -> Path:
        """Secure stack: the generated passwords (JSON, mode 0600)."""
        return self.home / "credentials.json"

    def log_files(self, service: str) -> list[Path]:
        """The log files of a service, main log first."""
        main = {
            "kafka": self.logs("kafka") / "server.log",
            "elasticsearch": self.logs("elasticsearch") / "precog.log",
            "redis": self.logs("redis") / "redis.log",
            "schema-registry": self.stdout_log("schema-registry"),
        }[service]
        if main == self.stdout_log(service):
            return [main]
        return [main, self.stdout_log(service)]

    def marker(self, service: str) -> str:
        """A string only this stack's process of ``service`` has in its command line."""
        return {
            "kafka": str(self.dir("kafka") / "server.properties"),
            "elasticsearch": str(self.dir("elasticsearch")),
            "redis": str(self.dir("redis") / "redis.conf"),
            "schema-registry": str(self.dir("schema-registry") / "data"),
        }[service]


def local_ports(settings: Settings, service: str) -> tuple[int, ...]:
    """The ports the stack runs ``service`` on (``PRECOG_STACK_*_PORT``), main one first."""
    return settings.stack.ports(service)


def parse_services(text: str | None) -> tuple[str, ...]:
    """The services named in a comma-separated list (all when empty), in start order.

    >>> parse_services("redis,kafka")
    ('kafka', 'redis')
    >>> parse_services(None)
    ('kafka', 'elasticsearch', 'redis', 'schema-registry')
    >>> parse_services("kafka,zookeeper")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: unknown service 'zookeeper': one of kafka, elasticsearch, ...
    """
    names = {n.strip() for n in (text or "").split(",") if n.strip()}
    for name in sorted(names):
        one_service(name)
    return tuple(s for s in SERVICES if s in names) or SERVICES


def one_service(name: str) -> str:
    """``name`` if it is a service of the stack, else ConfigError (the one-service helpers)."""
    if name not in SERVICES:
        raise ConfigError(f"unknown service {name!r}: one of {', '.join(SERVICES)}")
    return name
