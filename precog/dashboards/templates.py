"""The index templates in ``kibana/templates``: loading them, and the type each field gets.

>>> sorted(load_templates())  # doctest: +NORMALIZE_WHITESPACE
['alerts', 'decisions', 'metrics', 'models', 'pipeline-health', 'predictions',
 'replay-compare']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from precog import resources

#: Where the index templates and the committed saved objects live (kibana/, package data).
KIBANA_DIR = resources.kibana_dir()
TEMPLATES_DIR = KIBANA_DIR / "templates"


def load_templates(directory: Path = TEMPLATES_DIR) -> dict[str, dict[str, Any]]:
    """The index template bodies by index name (the file stem), ``{ns}`` left in place."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def template_fields(body: Mapping[str, Any]) -> dict[str, str]:
    """Dotted field name -> mapping type of an index template, including text sub-fields.

    >>> template_fields({"template": {"mappings": {"properties": {
    ...     "a": {"type": "keyword"},
    ...     "h": {"properties": {"f1": {"type": "double"}}},
    ...     "m": {"type": "text", "fields": {"keyword": {"type": "keyword"}}}}}}})
    {'a': 'keyword', 'h': 'object', 'h.f1': 'double', 'm': 'text', 'm.keyword': 'keyword'}
    """
    out: dict[str, str] = {}

    def walk(props: Mapping[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            path = prefix + name
            out[path] = spec.get("type", "object")
            if "properties" in spec:
                walk(spec["properties"], path + ".")
            for sub, sub_spec in spec.get("fields", {}).items():
                out[f"{path}.{sub}"] = sub_spec["type"]

    walk(body["template"]["mappings"].get("properties", {}), "")
    return out


def field_type(body: Mapping[str, Any], name: str) -> str | None:
    """The mapping type ``name`` gets in an index from this template: explicit, or from a
    dynamic template whose ``path_match`` covers it; None when the index rejects it.

    >>> body = {"template": {"mappings": {"properties": {"features": {"type": "object"}},
    ...     "dynamic_templates": [{"f": {"path_match": "features.*",
    ...                                  "mapping": {"type": "double"}}}]}}}
    >>> field_type(body, "features.size"), field_type(body, "size")
    ('double', None)
    """
    explicit = template_fields(body).get(name)
    if explicit is not None:
        return explicit
    for entry in body["template"]["mappings"].get("dynamic_templates", []):
        (rule,) = entry.values()
        if "path_match" in rule and fnmatchcase(name, rule["path_match"]):
            return str(rule["mapping"]["type"])
    return None

