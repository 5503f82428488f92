"""The one definition of precog's dashboards: panels as data, rendered to Kibana and to queries.

Every dashboard panel is declared once here (index, chart kind, buckets, metrics, filters).
From that single declaration come both the Kibana saved objects (data views, Lens
visualizations, saved searches, dashboards; see :func:`saved_objects` and
:func:`to_ndjson`) and the Elasticsearch requests ``precog report`` runs (see
:func:`es_request` and :func:`rows`), so the dashboards and the report cannot drift apart.
Pure: no network; the only files read are the index templates in ``kibana/templates``.

>>> p = Panel("decisions", "Decision rate", "predictions", "line",
...           x=DateHistogram("event_time"), split=Terms("model_id"),
...           metrics=(Metric("avg", "label", "decision rate"),))
>>> kql((Is("role", "leader"), Not(Is("label", 0))))
'role : "leader" and not (label : 0)'
>>> [b.field for b in p.nesting()]
['model_id', 'event_time']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from precog import resources
from precog.spec import BusinessSpec

#: Where the index templates and the committed saved objects live (kibana/, package data).
KIBANA_DIR = resources.kibana_dir()
TEMPLATES_DIR = KIBANA_DIR / "templates"
NDJSON_PATH = KIBANA_DIR / "saved_objects.ndjson"

#: The namespaced indices precog writes (``{ns}-<name>``), and the time field of each.
TIME_FIELDS: dict[str, str] = {
    "predictions": "event_time",
    "models": "created_time",
    "metrics": "event_time",
    "alerts": "event_time",
    "pipeline-health": "window_start",
    "replay-compare": "computed_time",
}

#: Kibana the export targets (matches the pinned Elasticsearch 8.15.5).
KIBANA_VERSION = "8.15.5"
CORE_MIGRATION_VERSION = "8.8.0"
#: typeMigrationVersion written per saved-object type: each is a migration version Kibana
#: 8.15 knows for the type, so the import runs any later migrations itself.
TYPE_MIGRATION_VERSIONS: dict[str, str] = {
    "index-pattern": "8.0.0",
    "search": "8.0.0",
    "lens": "8.9.0",
    "dashboard": "8.7.0",
}

Kind = Literal["line", "bar_stacked", "bar", "histogram", "pie", "metric", "table", "search"]
MetricOp = Literal["count", "avg", "sum", "min", "max", "percentile"]
XY_KINDS = ("line", "bar_stacked", "bar", "histogram")


# ---------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class Is:
    """``field`` equals ``value`` (a Kibana KQL match / an Elasticsearch term query)."""

    field: str
    value: str | int | bool


@dataclass(frozen=True)
class Exists:
    """``field`` has a value."""

    field: str


@dataclass(frozen=True)
class Not:
    """The negation of a filter."""

    inner: Is | Exists


Filter = Is | Exists | Not


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

    >>> kql([Is("kind", "volume"), Exists("expected"), Is("outlier", True)])
    'kind : "volume" and expected : * and outlier : true'
    >>> kql([])
    ''
    """
    return " and ".join(_kql_one(f) for f in filters)


def es_filter(f: Filter) -> dict[str, Any]:
    """One filter as an Elasticsearch query clause.

    >>> es_filter(Not(Is("label", 0)))
    {'bool': {'must_not': [{'term': {'label': 0}}]}}
    """
    if isinstance(f, Not):
        return {"bool": {"must_not": [es_filter(f.inner)]}}
    if isinstance(f, Exists):
        return {"exists": {"field": f.field}}
    return {"term": {f.field: f.value}}


def filter_fields(filters: Iterable[Filter]) -> list[str]:
    """The fields a set of filters reads.

    >>> filter_fields([Is("a", 1), Not(Exists("b"))])
    ['a', 'b']
    """
    return [f.inner.field if isinstance(f, Not) else f.field for f in filters]


