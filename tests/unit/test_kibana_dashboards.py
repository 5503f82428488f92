"""The one panel definition: the same panel yields the Lens columns and the ES aggregation."""

from __future__ import annotations

import pytest

from precog.dashboards import (
    DateHistogram,
    Filters,
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
        assert [c.field for c in b.controls if c.selects_namespace] == [
            "right_namespace" if b.id == "precog-replay-compare" else "namespace"]
    search = next(p for b in boards for p in b.panels if p.id == "pp-predictions")
    assert {"features.amount", "feature_ages_ms.amount", "model_version"} <= set(search.columns)


def test_multi_field_terms_nest_per_field_and_join_their_keys() -> None:
    panel = Panel("m", "M", "metrics", "line", x=DateHistogram("event_time"),
                  split=Terms("model_id", 5, "model", also=("version", "role")),
                  metrics=(Metric("avg", "f1", "F1"),))
    outer = es_request(panel)["aggs"]["b2"]
    assert outer["terms"]["field"] == "model_id"
    assert outer["aggs"]["t1"]["terms"]["field"] == "version"
    assert outer["aggs"]["t1"]["aggs"]["t2"]["terms"]["field"] == "role"
    assert "b1" in outer["aggs"]["t1"]["aggs"]["t2"]["aggs"]
    response = {"hits": {"total": {"value": 3}}, "aggregations": {"b2": {"buckets": [
        {"key": "m1", "doc_count": 3, "t1": {"buckets": [
            {"key": 1, "doc_count": 2, "t2": {"buckets": [
                {"key": "leader", "doc_count": 2, "b1": {"buckets": [
                    {"key": 0, "doc_count": 2, "m0": {"value": 0.5}}]}}]}},
            {"key": 2, "doc_count": 1, "t2": {"buckets": [
                {"key": "challenger", "doc_count": 1, "b1": {"buckets": [
                    {"key": 0, "doc_count": 1, "m0": {"value": 0.25}}]}}]}}]}}]}}}
    assert [(r["model"], r["F1"]) for r in rows(panel, response)] == [
        ("m1 · 1 · leader", 0.5), ("m1 · 2 · challenger", 0.25)]
    cols = lens(panel, load_templates())["attributes"]["state"]["datasourceStates"][
        "formBased"]["layers"]["layer-m"]["columns"]
    assert cols["split"]["params"]["secondaryFields"] == ["version", "role"]


def test_ratio_is_the_ratio_of_the_sums_in_kibana_and_in_the_report() -> None:
    panel = Panel("r", "R", "pipeline-health", "line", x=DateHistogram("window_start"),
                  metrics=(Metric("ratio", "received", "received / expected",
                                  denominator="expected"),))
    agg = es_request(panel)["aggs"]["b1"]["aggs"]["m0"]
    assert agg["aggs"] == {"num": {"sum": {"field": "received"}},
                           "den": {"sum": {"field": "expected"}}}
    # two windows: 90/100 and 10/100 -> 100/200, not min(0.9, 0.1) nor their mean
    response = {"hits": {"total": {"value": 2}}, "aggregations": {"b1": {"buckets": [
        {"key": 0, "doc_count": 2, "m0": {"doc_count": 2, "num": {"value": 100.0},
                                          "den": {"value": 200.0}}},
        {"key": 1, "doc_count": 1, "m0": {"doc_count": 1, "num": {"value": 5.0},
                                          "den": {"value": 0.0}}}]}}}
    assert [r["received / expected"] for r in rows(panel, response)] == [0.5, None]
    layer = lens(panel, load_templates())["attributes"]["state"]["datasourceStates"][
        "formBased"]["layers"]["layer-r"]
    cols = layer["columns"]
    assert cols["m0"]["params"]["formula"] == "sum(received) / sum(expected)"
    assert cols["m0"]["references"] == ["m0X2"]
    assert (cols["m0X0"]["operationType"], cols["m0X0"]["sourceField"]) == ("sum", "received")
    assert (cols["m0X1"]["operationType"], cols["m0X1"]["sourceField"]) == ("sum", "expected")
    assert cols["m0X2"]["params"]["tinymathAst"]["args"] == ["m0X0", "m0X1"]
    assert layer["columnOrder"] == ["x", "m0", "m0X0", "m0X1", "m0X2"]


def test_named_decision_slices() -> None:
    panel = Panel("d", "D", "predictions", "pie",
                  x=Filters("decision", (("approved", Is("leader_label", 0)),
                                         ("declined", Is("leader_label", 1)))),
                  metrics=(Metric("count", label="n"),))
    assert es_request(panel)["aggs"]["b1"] == {"filters": {"filters": {
        "approved": {"term": {"leader_label": 0}}, "declined": {"term": {"leader_label": 1}}}}}
    response = {"hits": {"total": {"value": 3}}, "aggregations": {"b1": {"buckets": {
        "declined": {"doc_count": 1}, "approved": {"doc_count": 2}}}}}
    assert [(r["decision"], r["n"]) for r in rows(panel, response)] == [
        ("approved", 2.0), ("declined", 1.0)]
    col = lens(panel, load_templates())["attributes"]["state"]["datasourceStates"][
        "formBased"]["layers"]["layer-d"]["columns"]["b0"]
    assert col["operationType"] == "filters"
    assert [(f["label"], f["input"]["query"]) for f in col["params"]["filters"]] == [
        ("approved", "leader_label : 0"), ("declined", "leader_label : 1")]


def test_the_model_index_ignores_the_time_range() -> None:
    models = next(p for b in dashboards() for p in b.panels if p.id == "pp-models")
    assert es_request(models, (100, 200))["query"] == {"bool": {"filter": []}}
