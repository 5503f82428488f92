"""One import root: what pyproject installs, where packaged data is read, extra schema dirs."""

from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from precog import resources
from precog.avro import Codec, schema_versions
from precog.errors import SchemaError
from precog.settings import Settings, get_settings
from precog.spec import SPEC_DIR, load_spec

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
WIDGET = {"type": "record", "name": "Widget", "namespace": "test.events",
          "fields": [{"name": "widget_id", "type": "string"}, {"name": "size", "type": "int"}]}


def _folder(package: str) -> Path:
    """The checkout folder of ``package`` under pyproject's package-dir mapping."""
    mapping = PYPROJECT["package-dir"]
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in mapping:
            return ROOT / mapping[head] / Path(*parts[i:])
    return ROOT / Path(*parts)


def test_every_python_package_of_the_checkout_is_listed_and_only_precog_is_a_root():
    listed = set(PYPROJECT["packages"])
    assert {p.split(".")[0] for p in listed} == {"precog"}
    on_disk = set()
    for package in listed:
        base = _folder(package)
        assert (base / "__init__.py").is_file(), package
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            on_disk.add(".".join([package, *rel.parts]))
    assert on_disk == listed


def test_product_code_never_imports_scripts():
    offenders = []
    for folder in ("precog", "services", "pipelines"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                              if n.split(".")[0] in ("scripts", "services", "pipelines")]
    assert offenders == []


def test_packaged_data_is_read_from_the_mapped_folders():
    assert resources.schema_dir() == ROOT / "schemas"
    assert resources.kibana_dir() == ROOT / "kibana"
    assert resources.template_dir() == ROOT / "kibana" / "templates"
    assert resources.spec_dir() == SPEC_DIR == ROOT / "pipelines" / "specs"
    assert resources.checkout_root() == ROOT


@pytest.fixture
def no_extra_dirs(monkeypatch):
    monkeypatch.setattr(resources, "_spec_schema_dirs", [])
    monkeypatch.delenv("PRECOG_SCHEMA_DIRS", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _widget_dir(base: Path, name: str = "widget") -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / f"{name}.v1.avsc").write_text(json.dumps(WIDGET))
    return base


def test_precog_schema_dirs_adds_directories_after_the_packaged_ones(tmp_path, no_extra_dirs):
    a, b = _widget_dir(tmp_path / "a"), tmp_path / "b"
    b.mkdir()
    assert Settings(_env_file=None).schema_dirs == []
    no_extra_dirs.setenv("PRECOG_SCHEMA_DIRS", f"{a}:{b}")
    get_settings.cache_clear()
    assert resources.schema_dirs() == [ROOT / "schemas", a, b]
    codec = Codec.for_schema("widget")
    rec = {"widget_id": "w1", "size": 3}
    assert codec.decode(codec.encode(rec)) == rec
    assert "prediction" in schema_versions() and "widget" not in schema_versions(ROOT / "schemas")


def test_a_spec_names_its_schema_dirs_relative_to_itself(tmp_path, no_extra_dirs):
    _widget_dir(tmp_path / "domain" / "avro")
    raw = yaml.safe_load((SPEC_DIR / "transactions.yaml").read_text())
    spec_path = tmp_path / "domain" / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**raw, "schema_dirs": ["avro"]}))
    spec = load_spec(spec_path)
    assert spec.schema_dirs == [tmp_path / "domain" / "avro"]
    assert Codec.for_schema("widget").writer.path == tmp_path / "domain" / "avro" / "widget.v1.avsc"


def test_a_schema_version_in_two_directories_is_an_error(tmp_path, no_extra_dirs):
    clash = _widget_dir(tmp_path / "clash", name="prediction")
    resources.add_schema_dirs([clash])
    with pytest.raises(SchemaError, match="prediction v1 is both in"):
        schema_versions()