# ---------------------------------------------------------------------------- buckets, metrics
@dataclass(frozen=True)
class DateHistogram:
    """Time buckets over a date field; Kibana picks the interval ("auto"), the report picks
    one from the data's time extent with :func:`auto_interval` (about ``buckets`` bars)."""

    field: str
    buckets: int = 40


@dataclass(frozen=True)
class Terms:
    """The top ``size`` values of a keyword, integer or boolean field, by document count."""

    field: str
    size: int = 10
    label: str = ""


@dataclass(frozen=True)
class Histogram:
    """Fixed-width numeric buckets over ``[low, high)``."""

    field: str
    interval: float
    low: float
    high: float


Bucket = DateHistogram | Terms | Histogram


@dataclass(frozen=True)
class Metric:
    """One value per bucket: a count, or avg/sum/min/max/percentile of a field, optionally
    over the documents matching ``filters`` only."""

    op: MetricOp
    field: str | None = None
    label: str = ""
    filters: tuple[Filter, ...] = ()
    percentile: float = 95.0

    @property
    def name(self) -> str:
        """Label shown in charts and used as the column name of report rows.

        >>> Metric("avg", "f1").name, Metric("count").name, Metric("sum", "amount", "risk").name
        ('avg f1', 'count', 'risk')
        """
        if self.label:
            return self.label
        return self.op if self.field is None else f"{self.op} {self.field}"


# ---------------------------------------------------------------------------- panels, dashboards
@dataclass(frozen=True)
class Panel:
    """One dashboard panel.

    ``x`` is the x axis (charts), the slices (pie) or the first row grouping (table);
    ``split`` breaks series down (charts) or is the second row grouping (table).
    ``search`` panels are Discover tables of ``columns``, newest first.
    """

    id: str
    title: str
    index: str
    kind: Kind
    x: Bucket | None = None
    split: Terms | None = None
    metrics: tuple[Metric, ...] = ()
    filters: tuple[Filter, ...] = ()
    columns: tuple[str, ...] = ()
    description: str = ""
    width: int = 24
    height: int = 12

    def nesting(self) -> tuple[Bucket, ...]:
        """Buckets from outermost to innermost, as Lens and the report both nest them:
        a chart's split is the outer aggregation (top values over the whole range),
        a table groups by ``x`` first."""
        if self.split is not None and self.x is not None and self.kind != "table":
            return (self.split, self.x)
        return tuple(b for b in (self.x, self.split) if b is not None)

    @property
    def time_field(self) -> str:
        """The time field of this panel's index."""
        return TIME_FIELDS[self.index]

    def field_uses(self) -> list[tuple[str, str]]:
        """(field, use) for every field the panel reads; ``use`` names what the field must
        support: date_histogram, terms, histogram, avg, sum, min, max, percentile, filter,
        column."""
        uses: list[tuple[str, str]] = []
        for b in self.nesting():
            use = {DateHistogram: "date_histogram", Terms: "terms", Histogram: "histogram"}
            uses.append((b.field, use[type(b)]))
        for m in self.metrics:
            if m.field is not None:
                uses.append((m.field, m.op))
            uses += [(f, "filter") for f in filter_fields(m.filters)]
        uses += [(f, "filter") for f in filter_fields(self.filters)]
        uses += [(c, "column") for c in self.columns]
        return uses


