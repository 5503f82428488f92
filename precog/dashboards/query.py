"""The Elasticsearch side of a panel: the search body that computes it, and its rows.

``precog report`` sends :func:`es_request` with its own client and flattens the response
with :func:`rows`; nothing here talks to Elasticsearch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from precog.dashboards.model import (
    TIMELESS,
    Bucket,
    DateHistogram,
    Exists,
    Filter,
    Filters,
    Metric,
    Not,
    Panel,
    Terms,
    bucket_name,
)


def es_filter(f: Filter) -> dict[str, Any]:
    """One filter as an Elasticsearch query clause.

    >>> from precog.dashboards.model import Is
    >>> es_filter(Not(Is("label", 0)))
    {'bool': {'must_not': [{'term': {'label': 0}}]}}
    """
    if isinstance(f, Not):
        return {"bool": {"must_not": [es_filter(f.inner)]}}
    if isinstance(f, Exists):
        return {"exists": {"field": f.field}}
    return {"term": {f.field: f.value}}


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


def _terms(fld: str, size: int) -> dict[str, Any]:
    return {"terms": {"field": fld, "size": size, "order": {"_count": "desc"}}}


def _bucket_agg(b: Bucket, interval: str, inner: dict[str, Any]) -> dict[str, Any]:
    """The aggregation of one bucket level with ``inner`` below it. Multi-field terms nest
    one terms aggregation per field (``multi_terms`` is not in Elasticsearch's core
    modules): ``t1`` ... below the first field's."""
    if isinstance(b, Terms) and b.also:
        agg = _terms(b.field, b.size)
        below = agg
        for i, fld in enumerate(b.also, 1):
            nxt = _terms(fld, b.size)
            below["aggs"] = {f"t{i}": nxt}
            below = nxt
        if inner:
            below["aggs"] = inner
        return agg
    agg = _leaf_bucket_agg(b, interval)
    if inner:
        agg["aggs"] = inner
    return agg


def _leaf_bucket_agg(b: Bucket, interval: str) -> dict[str, Any]:
    if isinstance(b, DateHistogram):
        return {"date_histogram": {"field": b.field, "fixed_interval": interval,
                                   "min_doc_count": 1}}
    if isinstance(b, Terms):
        return _terms(b.field, b.size)
    if isinstance(b, Filters):
        return {"filters": {"filters": {name: es_filter(f) for name, f in b.named}}}
    return {"histogram": {"field": b.field, "interval": b.interval, "min_doc_count": 1,
                          "extended_bounds": {"min": b.low, "max": b.high}}}


def _metric_agg(m: Metric) -> dict[str, Any] | None:
    if m.op == "ratio":  # both sums, divided in _metric_value
        sums = {"num": {"sum": {"field": m.field}}, "den": {"sum": {"field": m.denominator}}}
        return {"filter": _bool(m.filters), "aggs": sums}
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
    inner = _nested_aggs(buckets[1:], metrics, interval)
    return {f"b{len(buckets)}": _bucket_agg(buckets[0], interval, inner)}


TimeRange = tuple[int | None, int | None]


def es_request(panel: Panel, time_range: TimeRange = (None, None), size: int = 20,
               interval: str = "1h") -> dict[str, Any]:
    """The search body (query + aggregations) that computes ``panel`` over ``time_range``
    (epoch ms, inclusive start, exclusive end; None = open; a ``TIMELESS`` index ignores
    it, as its data view does); date histograms use ``interval`` (see :func:`auto_interval`).

    >>> body = es_request(Panel("p", "P", "alerts", "bar", x=Terms("kind"),
    ...                         metrics=(Metric("avg", "statistic"),)), (0, None))
    >>> body["query"]["bool"]["filter"]
    [{'range': {'event_time': {'gte': 0, 'format': 'epoch_millis'}}}]
    >>> body["aggs"]["b1"]["terms"]["field"], body["aggs"]["b1"]["aggs"]
    ('kind', {'m0': {'avg': {'field': 'statistic'}}})
    """
    filters = [es_filter(f) for f in panel.filters]
    start, end = (None, None) if panel.index in TIMELESS else time_range
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
    if m.op == "ratio":
        num, den = agg["num"]["value"], agg["den"]["value"]
        return None if num is None or not den else float(num) / float(den)
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


#: How the report shows a multi-field terms key (Kibana shows the values joined too).
KEY_JOIN = " · "


def _buckets(b: Bucket, agg: Mapping[str, Any]) -> list[tuple[Any, Mapping[str, Any]]]:
    """(key, bucket) of one bucket level; multi-field terms flattened into one key per
    combination of values, joined with ``KEY_JOIN``; filters buckets in declared order."""
    if isinstance(b, Filters):
        named = agg["buckets"]
        return [(name, named[name]) for name, _ in b.named]
    level = [(_bucket_key(b, x), x) for x in agg["buckets"]]
    if isinstance(b, Terms):
        for i in range(1, len(b.also) + 1):
            level = [(f"{key}{KEY_JOIN}{_bucket_key(b, x)}", x)
                     for key, outer in level for x in outer[f"t{i}"]["buckets"]]
    return level


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
    for value, bucket in _buckets(b, aggs[f"b{len(buckets) - level}"]):
        key = {bucket_name(b): value}
        out += _flatten(panel, level + 1, bucket, bucket["doc_count"], {**prefix, **key})
    return out


def _dotted(source: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted field names; an array of objects gives one list per field, as Discover shows.

    >>> _dotted({"a": {"b": 1}, "c": [{"d": 1}, {"d": 2, "e": 3}]})
    {'a.b': 1, 'c.d': [1, 2], 'c.e': [3]}
    """
    out: dict[str, Any] = {}
    for k, v in source.items():
        if isinstance(v, Mapping):
            out.update(_dotted(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            for item in v:
                for name, value in _dotted(item, f"{prefix}{k}.").items():
                    out.setdefault(name, []).append(value)
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

