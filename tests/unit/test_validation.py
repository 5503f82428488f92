"""Unit tests of event validation against the pipeline spec's checks."""

from __future__ import annotations

import math

import pytest

from precog.errors import ValidationError
from precog.spec import SPEC_DIR, PipelineSpec, load_spec
from precog.validation import CheckFailure, check_event, validate_event

pytestmark = pytest.mark.unit

NOW = 1_700_000_000_000
DAY = 86_400_000


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC_DIR / "transactions.yaml")


@pytest.fixture
def ok() -> dict:
    return {"event_id": "e1", "card_id": "card-7", "customer_id": "cust-1",
            "merchant_id": "m-1", "category": "fuel", "amount": 40.0, "currency": "EUR",
            "country": "DE", "channel": "pos", "event_time": NOW}


def checks(spec: PipelineSpec, record: dict, now: int = NOW) -> list[str]:
    return [f.check for f in check_event(spec, record, now)]


def test_valid_record_passes(spec: PipelineSpec, ok: dict) -> None:
    assert check_event(spec, ok, NOW) == []
    assert check_event(spec, {**ok, "amount": 0.01, "event_time": NOW + DAY}, NOW) == []
    assert check_event(spec, {**ok, "amount": 50000.0}, NOW) == []
    validate_event(spec, ok, NOW)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount": -5.0}, ["amount.min"]),
        ({"amount": 0.0}, ["amount.min"]),
        ({"amount": 50000.5}, ["amount.max"]),
        ({"country": "DEU"}, ["country.pattern"]),
        ({"country": "de"}, ["country.pattern"]),
        ({"country": "D\n"}, ["country.pattern"]),
        ({"channel": "fax"}, ["channel.categories"]),
        ({"category": "weapons"}, ["category.categories"]),
        ({"card_id": "card-x"}, ["card_id.pattern"]),
        ({"amount": math.nan}, ["amount.finite"]),
        ({"amount": math.inf}, ["amount.finite"]),
        ({"amount": "12"}, ["amount.type"]),
        ({"amount": True}, ["amount.type"]),
        ({"event_time": NOW + DAY + 1}, ["event_time.skew"]),
        ({"merchant_id": None}, ["merchant_id.required"]),
        ({"event_id": ""}, ["event_id.required"]),
        ({"amount": None}, ["amount.required"]),
        ({"event_time": "yesterday"}, ["event_time.type"]),
    ],
)
def test_each_check_fails_alone(spec: PipelineSpec, ok: dict, change: dict,
                                expected: list[str]) -> None:
    assert checks(spec, {**ok, **change}) == expected


def test_missing_fields_and_several_failures(spec: PipelineSpec, ok: dict) -> None:
    record = {k: v for k, v in ok.items() if k not in ("card_id", "merchant_id")}
    record.update(amount=-1.0, channel="fax", event_time=NOW + 2 * DAY)
    assert check_event(spec, record, NOW) == [
        CheckFailure("card_id", "card_id.required", "missing"),
        CheckFailure("merchant_id", "merchant_id.required", "missing"),
        CheckFailure("amount", "amount.min", "-1.0 is below 0.01"),
        CheckFailure("channel", "channel.categories",
                     "'fax' is not one of pos, online, atm"),
        CheckFailure("event_time", "event_time.skew", "172800s in the future (limit 1d)"),
    ]


def test_customer_id_is_not_required(spec: PipelineSpec, ok: dict) -> None:
    assert checks(spec, {k: v for k, v in ok.items() if k != "customer_id"}) == []


def test_optional_check_is_skipped_when_missing(ok: dict) -> None:
    raw = load_spec(SPEC_DIR / "transactions.yaml").model_dump()
    raw["event"]["checks"]["currency"] = {"categories": ["EUR", "USD"], "required": False}
    spec = PipelineSpec.model_validate(raw)
    assert checks(spec, {k: v for k, v in ok.items() if k != "currency"}) == []
    assert checks(spec, {**ok, "currency": "XYZ"}) == ["currency.categories"]


def test_validate_event_names_every_failure(spec: PipelineSpec, ok: dict) -> None:
    with pytest.raises(ValidationError) as err:
        validate_event(spec, {**ok, "amount": -1.0, "country": "xx"}, NOW)
    assert str(err.value) == (
        "2 failed checks: amount.min: -1.0 is below 0.01; "
        "country.pattern: 'xx' does not match ^[A-Z]{2}$"
    )