@dataclass(frozen=True)
class Control:
    """A dashboard-level options-list control (filters every panel by this field)."""

    field: str
    title: str


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: its panels in layout order and its controls."""

    id: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    controls: tuple[Control, ...] = field(default=())


# ---------------------------------------------------------------------------- the dashboards
NS_CONTROL = Control("namespace", "Namespace")
MODEL_CONTROL = Control("model_id", "Model")
LEADER = Is("role", "leader")
CUMULATIVE = Is("window", "cumulative")
BY_MODEL = Terms("model_id", 10, "model")


def _metric_over_time(pid: str, title: str, fld: str) -> Panel:
    return Panel(
        pid, title, "metrics", "line", x=DateHistogram("event_time"), split=BY_MODEL,
        metrics=(Metric("avg", fld, title),), filters=(CUMULATIVE,),
        description=f"cumulative {fld} per model (leader and challengers)",
    )


def _model_performance() -> Dashboard:
    return Dashboard(
        "precog-model-performance", "precog: Model performance",
        "Leader vs challengers over time, label coverage and latency, and which version "
        "led when.",
        panels=(
            _metric_over_time("mp-accuracy", "Accuracy", "accuracy"),
            _metric_over_time("mp-precision", "Precision", "precision"),
            _metric_over_time("mp-recall", "Recall", "recall"),
            _metric_over_time("mp-f1", "F1", "f1"),
            _metric_over_time("mp-roc-auc", "ROC AUC", "roc_auc"),
            _metric_over_time("mp-coverage", "Label coverage", "label_coverage"),
            Panel(
                "mp-latency", "Label latency (ms)", "metrics", "line",
                x=DateHistogram("event_time"), split=BY_MODEL, filters=(CUMULATIVE,),
                metrics=(Metric("avg", "label_latency_p50_ms", "p50 latency"),
                         Metric("avg", "label_latency_p95_ms", "p95 latency")),
            ),
            Panel(
                "mp-leader-timeline", "Which version was leader when", "predictions", "table",
                x=Terms("leader_model_id", 10, "leader"),
                split=Terms("leader_version", 20, "version"), filters=(LEADER,),
                metrics=(Metric("min", "event_time", "first decision"),
                         Metric("max", "event_time", "last decision"),
                         Metric("count", label="events decided")),
                description="from the predictions: every event carries the leader that "
                "decided it",
            ),
            Panel(
                "mp-by-namespace", "Side by side: namespace and model", "metrics", "table",
                x=Terms("namespace", 10, "namespace"), split=Terms("model_id", 10, "model"),
                filters=(CUMULATIVE,),
                metrics=(Metric("max", "n_labels", "labels"),
                         Metric("avg", "accuracy", "accuracy"), Metric("avg", "f1", "F1"),
                         Metric("avg", "roc_auc", "ROC AUC")),
                width=48,
            ),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL, Control("role", "Role")),
    )


def _drift_and_alerts() -> Dashboard:
    return Dashboard(
        "precog-drift-alerts", "precog: Drift and alerts",
        "Alert timeline by detector, model and feature; per-feature drift statistics.",
        panels=(
            Panel("da-by-detector", "Alerts over time by detector", "alerts", "bar_stacked",
                  x=DateHistogram("event_time"), split=Terms("detector", 10, "detector"),
                  metrics=(Metric("count", label="alerts"),)),
            Panel("da-by-model", "Alerts by model and kind", "alerts", "bar",
                  x=Terms("model_id", 10, "model"), split=Terms("kind", 10, "kind"),
                  metrics=(Metric("count", label="alerts"),)),
            Panel("da-by-feature", "Alerts by feature and detector", "alerts", "bar",
                  x=Terms("feature", 20, "feature"), split=Terms("detector", 10, "detector"),
                  metrics=(Metric("count", label="alerts"),)),
            Panel("da-feature-drift", "Data drift statistic per feature", "alerts", "line",
                  x=DateHistogram("event_time"), split=Terms("feature", 20, "feature"),
                  filters=(Is("kind", "data_drift"),),
                  metrics=(Metric("max", "statistic", "drift statistic"),)),
            Panel("da-model-drift", "Concept and prediction drift statistic per model",
                  "alerts", "line", x=DateHistogram("event_time"), split=BY_MODEL,
                  filters=(Not(Is("kind", "data_drift")), Exists("model_id")),
                  metrics=(Metric("max", "statistic", "drift statistic"),)),
            Panel("da-alerts", "Alerts", "alerts", "search", width=48,
                  columns=("kind", "detector", "severity", "model_id", "version", "feature",
                           "source", "window", "statistic", "threshold", "message")),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL, Control("kind", "Alert kind"),
                  Control("feature", "Feature")),
    )


def _pipeline_health() -> Dashboard:
    health = "pipeline-health"
    ws = DateHistogram("window_start")

    def by_name(pid: str, title: str, kind: str, label: str) -> Panel:
        return Panel(pid, title, health, "bar_stacked", x=ws, split=Terms("name", 20, kind),
                     filters=(Is("kind", kind),), metrics=(Metric("sum", "count", label),))

    return Dashboard(
        "precog-pipeline-health", "precog: Data pipeline health",
        "Received vs expected per source and window, quality failures, dead letters, "
        "outliers and consumer lag.",
        panels=(
            Panel("ph-volume", "Received vs expected per source", health, "line", x=ws,
                  split=Terms("source", 10, "source"), filters=(Is("kind", "volume"),),
                  metrics=(Metric("sum", "received", "received"),
                           Metric("sum", "expected", "expected (manifests)"),
                           Metric("sum", "expected_baseline", "expected (baseline)"))),
            Panel("ph-ratio", "Received / expected per source", health, "line", x=ws,
                  split=Terms("source", 10, "source"), filters=(Is("kind", "volume"),),
                  metrics=(Metric("min", "ratio", "received / expected"),)),
            by_name("ph-quality", "Quality failures by check", "quality", "failures"),
            by_name("ph-dead-letters", "Dead letters by reason", "dead_letter", "dead letters"),
            by_name("ph-outliers", "Outliers by feature", "outlier", "outliers"),
            Panel("ph-lag", "Consumer lag", health, "line", x=ws,
                  split=Terms("name", 10, "consumer"), filters=(Is("kind", "lag"),),
                  metrics=(Metric("max", "lag", "lag (messages)"),)),
        ),
        controls=(NS_CONTROL, Control("source", "Source"), Control("kind", "Kind")),
    )


def _predictions_provenance(feature_names: Sequence[str]) -> Dashboard:
    feature_columns = tuple(f"features.{n}" for n in feature_names) + tuple(
        f"feature_ages_ms.{n}" for n in feature_names)
    return Dashboard(
        "precog-predictions-provenance", "precog: Predictions and provenance",
        "Score distributions, decision rates, the predictions with their features and "
        "provenance, and the model index.",
        panels=(
            Panel("pp-scores", "Score distribution per model", "predictions", "histogram",
                  x=Histogram("score", 0.05, 0.0, 1.0), split=BY_MODEL,
                  metrics=(Metric("count", label="predictions"),)),
            Panel("pp-decision-rate", "Decision rate per model", "predictions", "line",
                  x=DateHistogram("event_time"), split=BY_MODEL,
                  metrics=(Metric("avg", "label", "flagged share"),)),
            Panel("pp-volume", "Predictions per model version", "predictions", "table",
                  x=Terms("model_id", 10, "model"), split=Terms("model_version", 20, "version"),
                  metrics=(Metric("count", label="predictions"),
                           Metric("avg", "score", "mean score"),
                           Metric("avg", "label", "flagged share"),
                           Metric("max", "scored_time", "last scored"))),
            Panel("pp-predictions", "Predictions", "predictions", "search", width=48,
                  height=16,
                  columns=("prediction_id", "event_id", "entity_id", "model_id",
                           "model_version", "role", "score", "label", "threshold",
                           "leader_model_id", "leader_version", "outcome_label",
                           "artifact_sha256", "provenance.code_version",
                           "provenance.source_topic", "provenance.partition",
                           "provenance.offset") + feature_columns),
            Panel("pp-models", "Model index", "models", "search", width=48,
                  columns=("model_id", "version", "algorithm", "training_window_start",
                           "training_window_end", "training_rows", "holdout_start",
                           "holdout_end", "holdout.precision", "holdout.recall",
                           "holdout.f1", "holdout.roc_auc", "holdout.log_loss", "threshold",
                           "artifact_sha256", "training_data_sha256", "code_version")),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL),
    )


def _business_view(business: BusinessSpec) -> Dashboard:
    """Leader decisions in the domain's words; the amount panels only with an amount."""
    flagged = (LEADER, Is("label", 1))
    positive = Is("outcome_label", 1)
    events, pos = business.event_noun, business.positive_noun
    has_amount = business.amount_feature is not None
    amount_panels = (
        Panel("bv-at-risk", "Amount at risk", "predictions", "metric", filters=flagged,
              metrics=(Metric("sum", "amount", "amount flagged"),), width=12, height=8),
    ) if has_amount else ()
    by_namespace_amounts = (
        Metric("sum", "amount", "amount at risk", (Is("label", 1),)),
        Metric("sum", "amount", f"{pos} caught", (positive, Is("leader_label", 1))),
        Metric("sum", "amount", f"{pos} missed", (positive, Is("leader_label", 0))),
    ) if has_amount else ()
    amount_over_time = (
        Panel("bv-at-risk-time", "Amount at risk over time", "predictions", "line",
              x=DateHistogram("event_time"), filters=flagged,
              metrics=(Metric("sum", "amount", "amount at risk"),)),
    ) if has_amount else ()
    caught_missed = (
        Panel("bv-caught-missed", f"{pos.capitalize()} amount caught vs missed",
              "predictions", "bar_stacked", x=DateHistogram("event_time"),
              filters=(LEADER, positive),
              metrics=(Metric("sum", "amount", "caught", (Is("leader_label", 1),)),
                       Metric("sum", "amount", "missed", (Is("leader_label", 0),))),
              description=f"labelled {pos} only (outcome_label = 1)"),
    ) if has_amount else ()
    at_risk = " and amount at risk" if has_amount else ""
    return Dashboard(
        "precog-business", "precog: Business view",
        f"Flagged {events}{at_risk}, approval/decline rate, {pos} caught vs "
        "missed once outcomes arrive. Leader decisions only.",
        panels=(
            Panel("bv-flagged", f"Flagged {events}", "predictions", "metric",
                  filters=flagged, metrics=(Metric("count", label="flagged"),), width=12,
                  height=8),
            *amount_panels,
            Panel("bv-approval", "Approved vs declined", "predictions", "pie",
                  x=Terms("leader_label", 2, "decision"), filters=(LEADER,),
                  metrics=(Metric("count", label=events),), height=8),
            Panel("bv-flagged-time", "Flagged over time", "predictions", "bar_stacked",
                  x=DateHistogram("event_time"), filters=flagged,
                  metrics=(Metric("count", label="flagged"),)),
            *amount_over_time,
            Panel("bv-decline-rate", "Decline rate over time", "predictions", "line",
                  x=DateHistogram("event_time"), filters=(LEADER,),
                  metrics=(Metric("avg", "leader_label", "decline rate"),)),
            *caught_missed,
            Panel("bv-by-namespace", "Side by side: namespace", "predictions", "table",
                  x=Terms("namespace", 10, "namespace"), filters=(LEADER,),
                  metrics=(Metric("count", label=events),
                           Metric("count", label="flagged", filters=(Is("label", 1),)),
                           *by_namespace_amounts),
                  width=48),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL),
    )


