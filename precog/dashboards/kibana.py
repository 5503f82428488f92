"""The Kibana renderer: data views, Lens visualizations, saved searches, dashboards, NDJSON.

Every object has a stable id (``precog-…``), so re-importing the export overwrites.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from precog.dashboards.catalog import all_panels, dashboards
from precog.dashboards.model import (
    TIME_FIELDS,
    TIMELESS,
    XY_KINDS,
    Bucket,
    Dashboard,
    DateHistogram,
    Exists,
    Filter,
    Filters,
    Histogram,
    Metric,
    Not,
    Panel,
    bucket_name,
)
from precog.dashboards.templates import KIBANA_DIR, TEMPLATES_DIR, field_type, load_templates
from precog.spec import BusinessSpec

NDJSON_PATH = KIBANA_DIR / "saved_objects.ndjson"

#: Kibana the export targets (matches the pinned Elasticsearch 8.15.5).
KIBANA_VERSION = "8.15.5"
#: The oldest Kibana that imports the export (docs/kibana.md, "Supported Kibana versions").
MIN_KIBANA_VERSION = "8.14.0"
#: The namespace an export is made for when none is given (its controls select it).
DEFAULT_NAMESPACE = "prod"
CORE_MIGRATION_VERSION = "8.8.0"
#: typeMigrationVersion written per saved-object type: each is a migration version Kibana
#: 8.15 knows for the type, so the import runs any later migrations itself.
TYPE_MIGRATION_VERSIONS: dict[str, str] = {
    "index-pattern": "8.0.0",
    "search": "8.0.0",
    "lens": "8.9.0",
    "dashboard": "8.7.0",
}


def _kql_one(f: Filter) -> str:
    if isinstance(f, Not):
        return f"not ({_kql_one(f.inner)})"
    if isinstance(f, Exists):
        return f"{f.field} : *"
    if isinstance(f.value, bool):
        return f"{f.field} : {str(f.value).lower()}"
    if isinstance(f.value, int):
        return f"{f.field} : {f.value}"
    return f'{f.field} : "{f.value}"'


def kql(filters: Iterable[Filter]) -> str:
    """The filters as one KQL query string, joined with ``and`` (empty for no filters).

    >>> from precog.dashboards.model import Is
    >>> kql([Is("kind", "volume"), Exists("expected"), Not(Is("outlier", True))])
    'kind : "volume" and expected : * and not (outlier : true)'
    >>> kql([])
    ''
    """
    return " and ".join(_kql_one(f) for f in filters)


_LENS_OPS = {"count": "count", "avg": "average", "sum": "sum", "min": "min", "max": "max",
             "percentile": "percentile"}
_DATA_TYPES = {"keyword": "string", "text": "string", "boolean": "boolean", "date": "date"}


def _data_type(es_type: str | None) -> str:
    return _DATA_TYPES.get(es_type or "", "number")


def data_view_id(index: str) -> str:
    """Saved-object id of the data view over ``*-<index>``."""
    return f"precog-dv-{index}"


def _meta(obj_type: str) -> dict[str, Any]:
    return {"coreMigrationVersion": CORE_MIGRATION_VERSION,
            "typeMigrationVersion": TYPE_MIGRATION_VERSIONS[obj_type], "managed": False}


def data_view(index: str) -> dict[str, Any]:
    """The data view over one index across namespaces (title ``*-<index>``); a ``TIMELESS``
    index's has no time field, so the time picker never hides its documents."""
    attributes = {
        "title": f"*-{index}", "name": f"precog {index} (all namespaces)",
        "allowNoIndex": True, "fields": "[]",
        "fieldFormatMap": "{}", "runtimeFieldMap": "{}", "sourceFilters": "[]",
        "typeMeta": "{}", "fieldAttrs": "{}",
    }
    if index not in TIMELESS:
        attributes["timeFieldName"] = TIME_FIELDS[index]
    return {"id": data_view_id(index), "type": "index-pattern", "attributes": attributes,
            "references": [], **_meta("index-pattern")}


