"""precog's dashboards, declared once as data and rendered to Kibana and to Elasticsearch queries.

One concern per module:

* :mod:`~precog.dashboards.model`: panels, buckets, metrics, filters, dashboards (dataclasses);
* :mod:`~precog.dashboards.catalog`: every dashboard and panel precog ships;
* :mod:`~precog.dashboards.templates`: the index templates and the type each field gets;
* :mod:`~precog.dashboards.query`: a panel's Elasticsearch search body and its rows
  (``precog report`` sends them with its own client);
* :mod:`~precog.dashboards.kibana`: the Kibana saved objects and their NDJSON;
* :mod:`~precog.dashboards.checks`: static checks of the export against the templates;
* :mod:`~precog.dashboards.meaning`: the day-one rules those checks also run (namespace
  selected, model series, ratios of sums, named slices);
* :mod:`~precog.dashboards.findings`: what a check reports and which field types suit
  which use.

Pure: no network; the only files read are the index templates in ``kibana/templates``.
The names callers use are re-exported here.
"""

from __future__ import annotations

from precog.dashboards.catalog import all_panels, dashboards
from precog.dashboards.checks import check_definitions, check_file, check_ndjson, fields_in_kql
from precog.dashboards.findings import Problem, suits
from precog.dashboards.kibana import (
    CORE_MIGRATION_VERSION,
    DEFAULT_NAMESPACE,
    KIBANA_VERSION,
    MIN_KIBANA_VERSION,
    NDJSON_PATH,
    TYPE_MIGRATION_VERSIONS,
    dashboard,
    data_view,
    data_view_id,
    export_ndjson,
    kql,
    lens,
    saved_objects,
    saved_search,
    to_ndjson,
)
from precog.dashboards.model import (
    NAMESPACE_FIELDS,
    TIME_FIELDS,
    TIMELESS,
    XY_KINDS,
    Bucket,
    Control,
    Dashboard,
    DateHistogram,
    Exists,
    Filter,
    Filters,
    Histogram,
    Is,
    Kind,
    Metric,
    MetricOp,
    Not,
    Panel,
    Terms,
    bucket_name,
    filter_fields,
)
from precog.dashboards.query import (
    INTERVALS,
    TimeRange,
    auto_interval,
    es_filter,
    es_request,
    extent_request,
    rows,
)
from precog.dashboards.templates import (
    KIBANA_DIR,
    TEMPLATES_DIR,
    field_type,
    load_templates,
    template_fields,
)

__all__ = [
    "CORE_MIGRATION_VERSION", "DEFAULT_NAMESPACE", "MIN_KIBANA_VERSION", "NAMESPACE_FIELDS",
    "TIMELESS", "Filters", "INTERVALS", "KIBANA_DIR", "KIBANA_VERSION", "NDJSON_PATH",
    "TEMPLATES_DIR", "TIME_FIELDS", "TYPE_MIGRATION_VERSIONS", "XY_KINDS", "Bucket",
    "Control", "Dashboard", "DateHistogram", "Exists", "Filter", "Histogram", "Is", "Kind",
    "Metric", "MetricOp", "Not", "Panel", "Problem", "Terms", "TimeRange", "all_panels",
    "auto_interval", "bucket_name", "check_definitions", "check_file", "check_ndjson",
    "dashboard", "dashboards", "data_view", "data_view_id", "es_filter", "es_request",
    "export_ndjson", "extent_request", "field_type", "fields_in_kql", "filter_fields", "kql",
    "lens", "load_templates", "rows", "saved_objects", "saved_search", "suits",
    "template_fields", "to_ndjson",
]