def dashboards(feature_names: Sequence[str] = (), business: BusinessSpec | None = None
               ) -> tuple[Dashboard, ...]:
    """All precog dashboards. ``feature_names`` (from the pipeline spec) become columns of
    the predictions table (``features.<name>`` and ``feature_ages_ms.<name>``); ``business``
    (the spec's ``business``) words the business view and says whether it has an amount.

    >>> [d.title for d in dashboards()]  # doctest: +NORMALIZE_WHITESPACE
    ['precog: Model performance', 'precog: Drift and alerts',
     'precog: Data pipeline health', 'precog: Predictions and provenance',
     'precog: Business view']
    """
    return (_model_performance(), _drift_and_alerts(), _pipeline_health(),
            _predictions_provenance(feature_names), _business_view(business or BusinessSpec()))


def all_panels(boards: Iterable[Dashboard]) -> list[Panel]:
    """Every panel of the given dashboards, in order."""
    return [p for d in boards for p in d.panels]


# ---------------------------------------------------------------------------- index templates
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
    >>> field_type(body, "features.amount"), field_type(body, "amount")
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


# ---------------------------------------------------------------------------- Elasticsearch
#: Intervals the report chooses from (Elasticsearch ``fixed_interval`` units), in ms.
INTERVALS: tuple[tuple[str, int], ...] = (
    ("1s", 1_000), ("10s", 10_000), ("1m", 60_000), ("5m", 300_000), ("10m", 600_000),
    ("30m", 1_800_000), ("1h", 3_600_000), ("3h", 10_800_000), ("12h", 43_200_000),
    ("1d", 86_400_000), ("7d", 604_800_000), ("30d", 2_592_000_000),
)