def _bucket_column(b: Bucket, order_by: str | None, types: Mapping[str, Any]) -> dict:
    if isinstance(b, DateHistogram):
        return {"label": b.field, "dataType": "date", "operationType": "date_histogram",
                "sourceField": b.field, "isBucketed": True, "scale": "interval",
                "params": {"interval": "auto", "includeEmptyRows": True,
                           "dropPartials": False}}
    if isinstance(b, Histogram):
        bars = round((b.high - b.low) / b.interval)
        return {"label": b.field, "dataType": "number", "operationType": "range",
                "sourceField": b.field, "isBucketed": True, "scale": "interval",
                "params": {"type": "histogram", "maxBars": bars, "includeEmptyRows": True,
                           "ranges": [{"from": b.low, "to": b.high, "label": ""}]}}
    if isinstance(b, Filters):
        return {"label": b.label, "customLabel": True, "dataType": "string",
                "operationType": "filters", "isBucketed": True, "scale": "ordinal",
                "params": {"filters": [{"input": {"query": kql([f]), "language": "kuery"},
                                        "label": name} for name, f in b.named]}}
    order = ({"type": "column", "columnId": order_by} if order_by
             else {"type": "alphabetical", "fallback": True})
    params: dict[str, Any] = {"size": b.size, "orderBy": order, "orderDirection": "desc",
                              "otherBucket": True, "missingBucket": False,
                              "parentFormat": {"id": "multi_terms" if b.also else "terms"}}
    if b.also:
        params["secondaryFields"] = list(b.also)
    return {"label": bucket_name(b), "customLabel": bool(b.label),
            "dataType": _data_type(field_type(types, b.field)), "operationType": "terms",
            "sourceField": b.field, "isBucketed": True, "scale": "ordinal", "params": params}


def _ratio_columns(cid: str, m: Metric) -> dict[str, dict[str, Any]]:
    """A Lens formula ``sum(a) / sum(b)`` as Lens persists it: the formula column, its two
    sums and the math column dividing them (``<cid>X0``, ``<cid>X1``, ``<cid>X2``)."""
    formula = f"sum({m.field}) / sum({m.denominator})"
    parts = [f"{cid}X0", f"{cid}X1"]
    where = {"filter": {"query": kql(m.filters), "language": "kuery"}} if m.filters else {}
    base = {"customLabel": True, "dataType": "number", "isBucketed": False, "scale": "ratio"}
    cols: dict[str, dict[str, Any]] = {
        cid: {**base, "label": m.name, "operationType": "formula",
              "params": {"formula": formula, "isFormulaBroken": False},
              "references": [f"{cid}X2"], **where}}
    for part, fld in zip(parts, (m.field, m.denominator), strict=True):
        cols[part] = {**base, "label": f"Part of {m.name}", "operationType": "sum",
                      "sourceField": fld, "params": {"emptyAsNull": False}, **where}
    cols[f"{cid}X2"] = {**base, "label": f"Part of {m.name}", "operationType": "math",
                        "references": parts, "params": {"tinymathAst": {
                            "type": "function", "name": "divide", "args": parts,
                            "location": {"min": 0, "max": len(formula)}, "text": formula}}}
    return cols


def _metric_column(m: Metric, types: Mapping[str, Any]) -> dict[str, Any]:
    col: dict[str, Any] = {
        "label": m.name, "customLabel": True, "operationType": _LENS_OPS[m.op],
        "sourceField": m.field or "___records___", "isBucketed": False, "scale": "ratio",
        "dataType": "date" if field_type(types, m.field or "") == "date" else "number",
        "params": {"emptyAsNull": m.op != "count"},
    }
    if m.op == "percentile":
        col["params"]["percentile"] = m.percentile
    if m.filters:
        col["filter"] = {"query": kql(m.filters), "language": "kuery"}
    return col


