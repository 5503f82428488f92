"""Where precog's data is: packaged schemas, Kibana objects and specs, and extra schema dirs.

The ``.avsc`` contracts (``schemas/``), the Kibana saved objects and index templates
(``kibana/``) and the pipeline specs (``pipelines/specs/``) ship in the wheel as package data
of ``precog.schemas``, ``precog.kibana`` and ``precog.pipelines`` (docs/layout.md); every
module finds them here, through :mod:`importlib.resources`, never by walking up from its
own file. A new domain adds schema directories without touching the package: the
``PRECOG_SCHEMA_DIRS`` setting, and ``schema_dirs`` in its spec (relative to the spec file).

>>> (schema_dir() / "prediction.v1.avsc").is_file(), (template_dir() / "models.json").is_file()
(True, True)
>>> (spec_dir() / "transactions.yaml").is_file(), schema_dirs()[0] == schema_dir()
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path

from precog.errors import ConfigError

#: schema directories named by the specs loaded in this process (:func:`add_schema_dirs`)
_spec_schema_dirs: list[Path] = []


@cache  # where the package is does not change; codec lookups ask on every record
def _package_dir(package: str, *parts: str) -> Path:
    found = resources.files(package).joinpath(*parts)
    if not isinstance(found, Path):
        raise ConfigError(f"{package}: precog must be installed as files (not zipped)")
    return found


def schema_dir() -> Path:
    """The packaged Avro contracts (``schemas/`` in a checkout)."""
    return _package_dir("precog.schemas")


def kibana_dir() -> Path:
    """The packaged Kibana saved objects (``kibana/`` in a checkout)."""
    return _package_dir("precog.kibana")


def template_dir() -> Path:
    """The packaged Elasticsearch index templates (``kibana/templates/``)."""
    return kibana_dir() / "templates"


def spec_dir() -> Path:
    """The packaged pipeline specs (``pipelines/specs/``)."""
    return _package_dir("precog.pipelines", "specs")


def add_schema_dirs(dirs: Iterable[Path]) -> None:
    """Search ``dirs`` for schemas too, from now on in this process (a spec's ``schema_dirs``)."""
    for d in dirs:
        if d not in _spec_schema_dirs:
            _spec_schema_dirs.append(d)


def schema_dirs() -> list[Path]:
    """Where schemas are looked up: the packaged ones first, then ``PRECOG_SCHEMA_DIRS``,
    then the directories of the specs loaded so far."""
    from precog.settings import get_settings

    found = [schema_dir()]
    for d in (*get_settings().schema_dirs, *_spec_schema_dirs):
        if d not in found:
            found.append(d)
    return found


def checkout_root() -> Path | None:
    """The checkout precog runs from (``pyproject.toml`` beside the package), None when precog
    is installed from a wheel."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").is_file() else None


def project_root() -> Path:
    """The checkout, else the current directory: the base of a relative stack home and the
    working directory of worker processes."""
    return checkout_root() or Path.cwd()
