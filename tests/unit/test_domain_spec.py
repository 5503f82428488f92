"""What a domain needs comes from its spec: business wording and amount, the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from precog import resources
from precog.dashboards import dashboards
from precog.errors import ConfigError
from precog.simulate import read_history, simulator_name, write_history
from precog.spec import BusinessSpec, PipelineSpec, load_spec

pytestmark = pytest.mark.unit
SPECS = resources.spec_dir()


def _with(spec: PipelineSpec, **update: object) -> PipelineSpec:
    return PipelineSpec.model_validate({**spec.model_dump(mode="json"), **update})


def test_shipped_specs_set_their_domain_words() -> None:
    tx, sensors = load_spec(SPECS / "transactions.yaml"), load_spec(SPECS / "sensors.yaml")
    assert tx.business == BusinessSpec(amount_feature="amount", event_noun="transactions",
                                       positive_noun="fraud", negative_decision="approved",
                                       positive_decision="declined")
    assert (sensors.business.negative_decision, sensors.business.positive_decision) == (
        "normal", "inspect")
    assert (tx.simulation.simulator, tx.simulation.outcome_source,
            tx.simulation.history_days) == ("transactions", "chargebacks", 30.0)
    assert (sensors.business.amount_feature, sensors.simulation.outcome_source,
            sensors.simulation.history_days) == (None, "maintenance", 7.0)


def test_amount_feature_must_be_a_feature() -> None:
    tx = load_spec(SPECS / "transactions.yaml")
    with pytest.raises(ValueError, match="business.amount_feature 'price' is not a feature"):
        _with(tx, business={"amount_feature": "price"})


def test_business_view_without_an_amount_has_no_amount_panels() -> None:
    board = dashboards((), BusinessSpec(event_noun="readings", positive_noun="failures"))[-1]
    assert [p.id for p in board.panels] == [
        "bv-flagged", "bv-approval", "bv-flagged-time", "bv-decline-rate", "bv-by-namespace"]
    assert board.panels[0].title == "Flagged readings"
    assert not [m for p in board.panels for m in p.metrics if m.field == "amount"]
    assert board.description.startswith("Flagged readings, passed vs flagged, failures")
    panels = {p.id: p for p in board.panels}
    assert panels["bv-approval"].title == "Passed vs flagged"
    assert panels["bv-decline-rate"].title == "Flagged share over time"



def test_the_amount_panels_are_named_after_the_amount_feature() -> None:
    board = dashboards((), BusinessSpec(amount_feature="energy_kwh", event_noun="readings",
                                        positive_noun="failures"))[-1]
    panels = {p.id: p for p in board.panels}
    assert (panels["bv-at-risk"].title, panels["bv-at-risk"].metrics[0].name) == (
        "Energy kwh at risk", "energy kwh flagged")
    assert panels["bv-at-risk-time"].title == "Energy kwh at risk over time"
    assert panels["bv-caught-missed"].title == "Failures energy kwh caught vs missed"
    assert {m.field for m in panels["bv-caught-missed"].metrics} == {"amount"}  # the document
    assert "energy kwh at risk" in [m.name for m in panels["bv-by-namespace"].metrics]
    assert board.description.startswith("Flagged readings and energy kwh at risk, passed vs")


def test_the_decision_words_come_from_the_spec() -> None:
    tx = load_spec(SPECS / "transactions.yaml")
    board = dashboards(tx.feature_names, tx.business)[-1]
    panels = {p.id: p for p in board.panels}
    assert panels["bv-approval"].title == "Approved vs declined"
    assert [name for name, _ in panels["bv-approval"].x.named] == ["approved", "declined"]
    assert panels["bv-decline-rate"].title == "Declined share over time"
    assert "approved vs declined" in board.description

def test_simulator_comes_from_the_spec() -> None:
    tx = load_spec(SPECS / "transactions.yaml")
    assert simulator_name(_with(tx, name="cards")) == "transactions"
    with pytest.raises(ConfigError, match="spec cards names no simulator"):
        simulator_name(_with(tx, name="cards", simulation={}))
    with pytest.raises(ConfigError, match="simulator sensors writes sensor_reading events"):
        simulator_name(_with(tx, simulation={"simulator": "sensors"}))


@pytest.mark.parametrize(("spec", "source"), [("transactions", "chargebacks"),
                                              ("sensors", "maintenance")])
def test_outcome_source_and_history_span_come_from_the_spec(
        tmp_path: Path, spec: str, source: str) -> None:
    end = 1_750_000_000_000
    summary = write_history(tmp_path, 200, seed=3, end_ms=end, progress=False,
                            spec=load_spec(SPECS / f"{spec}.yaml"))
    _, outcomes = read_history(tmp_path)
    assert {o["source"] for o in outcomes} == {source}
    days = load_spec(SPECS / f"{spec}.yaml").simulation.history_days
    explicit = write_history(tmp_path / "explicit", 200, seed=3, end_ms=end, progress=False,
                             spec=load_spec(SPECS / f"{spec}.yaml"), days=days)
    assert (summary.first_event_time, summary.last_event_time) == (
        explicit.first_event_time, explicit.last_event_time)