def auto_interval(start: int | None, end: int | None, buckets: int = 40) -> str:
    """The smallest interval giving at most ``buckets`` buckets over ``[start, end]``
    (Elasticsearch's auto_date_histogram is not in the core modules).

    >>> auto_interval(0, 3_600_000), auto_interval(0, 7 * 86_400_000), auto_interval(None, 5)
    ('5m', '12h', '1h')
    """
    if start is None or end is None:
        return "1h"
    span = max(end - start, 1)
    for name, ms in INTERVALS:
        if span / ms <= buckets:
            return name
    return INTERVALS[-1][0]


def _bucket_agg(b: Bucket, interval: str) -> dict[str, Any]:
    if isinstance(b, DateHistogram):
        return {"date_histogram": {"field": b.field, "fixed_interval": interval,
                                   "min_doc_count": 1}}
    if isinstance(b, Terms):
        return {"terms": {"field": b.field, "size": b.size, "order": {"_count": "desc"}}}
    return {"histogram": {"field": b.field, "interval": b.interval, "min_doc_count": 1,
                          "extended_bounds": {"min": b.low, "max": b.high}}}


def _metric_agg(m: Metric) -> dict[str, Any] | None:
    if m.op == "count":
        inner = None
    elif m.op == "percentile":
        inner = {"percentiles": {"field": m.field, "percents": [m.percentile]}}
    else:
        inner = {m.op: {"field": m.field}}
    if not m.filters:
        return inner
    wrapped: dict[str, Any] = {"filter": _bool(m.filters)}
    if inner is not None:
        wrapped["aggs"] = {"v": inner}
    return wrapped


