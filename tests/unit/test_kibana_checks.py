"""Static checks of the shipped Kibana saved objects, and that they catch what they claim to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from precog import resources
from precog.dashboards import (
    NDJSON_PATH,
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
                      "precog: Business view", "precog: Model lifecycle"}
    views = {o["attributes"]["title"]: o["attributes"]["timeFieldName"]
             for o in shipped if o["type"] == "index-pattern"}
    assert views == {"*-predictions": "event_time", "*-models": "created_time",
                     "*-metrics": "event_time", "*-alerts": "event_time",
                     "*-pipeline-health": "window_start",
                     "*-replay-compare": "computed_time",
                     "*-decisions": "evaluated_time"}
    for board in (o for o in shipped if o["type"] == "dashboard"):
        controls = json.loads(board["attributes"]["controlGroupInput"]["panelsJSON"])
        fields = {c["explicitInput"]["fieldName"] for c in controls.values()}
        assert "namespace" in fields, board["id"]


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
              metrics=(Metric("count"),)),), ())
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
    from precog.dashboards import Control

    board = Dashboard(board.id, board.title, "", board.panels, (Control("model_id", "M"),))
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
