"""Static checks of the Kibana saved objects against the index templates (Kibana can't run here).

What Kibana needs to import and render the export, checked without Kibana:

* every NDJSON line parses and has what its type requires (id, type, ``attributes.title``,
  a ``references`` list, ``coreMigrationVersion``/``typeMigrationVersion``; the
  type-specific JSON strings parse; Lens layers, accessors and columns agree);
* every reference resolves to an object inside the export;
* every field a panel, search, filter or control uses exists in the index template behind
  its data view, with a type suitable for its aggregation (date for histograms, numeric
  for averages and sums, keyword/integer/boolean for terms);
* every data view title matches the namespaced index of exactly one template
  (``*-predictions`` matches ``prod-predictions`` and ``parallel-predictions``), is used by
  some panel or control, has a time field unless its index is ``TIMELESS`` (and none if it
  is: the time picker would hide models registered before the range), and, when told which
  indices ``precog setup`` creates, is backed by one of them (else it has no fields until
  the first document: "Field ... was not found");
* what makes a dashboard right on day one: a namespace control with a default selection;
  model series split by model, version and role (never ``model_id`` alone); no aggregate
  of a per-document ratio (a formula over sums instead); pie slices named in words, not a
  0/1 field's raw values; formula columns whose parts exist.

>>> fields_in_kql('role : "leader" and not (label : 1) and message : "a:b"')
['role', 'label', 'message']
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from precog.dashboards.findings import Problem, field_problem
from precog.dashboards.kibana import TYPE_MIGRATION_VERSIONS
from precog.dashboards.meaning import (
    column_problems,
    definition_problems,
    namespace_control_problems,
    pie_problems,
    ratio_problem,
)
from precog.dashboards.model import TIMELESS, Dashboard
from precog.dashboards.templates import TEMPLATES_DIR, load_templates

#: Namespaces every data view title must cover.
NAMESPACES = ("prod", "parallel")
KNOWN_TYPES = ("index-pattern", "lens", "search", "dashboard")
LENS_VIS_TYPES = ("lnsXY", "lnsMetric", "lnsDatatable", "lnsPie", "lnsLegacyMetric")

_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"')
_KQL_FIELD = re.compile(r"(?:^|[\s(])([A-Za-z_@][\w.@-]*)\s*:")


def fields_in_kql(query: str) -> list[str]:
    """The field names a KQL query string filters on (quoted values ignored)."""
    return _KQL_FIELD.findall(_QUOTED.sub('""', query))


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _json_attr(where: str, raw: Any, what: str, problems: list[Problem]) -> Any:
    if not isinstance(raw, str):
        problems.append(Problem(where, f"{what} is missing or not a JSON string"))
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        problems.append(Problem(where, f"{what} is not valid JSON: {exc}"))
        return None


class _Export:
    """The parsed export plus what the checks look up: objects by (type, id), and the
    template behind each data view."""

    def __init__(self, objects: list[dict[str, Any]], templates: Mapping[str, Any],
                 namespaces: Sequence[str], setup_indices: Collection[str] | None = None,
                 namespace: str | None = None) -> None:
        self.objects = objects
        self.templates = templates
        self.namespaces = namespaces
        self.setup_indices = setup_indices
        self.namespace = namespace
        self.by_key = {(o.get("type"), o.get("id")): o for o in objects}
        self.used_views = {r.get("id") for o in objects for r in o.get("references", [])
                           if isinstance(r, dict) and r.get("type") == "index-pattern"}

    def template_for_title(self, title: str) -> list[str]:
        """Template names whose namespaced index the data view title matches, all ns."""
        return [name for name in self.templates
                if all(fnmatchcase(f"{ns}-{name}", title) for ns in self.namespaces)]

    def template_of(self, data_view_id: str) -> tuple[str, Mapping[str, Any]] | None:
        dv = self.by_key.get(("index-pattern", data_view_id))
        if dv is None:
            return None
        names = self.template_for_title(str(dv.get("attributes", {}).get("title", "")))
        if len(names) != 1:
            return None
        return names[0], self.templates[names[0]]


def _where(obj: Mapping[str, Any]) -> str:
    title = obj.get("attributes", {}).get("title") if isinstance(obj.get("attributes"),
                                                                  dict) else None
    return f"{obj.get('type')} {obj.get('id')}" + (f" ({title})" if title else "")


def _check_field(where: str, ex: _Export, dv_id: str, name: str, use: str,
                 problems: list[Problem]) -> None:
    found = ex.template_of(dv_id)
    if found is None:
        return  # reported by the data view / reference checks
    problem = field_problem(where, *found, name, use)
    if problem is not None:
        problems.append(problem)


def _ref(obj: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for r in obj.get("references", []):
        if isinstance(r, dict) and r.get("name") == name:
            return r
    return None


def _check_common(lineno: int, obj: Any, problems: list[Problem]) -> bool:
    where = f"line {lineno}"
    if not isinstance(obj, dict):
        problems.append(Problem(where, "not a JSON object"))
        return False
    where = _where(obj)
    ok = True
    for key in ("id", "type"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            problems.append(Problem(f"line {lineno}", f"missing {key}"))
            ok = False
    if obj.get("type") not in KNOWN_TYPES:
        problems.append(Problem(where, f"unexpected saved-object type {obj.get('type')!r}"))
        ok = False
    attrs = obj.get("attributes")
    if not isinstance(attrs, dict) or not isinstance(attrs.get("title"), str) \
            or not attrs["title"]:
        problems.append(Problem(where, "attributes.title is missing"))
        ok = False
    refs = obj.get("references")
    if not isinstance(refs, list) or not all(
            isinstance(r, dict) and all(isinstance(r.get(k), str) and r[k]
                                        for k in ("name", "type", "id")) for r in refs):
        problems.append(Problem(where, "references must be a list of {name, type, id}"))
        ok = False
    core = obj.get("coreMigrationVersion")
    if not isinstance(core, str) or not _SEMVER.match(core):
        problems.append(Problem(where, "coreMigrationVersion is missing or not x.y.z"))
    tmv = obj.get("typeMigrationVersion")
    if not isinstance(tmv, str) or not _SEMVER.match(tmv):
        problems.append(Problem(where, "typeMigrationVersion is missing or not x.y.z"))
    elif obj.get("type") in TYPE_MIGRATION_VERSIONS and _version_tuple(tmv) > _version_tuple(
            TYPE_MIGRATION_VERSIONS[obj["type"]]):
        problems.append(Problem(where, f"typeMigrationVersion {tmv} is newer than the "
                                       f"{TYPE_MIGRATION_VERSIONS[obj['type']]} this export "
                                       f"targets"))
    return ok


def _check_references(obj: Mapping[str, Any], ex: _Export, problems: list[Problem]) -> None:
    for r in obj.get("references", []):
        if (r["type"], r["id"]) not in ex.by_key:
            problems.append(Problem(_where(obj), f"reference {r['name']!r} -> {r['type']} "
                                                 f"{r['id']} is not in the export"))


def _check_data_view(obj: Mapping[str, Any], ex: _Export, problems: list[Problem]) -> None:
    where, attrs = _where(obj), obj["attributes"]
    names = ex.template_for_title(attrs["title"])
    if len(names) != 1:
        indices = ", ".join(f"{ns}-<index>" for ns in ex.namespaces)
        problems.append(Problem(where, f"title {attrs['title']!r} must match the namespaced "
                                       f"index ({indices}) of exactly one template, "
                                       f"matches {names or 'none'}"))
        return
    index = names[0]
    tf = attrs.get("timeFieldName")
    if index in TIMELESS:
        if tf:
            problems.append(Problem(where, f"timeFieldName {tf!r} on the {index} index: the "
                                           f"time picker hides documents older than the "
                                           f"range (e.g. models registered before it)"))
    elif not tf:
        problems.append(Problem(where, "timeFieldName is missing (time filter impossible)"))
    else:
        _check_field(where, ex, obj["id"], tf, "date_histogram", problems)
    if obj["id"] not in ex.used_views:
        problems.append(Problem(where, "no visualization, search or control uses this data "
                                       "view"))
    if ex.setup_indices is not None and index not in ex.setup_indices:
        problems.append(Problem(where, f"precog setup creates no {index} index: the data "
                                       f"view has no fields until the first document "
                                       f"(Lens: Field ... was not found)"))


def _lens_accessors(vis: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    for holder in [vis, *vis.get("layers", [])]:
        for key in ("xAccessor", "splitAccessor", "metricAccessor", "maxAccessor"):
            if isinstance(holder.get(key), str):
                ids.append(holder[key])
        for key in ("accessors", "primaryGroups", "metrics", "secondaryGroups"):
            ids += [a for a in holder.get(key, []) if isinstance(a, str)]
        ids += [c["columnId"] for c in holder.get("columns", []) if isinstance(c, dict)]
    return ids


def _check_lens(obj: Mapping[str, Any], ex: _Export, problems: list[Problem]) -> None:
    where, attrs = _where(obj), obj["attributes"]
    if attrs.get("visualizationType") not in LENS_VIS_TYPES:
        problems.append(Problem(where, f"unknown visualizationType "
                                       f"{attrs.get('visualizationType')!r}"))
    state = attrs.get("state")
    layers = (state or {}).get("datasourceStates", {}).get("formBased", {}).get("layers")
    if not isinstance(layers, dict) or not layers:
        problems.append(Problem(where, "state.datasourceStates.formBased.layers is missing"))
        return
    all_columns: set[str] = set()
    for layer_id, layer in layers.items():
        ref = _ref(obj, f"indexpattern-datasource-layer-{layer_id}")
        if ref is None or ref["type"] != "index-pattern":
            problems.append(Problem(where, f"layer {layer_id} has no reference "
                                           f"'indexpattern-datasource-layer-{layer_id}'"))
            continue
        columns = layer.get("columns", {})
        all_columns |= set(columns)
        if list(layer.get("columnOrder", [])) != list(columns) and set(
                layer.get("columnOrder", [])) != set(columns):
            problems.append(Problem(where, f"layer {layer_id}: columnOrder does not list "
                                           f"exactly its columns"))
        for cid, col in columns.items():
            src = col.get("sourceField")
            if src and src != "___records___":
                _check_field(where, ex, ref["id"], src, col.get("operationType", "?"),
                             problems)
            queries = [(col.get("filter") or {}).get("query", "")]
            # a filters bucket's named slices are KQL too (the business view's decisions)
            queries += [(q.get("input") or {}).get("query", "") for q in
                        (col.get("params") or {}).get("filters", []) if isinstance(q, dict)]
            for f in (f for q in queries for f in fields_in_kql(q)):
                _check_field(where, ex, ref["id"], f, "filter", problems)
            if cid not in layer.get("columnOrder", []):
                problems.append(Problem(where, f"column {cid} is not in columnOrder"))
        for f in fields_in_kql((state.get("query") or {}).get("query", "")):
            _check_field(where, ex, ref["id"], f, "filter", problems)
        found = ex.template_of(ref["id"])
        if found is not None:
            problems += column_problems(where, found[1], columns,
                                        series=attrs.get("visualizationType") == "lnsXY")
            problems += pie_problems(where, found, state.get("visualization", {}), columns)
    for acc in _lens_accessors(state.get("visualization", {})):
        if acc not in all_columns:
            problems.append(Problem(where, f"visualization uses column {acc!r} that no "
                                           f"layer defines"))


def _check_search(obj: Mapping[str, Any], ex: _Export, problems: list[Problem]) -> None:
    where, attrs = _where(obj), obj["attributes"]
    source = _json_attr(where, attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON"),
                        "kibanaSavedObjectMeta.searchSourceJSON", problems)
    if source is None:
        return
    ref_name = source.get("indexRefName")
    ref = _ref(obj, ref_name) if ref_name else None
    if ref is None:
        problems.append(Problem(where, f"searchSourceJSON.indexRefName {ref_name!r} names no "
                                       f"reference"))
        return
    for c in attrs.get("columns", []):
        _check_field(where, ex, ref["id"], c, "column", problems)
    for s in attrs.get("sort", []):
        _check_field(where, ex, ref["id"], s[0], "sort", problems)
    for f in fields_in_kql((source.get("query") or {}).get("query", "")):
        _check_field(where, ex, ref["id"], f, "filter", problems)


def _panel_data_views(ex: _Export, obj_type: str, obj_id: str) -> list[str]:
    target = ex.by_key.get((obj_type, obj_id))
    if target is None:
        return []
    return [r["id"] for r in target.get("references", []) if r["type"] == "index-pattern"]


def _check_dashboard(obj: Mapping[str, Any], ex: _Export, problems: list[Problem]) -> None:
    where, attrs = _where(obj), obj["attributes"]
    _json_attr(where, attrs.get("optionsJSON"), "optionsJSON", problems)
    _json_attr(where, attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON"),
               "kibanaSavedObjectMeta.searchSourceJSON", problems)
    panels = _json_attr(where, attrs.get("panelsJSON"), "panelsJSON", problems) or []
    panel_views: set[str] = set()
    for p in panels:
        pid = p.get("panelIndex")
        grid = p.get("gridData", {})
        if not pid or not all(isinstance(grid.get(k), int) for k in "xywh"):
            problems.append(Problem(where, f"panel {pid!r} lacks panelIndex or gridData"))
            continue
        if grid["x"] + grid["w"] > 48:
            problems.append(Problem(where, f"panel {pid} is wider than the 48-column grid"))
        ref = _ref(obj, f"{pid}:{p.get('panelRefName')}")
        if ref is None:
            problems.append(Problem(where, f"panel {pid} has no reference "
                                           f"'{pid}:{p.get('panelRefName')}'"))
            continue
        if ref["type"] != p.get("type"):
            problems.append(Problem(where, f"panel {pid} is {p.get('type')} but its "
                                           f"reference is a {ref['type']}"))
        panel_views |= set(_panel_data_views(ex, ref["type"], ref["id"]))
    group = attrs.get("controlGroupInput") or {}
    controls = _json_attr(where, group.get("panelsJSON"), "controlGroupInput.panelsJSON",
                          problems) if group else {}
    problems += namespace_control_problems(where, controls or {}, ex.namespace)
    for cid, control in (controls or {}).items():
        fld = control.get("explicitInput", {}).get("fieldName")
        ref = _ref(obj, f"controlGroup_{cid}:optionsListDataView")
        if ref is None:
            problems.append(Problem(where, f"control {cid} has no data view reference"))
            continue
        _check_field(where, ex, ref["id"], fld, "control", problems)
        for dv in sorted(panel_views):  # the control's filter applies to every panel
            _check_field(where, ex, dv, fld, "control", problems)


_TYPE_CHECKS = {"index-pattern": _check_data_view, "lens": _check_lens,
                "search": _check_search, "dashboard": _check_dashboard}


def check_ndjson(text: str, templates: Mapping[str, Any],
                 namespaces: Sequence[str] = NAMESPACES, *,
                 setup_indices: Collection[str] | None = None,
                 namespace: str | None = None) -> list[Problem]:
    """Every problem found in an NDJSON export, checked against the index templates;
    ``setup_indices``: the indices (template names) ``precog setup`` creates; ``namespace``:
    the namespace the export is for (its namespace controls must select it)."""
    problems: list[Problem] = []
    objects: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(f"line {lineno}", f"not valid JSON: {exc}"))
            continue
        if _check_common(lineno, obj, problems):
            objects.append(obj)
    if not objects:
        problems.append(Problem("export", "no saved objects"))
    ex = _Export(objects, templates, namespaces, setup_indices, namespace)
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        key = (obj["type"], obj["id"])
        if key in seen:
            problems.append(Problem(_where(obj), "duplicate type and id"))
        seen.add(key)
        _check_references(obj, ex, problems)
        _TYPE_CHECKS[obj["type"]](obj, ex, problems)
    return problems


def check_definitions(boards: Iterable[Dashboard], templates: Mapping[str, Any]
                      ) -> list[Problem]:
    """The same field checks on the panel definitions the report runs."""
    problems: list[Problem] = []
    for board in boards:
        for panel in board.panels:
            where = f"panel {panel.id} ({panel.title})"
            body = templates.get(panel.index)
            if body is None:
                problems.append(Problem(where, f"no index template {panel.index!r}"))
                continue
            uses = [*panel.field_uses(), (panel.time_field, "date_histogram")]
            uses += [(c.field, "control") for c in board.controls]
            found = [field_problem(where, panel.index, body, n, use) for n, use in uses]
            found += [ratio_problem(where, n, use) for n, use in uses]
            problems += [p for p in found if p is not None]
            problems += definition_problems(where, panel, body)
        if not any(c.selects_namespace for c in board.controls):
            problems.append(Problem(f"dashboard {board.id} ({board.title})",
                                    "no namespace control: every panel sums all namespaces"))
    return problems


def check_file(path: Path, templates_dir: Path = TEMPLATES_DIR) -> list[Problem]:
    """Check one NDJSON file against the templates in ``templates_dir``."""
    return check_ndjson(path.read_text(), load_templates(templates_dir))