def _bool(filters: Iterable[Filter]) -> dict[str, Any]:
    return {"bool": {"filter": [es_filter(f) for f in filters]}}


def _metric_aggs(metrics: Sequence[Metric]) -> dict[str, Any]:
    aggs = {f"m{i}": _metric_agg(m) for i, m in enumerate(metrics)}
    return {k: v for k, v in aggs.items() if v is not None}


def _nested_aggs(buckets: Sequence[Bucket], metrics: Sequence[Metric], interval: str
                 ) -> dict[str, Any]:
    if not buckets:
        return _metric_aggs(metrics)
    agg = _bucket_agg(buckets[0], interval)
    inner = _nested_aggs(buckets[1:], metrics, interval)
    if inner:
        agg["aggs"] = inner
    return {f"b{len(buckets)}": agg}


TimeRange = tuple[int | None, int | None]


def es_request(panel: Panel, time_range: TimeRange = (None, None), size: int = 20,
               interval: str = "1h") -> dict[str, Any]:
    """The search body (query + aggregations) that computes ``panel`` over ``time_range``
    (epoch ms, inclusive start, exclusive end; None = open); date histograms use
    ``interval`` (see :func:`auto_interval`).

    >>> body = es_request(Panel("p", "P", "alerts", "bar", x=Terms("kind"),
    ...                         metrics=(Metric("avg", "statistic"),)), (0, None))
    >>> body["query"]["bool"]["filter"]
    [{'range': {'event_time': {'gte': 0, 'format': 'epoch_millis'}}}]
    >>> body["aggs"]["b1"]["terms"]["field"], body["aggs"]["b1"]["aggs"]
    ('kind', {'m0': {'avg': {'field': 'statistic'}}})
    """
    filters = [es_filter(f) for f in panel.filters]
    start, end = time_range
    if start is not None or end is not None:
        rng: dict[str, Any] = {}
        if start is not None:
            rng["gte"] = start
        if end is not None:
            rng["lt"] = end
        rng["format"] = "epoch_millis"
        filters.append({"range": {panel.time_field: rng}})
    body: dict[str, Any] = {"track_total_hits": True, "query": {"bool": {"filter": filters}}}
    if panel.kind == "search":
        body.update(size=size, sort=[{panel.time_field: {"order": "desc"}}],
                    _source=list(panel.columns))
    else:
        body["size"] = 0
        aggs = _nested_aggs(panel.nesting(), panel.metrics, interval)
        if aggs:
            body["aggs"] = aggs
    return body


