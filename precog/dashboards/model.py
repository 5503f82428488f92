"""The dashboard model: panels, their buckets, metrics and filters, and dashboards, as data.

A panel is declared once (index, chart kind, buckets, metrics, filters); the catalog
(:mod:`precog.dashboards.catalog`) declares precog's, the Kibana renderer
(:mod:`precog.dashboards.kibana`) and the query builder (:mod:`precog.dashboards.query`)
both read the same declaration, so Kibana and ``precog report`` cannot drift apart.

>>> p = Panel("decisions", "Decision rate", "predictions", "line",
...           x=DateHistogram("event_time"), split=Terms("model_id"),
...           metrics=(Metric("avg", "label", "decision rate"),))
>>> [b.field for b in p.nesting()], p.time_field
(['model_id', 'event_time'], 'event_time')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

#: The namespaced indices precog writes (``{ns}-<name>``), and the time field of each.
TIME_FIELDS: dict[str, str] = {
    "predictions": "event_time",
    "models": "created_time",
    "metrics": "event_time",
    "alerts": "event_time",
    "pipeline-health": "window_start",
    "replay-compare": "computed_time",
    "decisions": "evaluated_time",
}
#: Indices whose data view has no time field, so the time picker never hides a document:
#: the model index lists every registered model, however long ago it was registered
#: (their ``TIME_FIELDS`` entry only sorts them).
TIMELESS: frozenset[str] = frozenset({"models"})
#: Fields a dashboard's namespace control filters on: ``namespace``, or for the replay
#: comparison (written into the right namespace's index) ``right_namespace``.
NAMESPACE_FIELDS: frozenset[str] = frozenset({"namespace", "right_namespace"})

Kind = Literal["line", "bar_stacked", "bar", "histogram", "pie", "metric", "table", "search"]
MetricOp = Literal["count", "avg", "sum", "min", "max", "percentile", "ratio"]
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
    one from the data's time extent (``query.auto_interval``, about ``buckets`` bars)."""

    field: str
    buckets: int = 40


@dataclass(frozen=True)
class Terms:
    """The top ``size`` values of a keyword, integer or boolean field, by document count;
    with ``also``, of the combination of ``field`` and those fields (Lens' multi-field terms:
    one series per model, version and role, not one per model)."""

    field: str
    size: int = 10
    label: str = ""
    also: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field of the bucket key, ``field`` first."""
        return (self.field, *self.also)


@dataclass(frozen=True)
class Filters:
    """One named bucket per filter (Lens' "filters" operation, Elasticsearch's ``filters``
    aggregation): slices named in words ("approved", "declined") instead of a 0/1 field's
    raw values."""

    label: str
    named: tuple[tuple[str, Filter], ...]

    @property
    def field(self) -> str:
        """The column name of the bucket (there is no single source field)."""
        return self.label


@dataclass(frozen=True)
class Histogram:
    """Fixed-width numeric buckets over ``[low, high)``."""

    field: str
    interval: float
    low: float
    high: float


Bucket = DateHistogram | Terms | Histogram | Filters


def bucket_name(b: Bucket) -> str:
    """The column name of a bucket in report rows.

    >>> bucket_name(Terms("model_id", label="model")), bucket_name(DateHistogram("event_time"))
    ('model', 'event_time')
    """
    return b.label if isinstance(b, Terms | Filters) and b.label else b.field


@dataclass(frozen=True)
class Metric:
    """One value per bucket: a count, or avg/sum/min/max/percentile of a field, or
    ``ratio``: sum(field) / sum(denominator) over the bucket (a Lens formula), optionally
    over the documents matching ``filters`` only."""

    op: MetricOp
    field: str | None = None
    label: str = ""
    filters: tuple[Filter, ...] = ()
    percentile: float = 95.0
    denominator: str | None = None

    @property
    def name(self) -> str:
        """Label shown in charts and used as the column name of report rows.

        >>> Metric("avg", "f1").name, Metric("count").name, Metric("sum", "lag", "total").name
        ('avg f1', 'count', 'total')
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
            if isinstance(b, Filters):
                uses += [(f, "filter") for f in filter_fields(f for _, f in b.named)]
            elif isinstance(b, Terms):
                uses += [(f, "terms") for f in b.fields]
            else:
                use = {DateHistogram: "date_histogram", Histogram: "histogram"}[type(b)]
                uses.append((b.field, use))
        for m in self.metrics:
            if m.op == "ratio":
                uses += [(f, "sum") for f in (m.field, m.denominator) if f is not None]
            elif m.field is not None:
                uses.append((m.field, m.op))
            uses += [(f, "filter") for f in filter_fields(m.filters)]
        uses += [(f, "filter") for f in filter_fields(self.filters)]
        uses += [(c, "column") for c in self.columns]
        return uses


@dataclass(frozen=True)
class Control:
    """A dashboard-level options-list control (filters every panel by this field). A
    namespace control (``field`` in ``NAMESPACE_FIELDS``) starts with the namespace the
    dashboards are exported for selected."""

    field: str
    title: str

    @property
    def selects_namespace(self) -> bool:
        return self.field in NAMESPACE_FIELDS


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: its panels in layout order and its controls."""

    id: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    controls: tuple[Control, ...] = field(default=())
