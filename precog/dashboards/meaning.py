"""Day-one checks: what the panels show, beyond what Kibana needs to import them.

A dashboard that imports can still mislead: every namespace summed together, a model's
versions merged into one line, the minimum of per-window ratios shown as "received /
expected", slices labelled 0 and 1. Each rule here names such a mistake; the checks in
:mod:`precog.dashboards.checks` run them on the export and on the panel definitions.

>>> [str(p) for p in split_problems("x", {"template": {"mappings": {"properties": {
...     "model_id": {"type": "keyword"}, "version": {"type": "integer"}}}}}, {"model_id"})]
["x: split on model_id without version: a model's versions and roles merge into one series"]
>>> ratio_problem("x", "ratio", "min").message.startswith("min of the per-document ratio")
True
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from precog.dashboards.findings import Problem, field_problem
from precog.dashboards.model import NAMESPACE_FIELDS, XY_KINDS, Panel, Terms
from precog.dashboards.templates import field_type

#: Fields a series or row split on ``model_id`` must also split on, when the index has them.
MODEL_SPLIT_FIELDS = (("version", "model_version"), ("role",))
#: A per-document ratio: aggregating it per bucket (min, average...) is not received /
#: expected of the bucket; a formula over the sums is.
_RATIO_FIELD = re.compile(r"(^|[._])ratio$")
_AGGREGATES = frozenset({"min", "max", "average", "avg", "sum", "median", "percentile"})
_FORMULA_FIELDS = re.compile(r"\b(?:sum|average|min|max|median)\(([\w.]+)")


def split_problems(where: str, body: Mapping[str, Any], split_fields: Collection[str]
                    ) -> list[Problem]:
    """A split on ``model_id`` without the version and role fields the index has."""
    if "model_id" not in split_fields:
        return []
    missing = [next(f for f in options if field_type(body, f) is not None)
               for options in MODEL_SPLIT_FIELDS
               if any(field_type(body, f) is not None for f in options)
               and not any(f in split_fields for f in options)]
    if not missing:
        return []
    return [Problem(where, f"split on model_id without {', '.join(missing)}: a model's "
                           f"versions and roles merge into one series")]


def ratio_problem(where: str, name: str, use: str) -> Problem | None:
    if use in _AGGREGATES and _RATIO_FIELD.search(name):
        return Problem(where, f"{use} of the per-document ratio {name!r} is not the ratio "
                              f"of the bucket: divide sums with a formula")
    return None


def column_problems(where: str, body: Mapping[str, Any], columns: Mapping[str, Any], *,
                    series: bool) -> list[Problem]:
    """Splits (of chart ``series``), ratios, filters buckets and formulas of one layer."""
    problems: list[Problem] = []
    split_fields: set[str] = set()
    for cid, col in columns.items():
        op = col.get("operationType")
        params = col.get("params") or {}
        if op == "terms":
            split_fields |= {col.get("sourceField"), *params.get("secondaryFields", [])}
        found = ratio_problem(where, col.get("sourceField") or "", op or "")
        if found is not None:
            problems.append(found)
        if op == "filters":
            for f in params.get("filters", []):
                if not f.get("label"):
                    problems.append(Problem(where, f"column {cid}: a filters bucket has no "
                                                   f"label"))
        for ref in col.get("references", []):
            if ref not in columns:
                problems.append(Problem(where, f"column {cid} references column {ref!r} "
                                               f"that the layer does not define"))
        if op == "formula":
            for fld in _FORMULA_FIELDS.findall(params.get("formula", "")):
                problem = field_problem(where, "formula", body, fld, "sum")
                if problem is not None:
                    problems.append(Problem(where, f"formula of column {cid}: "
                                                   f"{problem.message}"))
    if series:
        problems += split_problems(where, body, split_fields)
    return problems


def pie_problems(where: str, found: tuple[str, Mapping[str, Any]], vis: Mapping[str, Any],
                 columns: Mapping[str, Any]) -> list[Problem]:
    """Pie slices over a number or boolean are labelled 0 and 1: name them instead."""
    problems: list[Problem] = []
    index, body = found
    for layer in vis.get("layers", []) if "shape" in vis else []:
        for cid in layer.get("primaryGroups", []):
            col = columns.get(cid, {})
            es_type = field_type(body, col.get("sourceField") or "")
            if col.get("operationType") == "terms" and es_type not in (None, "keyword"):
                problems.append(Problem(where, f"slices of {col['sourceField']!r} ({es_type} "
                                               f"in the {index} index template) are "
                                               f"labelled with raw values: name them with a "
                                               f"filters bucket"))
    return problems


def namespace_control_problems(where: str, controls: Mapping[str, Any],
                               namespace: str | None) -> list[Problem]:
    """One namespace control, selecting a namespace (``namespace`` when known): with
    none selected every panel sums all namespaces (a replay's doubles the totals)."""
    problems: list[Problem] = []
    inputs = [c.get("explicitInput", {}) for c in controls.values()]
    ns_inputs = [i for i in inputs if i.get("fieldName") in NAMESPACE_FIELDS]
    if not ns_inputs:
        problems.append(Problem(where, "no namespace control: every panel sums all "
                                       "namespaces"))
        return problems
    selected = ns_inputs[0].get("selectedOptions") or []
    if not selected:
        problems.append(Problem(where, f"the {ns_inputs[0].get('fieldName')} control has no "
                                       f"default selection: every panel sums all namespaces"))
    elif namespace is not None and selected != [namespace]:
        problems.append(Problem(where, f"the {ns_inputs[0].get('fieldName')} control selects "
                                       f"{selected}, not the namespace {namespace!r} the "
                                       f"export is for"))
    return problems


def definition_problems(where: str, panel: Panel, body: Mapping[str, Any]) -> list[Problem]:
    """Model splits and pie slices of a panel definition (see the Lens checks)."""
    terms = [b for b in panel.nesting() if isinstance(b, Terms)]
    problems = split_problems(where, body, {f for b in terms for f in b.fields}
                               ) if panel.kind in XY_KINDS else []
    if panel.kind == "pie" and isinstance(panel.x, Terms) and field_type(
            body, panel.x.field) not in (None, "keyword"):
        problems.append(Problem(where, f"slices of {panel.x.field!r} are labelled with raw "
                                       f"values: name them with Filters"))
    return problems