def extent_request(panel: Panel, time_range: TimeRange = (None, None)) -> dict[str, Any]:
    """The search body finding the first and last time of the panel's documents, from
    which the report picks its date histogram interval.

    >>> extent_request(Panel("p", "P", "alerts", "line"))["aggs"]
    {'first': {'min': {'field': 'event_time'}}, 'last': {'max': {'field': 'event_time'}}}
    """
    body = es_request(Panel(panel.id, panel.title, panel.index, "metric",
                            filters=panel.filters), time_range)
    body["aggs"] = {"first": {"min": {"field": panel.time_field}},
                    "last": {"max": {"field": panel.time_field}}}
    return body


def _metric_value(m: Metric, agg: Mapping[str, Any] | None, doc_count: int) -> float | None:
    if agg is None:  # an unfiltered count
        return float(doc_count)
    if m.filters:
        if m.op == "count":
            return float(agg["doc_count"])
        agg = agg["v"]
    if m.op == "percentile":
        values = list(agg["values"].values())
        return None if not values or values[0] is None else float(values[0])
    value = agg.get("value")
    return None if value is None else float(value)


def _bucket_key(b: Bucket, bucket: Mapping[str, Any]) -> Any:
    if isinstance(b, Terms) and "key_as_string" in bucket:  # booleans
        return bucket["key_as_string"]
    return bucket["key"]


def bucket_name(b: Bucket) -> str:
    """The column name of a bucket in report rows.

    >>> bucket_name(Terms("model_id", label="model")), bucket_name(DateHistogram("event_time"))
    ('model', 'event_time')
    """
    return b.label if isinstance(b, Terms) and b.label else b.field


def _flatten(panel: Panel, level: int, aggs: Mapping[str, Any], doc_count: int,
             prefix: dict[str, Any]) -> list[dict[str, Any]]:
    buckets = panel.nesting()
    if level == len(buckets):
        row = dict(prefix)
        for i, m in enumerate(panel.metrics):
            row[m.name] = _metric_value(m, aggs.get(f"m{i}"), doc_count)
        row["_doc_count"] = doc_count
        return [row]
    b = buckets[level]
    out: list[dict[str, Any]] = []
    for bucket in aggs[f"b{len(buckets) - level}"]["buckets"]:
        key = {bucket_name(b): _bucket_key(b, bucket)}
        out += _flatten(panel, level + 1, bucket, bucket["doc_count"], {**prefix, **key})
    return out