def _visualization(panel: Panel, layer: str, bucket_ids: list[str], metric_ids: list[str]
                   ) -> tuple[str, dict[str, Any]]:
    if panel.kind == "metric":
        return "lnsMetric", {"layerId": layer, "layerType": "data",
                             "metricAccessor": metric_ids[0]}
    if panel.kind == "table":
        return "lnsDatatable", {"layerId": layer, "layerType": "data",
                                "columns": [{"columnId": c} for c in bucket_ids + metric_ids]}
    if panel.kind == "pie":
        return "lnsPie", {"shape": "donut", "layers": [{
            "layerId": layer, "layerType": "data", "primaryGroups": bucket_ids,
            "metrics": metric_ids, "numberDisplay": "percent", "categoryDisplay": "default",
            "legendDisplay": "default", "nestedLegend": False}]}
    series = {"line": "line", "bar_stacked": "bar_stacked", "bar": "bar", "histogram": "bar"}
    xy_layer: dict[str, Any] = {"layerId": layer, "layerType": "data",
                                "seriesType": series[panel.kind], "accessors": metric_ids,
                                "xAccessor": "x"}
    if panel.split is not None:
        xy_layer["splitAccessor"] = "split"
    return "lnsXY", {
        "legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
        "preferredSeriesType": series[panel.kind], "fittingFunction": "None",
        "axisTitlesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "layers": [xy_layer],
    }


