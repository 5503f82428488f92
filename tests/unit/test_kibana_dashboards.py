"""The one panel definition: the same panel yields the Lens columns and the ES aggregation."""

from __future__ import annotations

import pytest

from precog.dashboards import (
    DateHistogram,
    Is,
    Metric,
    Panel,
    Terms,
    dashboards,
    es_request,
    lens,
    load_templates,
    rows,
)

pytestmark = pytest.mark.unit

PANEL = Panel("caught", "Caught vs missed", "predictions", "bar_stacked",
              x=DateHistogram("event_time"), split=Terms("model_id", 5, "model"),
              filters=(Is("role", "leader"),),
              metrics=(Metric("sum", "amount", "caught", (Is("leader_label", 1),)),
                       Metric("count", label="events")))


def test_es_request_nests_split_outside_time_with_filtered_metrics() -> None:
    body = es_request(PANEL, (100, 200), interval="5m")
    assert body["size"] == 0
    assert body["query"] == {"bool": {"filter": [
        {"term": {"role": "leader"}},
        {"range": {"event_time": {"gte": 100, "lt": 200, "format": "epoch_millis"}}}]}}
    outer = body["aggs"]["b2"]
    assert outer["terms"] == {"field": "model_id", "size": 5, "order": {"_count": "desc"}}
    inner = outer["aggs"]["b1"]
    assert inner["date_histogram"] == {"field": "event_time", "fixed_interval": "5m",
                                       "min_doc_count": 1}
    assert inner["aggs"] == {"m0": {"filter": {"bool": {"filter": [
        {"term": {"leader_label": 1}}]}}, "aggs": {"v": {"sum": {"field": "amount"}}}}}


def test_rows_flatten_nested_buckets() -> None:
    response = {"hits": {"total": {"value": 5}}, "aggregations": {"b2": {"buckets": [
        {"key": "m1", "doc_count": 5, "b1": {"buckets": [
            {"key": 0, "doc_count": 3, "m0": {"doc_count": 1, "v": {"value": 12.5}}},
            {"key": 300000, "doc_count": 2, "m0": {"doc_count": 0, "v": {"value": 0.0}}}]}}]}}}
    assert rows(PANEL, response) == [
        {"model": "m1", "event_time": 0, "caught": 12.5, "events": 3.0, "_doc_count": 3},
        {"model": "m1", "event_time": 300000, "caught": 0.0, "events": 2.0, "_doc_count": 2}]


def test_lens_columns_mirror_the_panel() -> None:
    obj = lens(PANEL, load_templates())
    layer = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"][
        "layer-caught"]
    assert layer["columnOrder"] == ["split", "x", "m0", "m1"]
    cols = layer["columns"]
    assert (cols["split"]["operationType"], cols["split"]["sourceField"],
            cols["split"]["dataType"]) == ("terms", "model_id", "string")
    assert cols["x"]["operationType"] == "date_histogram"
    assert cols["m0"]["filter"] == {"query": "leader_label : 1", "language": "kuery"}
    assert (cols["m0"]["operationType"], cols["m1"]["sourceField"]) == ("sum", "___records___")
    assert obj["attributes"]["state"]["query"]["query"] == 'role : "leader"'
    vis = obj["attributes"]["state"]["visualization"]["layers"][0]
    assert (vis["seriesType"], vis["xAccessor"], vis["splitAccessor"], vis["accessors"]) == (
        "bar_stacked", "x", "split", ["m0", "m1"])
    assert obj["references"] == [{"type": "index-pattern", "id": "precog-dv-predictions",
                                  "name": "indexpattern-datasource-layer-layer-caught"}]


def test_panel_ids_are_unique_and_every_dashboard_is_filterable() -> None:
    boards = dashboards(["amount"])
    ids = [p.id for b in boards for p in b.panels]
    assert len(ids) == len(set(ids))
    for b in boards:
        assert b.controls[0].field == "namespace"
    search = next(p for b in boards for p in b.panels if p.id == "pp-predictions")
    assert {"features.amount", "feature_ages_ms.amount", "model_version"} <= set(search.columns)