def _dotted(source: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in source.items():
        if isinstance(v, Mapping):
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def rows(panel: Panel, response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flatten a search response for ``panel`` into table rows: one per innermost bucket
    with the bucket keys and metric values (``_doc_count`` too), or one per document for
    ``search`` panels (dotted field names). No matching documents -> no rows.

    >>> p = Panel("p", "P", "alerts", "bar", x=Terms("kind"), metrics=(Metric("count"),))
    >>> rows(p, {"hits": {"total": {"value": 3}}, "aggregations": {"b1": {"buckets": [
    ...     {"key": "volume", "doc_count": 2}, {"key": "lag", "doc_count": 1}]}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'kind': 'volume', 'count': 2.0, '_doc_count': 2},
     {'kind': 'lag', 'count': 1.0, '_doc_count': 1}]
    """
    total = response["hits"]["total"]["value"]
    if total == 0:
        return []
    if panel.kind == "search":
        return [_dotted(h.get("_source", {})) for h in response["hits"]["hits"]]
    return _flatten(panel, 0, response.get("aggregations", {}), total, {})


# ---------------------------------------------------------------------------- Kibana
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
    """The data view over one index across namespaces (title ``*-<index>``)."""
    return {
        "id": data_view_id(index), "type": "index-pattern",
        "attributes": {
            "title": f"*-{index}", "name": f"precog {index} (all namespaces)",
            "timeFieldName": TIME_FIELDS[index], "allowNoIndex": True, "fields": "[]",
            "fieldFormatMap": "{}", "runtimeFieldMap": "{}", "sourceFilters": "[]",
            "typeMeta": "{}", "fieldAttrs": "{}",
        },
        "references": [], **_meta("index-pattern"),
    }


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
    order = ({"type": "column", "columnId": order_by} if order_by
             else {"type": "alphabetical", "fallback": True})
    return {"label": bucket_name(b), "customLabel": bool(b.label),
            "dataType": _data_type(field_type(types, b.field)), "operationType": "terms",
            "sourceField": b.field, "isBucketed": True, "scale": "ordinal",
            "params": {"size": b.size, "orderBy": order, "orderDirection": "desc",
                       "otherBucket": True, "missingBucket": False,
                       "parentFormat": {"id": "terms"}}}


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
    columns: dict[str, Any] = {}
    for cid, b in zip(bucket_ids, nesting, strict=True):
        columns[cid] = _bucket_column(b, metric_ids[0] if metric_ids else None, types)
    for cid, m in zip(metric_ids, panel.metrics, strict=True):
        columns[cid] = _metric_column(m, types)
    vis_type, visualization = _visualization(panel, layer, bucket_ids, metric_ids)
    state = {
        "visualization": visualization,
        "query": {"query": kql(panel.filters), "language": "kuery"},
        "filters": [],
        "datasourceStates": {"formBased": {"layers": {layer: {
            "columns": columns, "columnOrder": bucket_ids + metric_ids,
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


def dashboard(board: Dashboard) -> dict[str, Any]:
    """The dashboard saved object: by-reference panels, controls, time restore."""
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
                                           "selectedOptions": [], "enhancements": {}}}
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


def saved_objects(boards: Sequence[Dashboard],
                  templates: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every saved object: data views, then visualizations and searches, then dashboards."""
    objs = [data_view(name) for name in TIME_FIELDS]
    for p in all_panels(boards):
        objs.append(saved_search(p) if p.kind == "search" else lens(p, templates))
    objs += [dashboard(b) for b in boards]
    return objs


def to_ndjson(objects: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per line, keys sorted, so the export is byte-for-byte reproducible."""
    return "".join(json.dumps(o, sort_keys=True, separators=(",", ":")) + "\n"
                   for o in objects)


def export_ndjson(feature_names: Sequence[str] = (), templates_dir: Path = TEMPLATES_DIR,
                  business: BusinessSpec | None = None) -> str:
    """The NDJSON ``precog kibana export`` writes to ``kibana/saved_objects.ndjson``."""
    boards = dashboards(feature_names, business)
    return to_ndjson(saved_objects(boards, load_templates(templates_dir)))
