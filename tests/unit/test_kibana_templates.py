"""The index templates map exactly the fields docs/documents.md (and the Avro contracts) name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from precog import resources
from precog.dashboards import TIME_FIELDS, field_type, load_templates, template_fields

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DATE = {"type": "date", "format": "epoch_millis||strict_date_optional_time"}


def _documented(section: str) -> dict[str, str]:
    """field -> type from the table of one index in docs/documents.md."""
    text = (ROOT / "docs/documents.md").read_text()
    body = text.split(f"## `{{ns}}-{section}`", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("field", "") or set(cells[0]) <= {"-"}:
            continue
        kind = cells[1].split()[0].strip(",:")
        for name in cells[0].split(","):
            out[name.strip()] = kind
    return out


def _avro(name: str) -> dict[str, str]:
    newest = max(resources.schema_dir().glob(f"{name}.v*.avsc"),
                 key=lambda p: int(p.name.split(".v")[1].split(".")[0]))
    schema = json.loads(newest.read_text())
    out = {}
    for f in schema["fields"]:
        t = f["type"]
        t = [x for x in t if x != "null"][0] if isinstance(t, list) else t
        if isinstance(t, dict):
            t = "date" if t.get("logicalType") == "timestamp-millis" else "keyword"
        out[f["name"]] = {"string": "keyword", "int": "integer", "long": "long",
                          "double": "double"}.get(t, t)
    return out


@pytest.fixture(scope="module")
def templates() -> dict:
    return load_templates()


def test_one_template_per_index(templates: dict) -> None:
    assert set(templates) == set(TIME_FIELDS)
    for name, body in templates.items():
        assert body["index_patterns"] == [f"{{ns}}-{name}"]
        assert body["template"]["mappings"]["dynamic"] == "strict"
        assert body["template"]["settings"] == {"number_of_shards": 1, "number_of_replicas": 0}


@pytest.mark.parametrize("index", ["predictions", "models", "pipeline-health"])
def test_documented_tables_are_mapped(templates: dict, index: str) -> None:
    documented = _documented(index)
    mapped = template_fields(templates[index])
    top = {k: v for k, v in mapped.items() if "." not in k}
    assert set(top) == set(documented)
    for name, kind in documented.items():
        assert top[name] == kind, name


@pytest.mark.parametrize("index,schema", [("metrics", "metrics"), ("alerts", "alert")])
def test_avro_backed_indices_match_their_schema(templates: dict, index: str, schema: str
                                                ) -> None:
    mapped = {k: v for k, v in template_fields(templates[index]).items() if "." not in k}
    expected = _avro(schema)
    if index == "alerts":
        expected["message"] = "text"  # full-text searchable, with a .keyword sub-field
    assert mapped == expected


def test_dates_accept_epoch_millis_and_iso(templates: dict) -> None:
    def dates(props: dict) -> list[dict]:
        out = []
        for spec in props.values():
            out += dates(spec.get("properties", {}))
            if spec.get("type") == "date":
                out.append(spec)
        return out

    for body in templates.values():
        found = dates(body["template"]["mappings"]["properties"])
        assert found and all(d == DATE for d in found)


def test_feature_maps_are_dynamic_with_fixed_types(templates: dict) -> None:
    body = templates["predictions"]
    assert field_type(body, "features.anything") == "double"
    assert field_type(body, "feature_ages_ms.anything") == "long"
    assert field_type(body, "unknown_field") is None
    props = body["template"]["mappings"]["properties"]
    assert props["features"]["dynamic"] is True and props["feature_ages_ms"]["dynamic"] is True
    assert template_fields(body)["provenance.offset"] == "long"
    assert template_fields(templates["models"])["holdout.roc_auc"] == "double"


def test_only_core_field_types(templates: dict) -> None:
    core = {"keyword", "text", "date", "integer", "long", "double", "boolean", "object"}
    for body in templates.values():
        assert set(template_fields(body).values()) <= core
    assert not re.search(r"scaled_float|match_only_text|flattened",
                         json.dumps(list(templates.values())))
