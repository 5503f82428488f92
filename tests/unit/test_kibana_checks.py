"""Static checks of the shipped Kibana saved objects, and that they catch what they claim to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from precog import resources
from precog.dashboards import (
    MIN_KIBANA_VERSION,
    NDJSON_PATH,
    Control,
    Dashboard,
    Metric,
    Panel,
    Terms,
    check_definitions,
    check_ndjson,
    dashboards,
    export_ndjson,
    load_templates,
    saved_objects,
    to_ndjson,
)
from precog.spec import load_spec

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
NS = Control("namespace", "Namespace")


@pytest.fixture(scope="module")
def templates() -> dict[str, Any]:
    return load_templates()


@pytest.fixture(scope="module")
def shipped() -> list[dict[str, Any]]:
    return [json.loads(line) for line in NDJSON_PATH.read_text().splitlines()]


TRANSACTIONS = load_spec(resources.spec_dir() / "transactions.yaml")


def _feature_names() -> list[str]:
    return TRANSACTIONS.feature_names


def _messages(objs: list[dict[str, Any]], templates: dict[str, Any]) -> list[str]:
    return [str(p) for p in check_ndjson(to_ndjson(objs), templates)]


def _by_id(objs: list[dict[str, Any]], obj_id: str) -> dict[str, Any]:
    return next(o for o in objs if o["id"] == obj_id)


def test_committed_ndjson_is_the_generated_one() -> None:
    expected = export_ndjson(_feature_names(), business=TRANSACTIONS.business)
    assert NDJSON_PATH.read_text() == expected


def test_shipped_ndjson_passes(templates: dict[str, Any]) -> None:
    assert check_ndjson(NDJSON_PATH.read_text(), templates) == []
    assert check_definitions(dashboards(_feature_names(), TRANSACTIONS.business), templates) == []


def test_shipped_export_has_every_dashboard_and_data_view(shipped: list[dict]) -> None:
    titles = {o["attributes"]["title"] for o in shipped if o["type"] == "dashboard"}
    assert titles == {"precog: Model performance", "precog: Drift and alerts",
                      "precog: Data pipeline health", "precog: Predictions and provenance",
                      "precog: Replay comparison", "precog: Business view",
                      "precog: Model lifecycle"}
    views = {o["attributes"]["title"]: o["attributes"].get("timeFieldName")
             for o in shipped if o["type"] == "index-pattern"}
    assert views == {"*-predictions": "event_time", "*-models": None,
                     "*-metrics": "event_time", "*-alerts": "event_time",
                     "*-pipeline-health": "window_start",
                     "*-replay-compare": "computed_time",
                     "*-decisions": "evaluated_time"}
    for board in (o for o in shipped if o["type"] == "dashboard"):
        controls = json.loads(board["attributes"]["controlGroupInput"]["panelsJSON"])
        selected = {c["explicitInput"]["fieldName"]: c["explicitInput"]["selectedOptions"]
                    for c in controls.values()}
        ns_field = "right_namespace" if board["id"] == "precog-replay-compare" else "namespace"
        assert selected[ns_field] == ["prod"], board["id"]


def test_broken_reference_names_object_and_reference(shipped: list[dict],
                                                      templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    board = _by_id(objs, "precog-business")
    board["references"][0]["id"] = "precog-gone"
    msgs = _messages(objs, templates)
    assert msgs == ["dashboard precog-business (precog: Business view): reference "
                    "'1:panel_1' -> lens precog-gone is not in the export"]


def test_missing_data_view_fails_every_user(shipped: list[dict],
                                            templates: dict[str, Any]) -> None:
    objs = [o for o in shipped if o["id"] != "precog-dv-alerts"]
    msgs = _messages(objs, templates)
    assert msgs and all("precog-dv-alerts is not in the export" in m for m in msgs)
    assert any(m.startswith("lens precog-da-by-detector") for m in msgs)


def test_field_missing_from_template_names_object_and_field(
        shipped: list[dict], templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    lens = _by_id(objs, "precog-mp-f1")
    layer = next(iter(lens["attributes"]["state"]["datasourceStates"]["formBased"]
                      ["layers"].values()))
    layer["columns"]["m0"]["sourceField"] = "f1_score"
    assert _messages(objs, templates) == [
        "lens precog-mp-f1 (F1): field 'f1_score' (average) is not in the metrics index "
        "template"]


def test_average_on_keyword_is_rejected(shipped: list[dict], templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    lens = _by_id(objs, "precog-mp-f1")
    layer = next(iter(lens["attributes"]["state"]["datasourceStates"]["formBased"]
                      ["layers"].values()))
    layer["columns"]["m0"]["sourceField"] = "model_id"
    assert _messages(objs, templates) == [
        "lens precog-mp-f1 (F1): field 'model_id' is keyword in the metrics index template, "
        "unsuitable for average"]


def test_date_histogram_needs_a_date_and_terms_a_keyword(templates: dict[str, Any]) -> None:
    board = Dashboard("d", "D", "", (
        Panel("bad-hist", "H", "alerts", "line", x=Terms("statistic"),
              metrics=(Metric("count"),)),), (NS,))
    objs = saved_objects((board,), templates)
    layer = objs[-2]["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    next(iter(layer.values()))["columns"]["x"]["operationType"] = "date_histogram"
    msgs = _messages(objs, templates)
    assert msgs == ["lens precog-bad-hist (H): field 'statistic' is double in the alerts "
                    "index template, unsuitable for date_histogram"]
    assert [str(p) for p in check_definitions((board,), templates)] == [
        "panel bad-hist (H): field 'statistic' is double in the alerts index template, "
        "unsuitable for terms"]


def test_data_view_title_must_match_a_namespaced_index(shipped: list[dict],
                                                       templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    _by_id(objs, "precog-dv-models")["attributes"]["title"] = "prod-models"
    msgs = _messages(objs, templates)
    assert msgs[0].startswith("index-pattern precog-dv-models (prod-models): title "
                              "'prod-models' must match the namespaced index")


def test_control_field_must_exist_in_every_panel_index(templates: dict[str, Any]) -> None:
    board = Dashboard("mixed", "Mixed", "", (
        Panel("a", "A", "alerts", "metric", metrics=(Metric("count"),)),
        Panel("h", "H", "pipeline-health", "metric", metrics=(Metric("count"),))),
        ())
    board = Dashboard(board.id, board.title, "", board.panels, (NS, Control("model_id", "M")))
    msgs = _messages(saved_objects((board,), templates), templates)
    assert msgs == ["dashboard mixed (Mixed): field 'model_id' (control) is not in the "
                    "pipeline-health index template"]


def test_line_level_problems(templates: dict[str, Any]) -> None:
    msgs = [str(p) for p in check_ndjson('{"id": "x"\n{"type": "lens"}\n', templates)]
    assert msgs[0].startswith("line 1: not valid JSON")
    assert "line 2: missing id" in msgs
    assert "export: no saved objects" in msgs


def test_missing_version_fields_are_reported(shipped: list[dict],
                                             templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    del _by_id(objs, "precog-bv-flagged")["typeMigrationVersion"]
    _by_id(objs, "precog-business")["typeMigrationVersion"] = "99.0.0"
    msgs = _messages(objs, templates)
    assert msgs == [
        "lens precog-bv-flagged (Flagged transactions): typeMigrationVersion is missing or "
        "not x.y.z",
        "dashboard precog-business (precog: Business view): typeMigrationVersion 99.0.0 is "
        "newer than the 8.7.0 this export targets"]


# ---------------------------------------------------------------------------- day one
# One broken variant per issue-17 finding: each is what the export looked like (or could
# look like again), and the checks must reject it.
def _layer(obj: dict[str, Any]) -> dict[str, Any]:
    return next(iter(obj["attributes"]["state"]["datasourceStates"]["formBased"]
                     ["layers"].values()))


def _controls(board: dict[str, Any]) -> dict[str, Any]:
    return json.loads(board["attributes"]["controlGroupInput"]["panelsJSON"])


def _set_controls(board: dict[str, Any], controls: dict[str, Any]) -> None:
    board["attributes"]["controlGroupInput"]["panelsJSON"] = json.dumps(controls)


def test_shipped_export_passes_the_day_one_checks(templates: dict[str, Any]) -> None:
    from precog.namespace import index_stems

    assert check_ndjson(NDJSON_PATH.read_text(), templates, setup_indices=index_stems(),
                        namespace="prod") == []


def test_a_data_view_without_an_index_from_setup_is_rejected(templates: dict[str, Any]
                                                             ) -> None:
    from precog.namespace import index_stems

    without = [s for s in index_stems() if s != "alerts"]
    assert [str(p) for p in check_ndjson(NDJSON_PATH.read_text(), templates,
                                         setup_indices=without)] == [
        "index-pattern precog-dv-alerts (*-alerts): precog setup creates no alerts index: the "
        "data view has no fields until the first document (Lens: Field ... was not found)"]


def test_a_namespace_control_without_a_default_selection_is_rejected(
        shipped: list[dict], templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    board = _by_id(objs, "precog-business")
    controls = _controls(board)
    for c in controls.values():
        c["explicitInput"]["selectedOptions"] = []
    _set_controls(board, controls)
    assert _messages(objs, templates) == [
        "dashboard precog-business (precog: Business view): the namespace control has no "
        "default selection: every panel sums all namespaces"]
    # and an export made for prod is not one for parallel
    msgs = [str(p) for p in check_ndjson(NDJSON_PATH.read_text(), templates,
                                         namespace="parallel")]
    assert len(msgs) == len(dashboards()) and all(
        "selects ['prod'], not the namespace 'parallel'" in m for m in msgs)


def test_a_dashboard_without_a_namespace_control_is_rejected(
        shipped: list[dict], templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    board = _by_id(objs, "precog-drift-alerts")
    _set_controls(board, {k: c for k, c in _controls(board).items()
                          if c["explicitInput"]["fieldName"] != "namespace"})
    board["references"] = [r for r in board["references"]
                            if "control-namespace" not in r["name"]]
    assert _messages(objs, templates) == [
        "dashboard precog-drift-alerts (precog: Drift and alerts): no namespace control: "
        "every panel sums all namespaces"]


def test_model_series_split_by_model_id_only_are_rejected(
        shipped: list[dict], templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    del _layer(_by_id(objs, "precog-mp-f1"))["columns"]["split"]["params"]["secondaryFields"]
    _layer(_by_id(objs, "precog-pp-scores"))["columns"]["split"]["params"][
        "secondaryFields"] = ["model_version"]
    assert _messages(objs, templates) == [
        "lens precog-mp-f1 (F1): split on model_id without version, role: a model's versions "
        "and roles merge into one series",
        "lens precog-pp-scores (Score distribution per model): split on model_id without "
        "role: a model's versions and roles merge into one series"]
    panel = Panel("p", "P", "metrics", "line", x=Terms("window"), split=Terms("model_id"),
                  metrics=(Metric("avg", "f1"),))
    assert [str(p) for p in check_definitions(
        (Dashboard("d", "D", "", (panel,), (NS,)),), templates)] == [
        "panel p (P): split on model_id without version, role: a model's versions and roles "
        "merge into one series"]


def test_the_minimum_of_per_window_ratios_is_rejected(shipped: list[dict],
                                                      templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    layer = _layer(_by_id(objs, "precog-ph-ratio"))
    layer["columns"] = {k: c for k, c in layer["columns"].items() if not k.startswith("m0")}
    layer["columns"]["m0"] = {"label": "received / expected", "operationType": "min",
                              "sourceField": "ratio", "dataType": "number",
                              "isBucketed": False, "scale": "ratio"}
    layer["columnOrder"] = list(layer["columns"])
    assert _messages(objs, templates) == [
        "lens precog-ph-ratio (Received / expected per source): min of the per-document "
        "ratio 'ratio' is not the ratio of the bucket: divide sums with a formula"]
    panel = Panel("p", "P", "pipeline-health", "line", x=Terms("source"),
                  metrics=(Metric("min", "ratio"),))
    assert [str(p) for p in check_definitions(
        (Dashboard("d", "D", "", (panel,), (NS,)),), templates)] == [
        "panel p (P): min of the per-document ratio 'ratio' is not the ratio of the bucket: "
        "divide sums with a formula"]


def test_a_formula_with_a_missing_part_or_field_is_rejected(
        shipped: list[dict], templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    layer = _layer(_by_id(objs, "precog-ph-ratio"))
    del layer["columns"]["m0X2"]
    layer["columnOrder"].remove("m0X2")
    layer["columns"]["m0"]["params"]["formula"] = "sum(received) / sum(expect)"
    assert _messages(objs, templates) == [
        "lens precog-ph-ratio (Received / expected per source): column m0 references column "
        "'m0X2' that the layer does not define",
        "lens precog-ph-ratio (Received / expected per source): formula of column m0: field "
        "'expect' (sum) is not in the formula index template"]


def test_the_model_index_with_a_time_field_is_rejected(shipped: list[dict],
                                                       templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    _by_id(objs, "precog-dv-models")["attributes"]["timeFieldName"] = "created_time"
    assert _messages(objs, templates) == [
        "index-pattern precog-dv-models (*-models): timeFieldName 'created_time' on the "
        "models index: the time picker hides documents older than the range (e.g. models "
        "registered before it)"]


def test_decision_slices_labelled_0_and_1_are_rejected(shipped: list[dict],
                                                       templates: dict[str, Any]) -> None:
    objs = json.loads(json.dumps(shipped))
    layer = _layer(_by_id(objs, "precog-bv-approval"))
    layer["columns"]["b0"] = {
        "label": "decision", "dataType": "number", "operationType": "terms",
        "sourceField": "leader_label", "isBucketed": True, "scale": "ordinal",
        "params": {"size": 2, "orderBy": {"type": "column", "columnId": "m0"},
                   "orderDirection": "desc"}}
    assert _messages(objs, templates) == [
        "lens precog-bv-approval (Approved vs declined): slices of 'leader_label' (integer in "
        "the predictions index template) are labelled with raw values: name them with a "
        "filters bucket"]
    panel = Panel("p", "P", "predictions", "pie", x=Terms("leader_label"),
                  metrics=(Metric("count"),))
    assert [str(p) for p in check_definitions(
        (Dashboard("d", "D", "", (panel,), (NS,)),), templates)] == [
        "panel p (P): slices of 'leader_label' are labelled with raw values: name them with "
        "Filters"]


def test_an_unused_data_view_is_rejected(shipped: list[dict], templates: dict[str, Any]
                                         ) -> None:
    # the export before the replay comparison dashboard: *-replay-compare used by nothing
    objs = [o for o in shipped if not o["id"].startswith(("precog-rc-", "precog-replay"))]
    assert _messages(objs, templates) == [
        "index-pattern precog-dv-replay-compare (*-replay-compare): no visualization, search "
        "or control uses this data view"]


def test_supported_kibana_versions_are_documented() -> None:
    doc = (ROOT / "docs" / "kibana.md").read_text()
    oldest = ".".join(MIN_KIBANA_VERSION.split(".")[:2])
    assert "## Supported Kibana versions" in doc
    assert f"Kibana {oldest} and newer" in doc


def test_a_panel_on_a_field_the_index_does_not_have_fails(templates: dict[str, Any]) -> None:
    """Wherever the field is read: a bucket, a metric, a metric's filter, a named slice."""
    from precog.dashboards import DateHistogram, Filters, Is

    panel = Panel("gone", "G", "predictions", "bar_stacked", x=DateHistogram("event_time"),
                  split=Terms("served_arm"),
                  metrics=(Metric("sum", "served_amount", "a"),
                           Metric("count", label="c", filters=(Is("served_decision", 1),))))
    pie = Panel("slices", "S", "predictions", "pie",
                x=Filters("decision", (("passed", Is("decision", 0)),
                                       ("flagged", Is("decision", 1)))),
                metrics=(Metric("count"),))
    board = Dashboard("d", "D", "", (panel, pie), (NS,))
    assert [str(p) for p in check_definitions((board,), templates)] == [
        "panel gone (G): field 'served_arm' (terms) is not in the predictions index template",
        "panel gone (G): field 'served_amount' (sum) is not in the predictions index template",
        "panel gone (G): field 'served_decision' (filter) is not in the predictions index "
        "template",
        "panel slices (S): field 'decision' (filter) is not in the predictions index template",
        "panel slices (S): field 'decision' (filter) is not in the predictions index template",
    ]
    msgs = _messages(saved_objects((board,), templates), templates)
    assert "lens precog-gone (G): field 'served_arm' (terms) is not in the predictions index "\
        "template" in msgs
    assert "lens precog-gone (G): field 'served_decision' (filter) is not in the predictions "\
        "index template" in msgs
    # the named slices of a filters bucket are checked in the export too
    assert msgs.count("lens precog-slices (S): field 'decision' (filter) is not in the "
                      "predictions index template") == 2


def test_the_business_view_reads_the_served_decision_not_the_leaders() -> None:
    (board,) = [b for b in dashboards(_feature_names(), TRANSACTIONS.business)
                if b.id == "precog-business"]
    for panel in board.panels:
        fields = {f for f, _ in panel.field_uses()}
        assert "served" in fields, panel.id
        assert not fields & {"leader_label", "role", "label"}, panel.id


def test_the_lifecycle_dashboard_shows_traffic_decisions_and_arms() -> None:
    (board,) = [b for b in dashboards() if b.id == "precog-lifecycle"]
    panels = {p.id: p for p in board.panels}
    assert {"lc-traffic-timeline", "lc-canary-share", "lc-traffic-decisions", "lc-arm-f1",
            "lc-arm-precision", "lc-arm-recall", "lc-served-share"} <= set(panels)
    assert all(("kind", "filter") in panels[p].field_uses() for p in (
        "lc-decisions-timeline", "lc-decisions", "lc-traffic-timeline", "lc-canary-share",
        "lc-traffic-decisions"))
    assert panels["lc-arm-f1"].split.fields == ("arm", "model_id", "version", "role")