def lens(panel: Panel, templates: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The Lens visualization saved object of a (non-search) panel."""
    types = templates[panel.index]
    layer = f"layer-{panel.id}"
    nesting = panel.nesting()
    if panel.kind in XY_KINDS:  # name the bucket columns after their role in the chart
        bucket_ids = ["split", "x"] if panel.split is not None else ["x"]
    else:
        bucket_ids = [f"b{i}" for i in range(len(nesting))]
    metric_ids = [f"m{i}" for i in range(len(panel.metrics))]
    # terms order by the first plain metric (Lens cannot order by a formula)
    order_by = next((cid for cid, m in zip(metric_ids, panel.metrics, strict=True)
                     if m.op != "ratio"), None)
    columns: dict[str, Any] = {}
    for cid, b in zip(bucket_ids, nesting, strict=True):
        columns[cid] = _bucket_column(b, order_by, types)
    for cid, m in zip(metric_ids, panel.metrics, strict=True):
        if m.op == "ratio":
            columns.update(_ratio_columns(cid, m))
        else:
            columns[cid] = _metric_column(m, types)
    vis_type, visualization = _visualization(panel, layer, bucket_ids, metric_ids)
    state = {
        "visualization": visualization,
        "query": {"query": kql(panel.filters), "language": "kuery"},
        "filters": [],
        "datasourceStates": {"formBased": {"layers": {layer: {
            "columns": columns, "columnOrder": list(columns),
            "incompleteColumns": {}, "sampling": 1}}}},
        "internalReferences": [], "adHocDataViews": {},
    }
    return {
        "id": f"precog-{panel.id}", "type": "lens",
        "attributes": {"title": panel.title, "description": panel.description,
                       "visualizationType": vis_type, "state": state},
        "references": [{"type": "index-pattern", "id": data_view_id(panel.index),
                        "name": f"indexpattern-datasource-layer-{layer}"}],
        **_meta("lens"),
    }


def saved_search(panel: Panel) -> dict[str, Any]:
    """The Discover saved search of a ``search`` panel (columns, newest first)."""
    source = {"query": {"query": kql(panel.filters), "language": "kuery"}, "filter": [],
              "highlightAll": True, "version": True,
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return {
        "id": f"precog-{panel.id}", "type": "search",
        "attributes": {
            "title": panel.title, "description": panel.description,
            "columns": list(panel.columns), "sort": [[panel.time_field, "desc"]],
            "grid": {}, "hideChart": True, "isTextBasedQuery": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _compact(source)},
        },
        "references": [{"type": "index-pattern", "id": data_view_id(panel.index),
                        "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}],
        **_meta("search"),
    }


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _layout(panels: Sequence[Panel]) -> list[dict[str, int]]:
    """Flow the panels left to right on Kibana's 48-column grid."""
    grid, x, y, row_h = [], 0, 0, 0
    for p in panels:
        if x + p.width > 48:
            x, y, row_h = 0, y + row_h, 0
        grid.append({"x": x, "y": y, "w": p.width, "h": p.height})
        x, row_h = x + p.width, max(row_h, p.height)
    return grid


def dashboard(board: Dashboard, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The dashboard saved object: by-reference panels, controls, time restore; its
    namespace control starts with ``namespace`` selected (the user can add others)."""
    panels: list[dict[str, Any]] = []
    refs: list[dict[str, str]] = []
    for i, (p, grid) in enumerate(zip(board.panels, _layout(board.panels), strict=True)):
        pid = str(i + 1)
        panels.append({"version": KIBANA_VERSION, "type": "search" if p.kind == "search"
                       else "lens", "gridData": {**grid, "i": pid}, "panelIndex": pid,
                       "embeddableConfig": {"enhancements": {}}, "panelRefName": f"panel_{pid}"})
        refs.append({"name": f"{pid}:panel_{pid}", "type": panels[-1]["type"],
                     "id": f"precog-{p.id}"})
    controls = {}
    control_index = board.panels[0].index
    for order, c in enumerate(board.controls):
        cid = f"{board.id}-control-{c.field}"
        controls[cid] = {"order": order, "width": "medium", "grow": True,
                         "type": "optionsListControl",
                         "explicitInput": {"id": cid, "fieldName": c.field, "title": c.title,
                                           "selectedOptions": [namespace]
                                           if c.selects_namespace else [],
                                           "enhancements": {}}}
        refs.append({"name": f"controlGroup_{cid}:optionsListDataView",
                     "type": "index-pattern", "id": data_view_id(control_index)})
    ignore = {"ignoreFilters": False, "ignoreQuery": False, "ignoreTimerange": False,
              "ignoreValidations": False}
    return {
        "id": board.id, "type": "dashboard",
        "attributes": {
            "title": board.title, "description": board.description, "version": 1,
            "timeRestore": True, "timeFrom": "now-7d", "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 30000},
            "panelsJSON": _compact(panels),
            "optionsJSON": _compact({"useMargins": True, "syncColors": False,
                                       "syncCursor": True, "syncTooltips": False,
                                       "hidePanelTitles": False}),
            "controlGroupInput": {"controlStyle": "oneLine", "chainingSystem": "HIERARCHICAL",
                                  "showApplySelections": False,
                                  "panelsJSON": _compact(controls),
                                  "ignoreParentSettingsJSON": _compact(ignore)},
            "kibanaSavedObjectMeta": {"searchSourceJSON": _compact(
                {"query": {"query": "", "language": "kuery"}, "filter": []})},
        },
        "references": refs, **_meta("dashboard"),
    }


def saved_objects(boards: Sequence[Dashboard], templates: Mapping[str, Mapping[str, Any]],
                  namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
    """Every saved object: the data views the panels use, then visualizations and
    searches, then dashboards (for ``namespace``)."""
    panels = all_panels(boards)
    used = {p.index for p in panels}
    objs = [data_view(name) for name in TIME_FIELDS if name in used]
    for p in panels:
        objs.append(saved_search(p) if p.kind == "search" else lens(p, templates))
    objs += [dashboard(b, namespace) for b in boards]
    return objs


def to_ndjson(objects: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per line, keys sorted, so the export is byte-for-byte reproducible."""
    return "".join(json.dumps(o, sort_keys=True, separators=(",", ":")) + "\n"
                   for o in objects)


def export_ndjson(feature_names: Sequence[str] = (), templates_dir: Path = TEMPLATES_DIR,
                  business: BusinessSpec | None = None,
                  namespace: str = DEFAULT_NAMESPACE) -> str:
    """The NDJSON ``precog kibana export`` writes to ``kibana/saved_objects.ndjson`` (for
    ``prod``), and ``precog kibana import`` posts (for its ``--namespace``)."""
    boards = dashboards(feature_names, business)
    return to_ndjson(saved_objects(boards, load_templates(templates_dir), namespace))
