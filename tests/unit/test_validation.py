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
MIN_TIME = 946_684_800_000  # 2000-01-01T00:00:00Z


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
        ({"event_time": -(2**63)}, ["event_time.range"]),
        ({"event_time": 0}, ["event_time.range"]),
        ({"event_time": -1}, ["event_time.range"]),
        ({"event_time": MIN_TIME - 1}, ["event_time.range"]),
        ({"event_time": NOW - 3650 * DAY - 1}, ["event_time.age"]),
        ({"event_time": 2**63 - 1}, ["event_time.skew"]),
        ({"event_time": math.nan}, ["event_time.finite"]),
        ({"amount": 1e300}, ["amount.range"]),
        ({"amount": -1e16}, ["amount.range"]),
        ({"amount": 10**16}, ["amount.range"]),
        ({"event_id": "e" * 257}, ["event_id.length"]),
        ({"card_id": "card-" + "1" * 252}, ["card_id.length"]),
        ({"merchant_id": "\u00e9" * 129}, ["merchant_id.length"]),
        ({"customer_id": "c" * 1025}, ["customer_id.length"]),
        ({"currency": b"x" * 1025}, ["currency.length"]),
        ({"amount": "9" * 2000}, ["amount.length"]),
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


def test_bounds_are_inclusive(spec: PipelineSpec, ok: dict) -> None:
    edge = {"event_id": "e" * 256, "card_id": "card-" + "1" * 251, "merchant_id": "\u00e9" * 128,
            "customer_id": "c" * 1024, "amount": 1e15}
    assert checks(spec, {**ok, **edge, "amount": 50000.0}) == []
    assert checks(spec, {**ok, "event_time": MIN_TIME}, now=MIN_TIME) == []
    assert checks(spec, {**ok, "event_time": NOW - 3650 * DAY}) == []


def test_bound_messages_name_the_value_and_the_limit(spec: PipelineSpec, ok: dict) -> None:
    record = {**ok, "event_id": "e" * 600_000, "merchant_id": "\u00e9" * 500_000,
              "amount": 1e300, "event_time": -(2**63)}
    assert [str(f) for f in check_event(spec, record, NOW)] == [
        "event_id.length: 600000 bytes, limit 256",
        "merchant_id.length: 1000000 bytes, limit 256",
        "amount.range: 1e+300 is outside \u00b11e+15",
        "event_time.range: -9223372036854775808 is before min_event_time 946684800000"
        " (2000-01-01T00:00:00Z)",
    ]
    old = {**ok, "event_time": MIN_TIME}
    assert [str(f) for f in check_event(spec, old, NOW)] == [
        "event_time.age: 946684800000 is 8719d before now 1700000000000"
        " (limit max_time_age 3650d)",
    ]


def test_long_values_are_cut_in_messages(spec: PipelineSpec, ok: dict) -> None:
    [failure] = check_event(spec, {**ok, "channel": "f" * 1000}, NOW)
    assert failure.check == "channel.categories"
    assert failure.message == f"{'f' * 64!r}... (1000 bytes) is not one of pos, online, atm"


def test_limits_come_from_the_spec_and_per_field_checks(ok: dict) -> None:
    raw = load_spec(SPEC_DIR / "transactions.yaml").model_dump()
    raw["event"].update(min_event_time="2020-01-01", max_time_age=None, max_abs=1e6,
                        max_id_bytes=8, max_string_bytes=16)
    raw["event"]["checks"]["amount"]["max_abs"] = 1e3
    raw["event"]["checks"]["customer_id"] = {"max_bytes": 2}
    spec = PipelineSpec.model_validate(raw)
    assert spec.event.min_event_time == 1_577_836_800_000
    base = {**ok, "event_id": "e" * 8, "currency": "E" * 16, "customer_id": "c1"}
    assert checks(spec, base) == []
    assert checks(spec, {**base, "event_id": "e" * 9, "currency": "E" * 17,
                         "customer_id": "c12", "amount": 1000.5}) == [
        "event_id.length", "customer_id.length", "amount.range", "currency.length",
    ]
    assert checks(spec, {**base, "event_time": 1_577_836_799_999}) == ["event_time.range"]
    assert checks(spec, {**base, "event_time": 1_577_836_800_000}, now=10**15) == []


@pytest.mark.parametrize("bad", [{"max_time_age": "10 years"}, {"min_event_time": "soon"},
                                 {"max_id_bytes": 0}, {"max_abs": 0}])
def test_bad_limits_are_refused_at_load(bad: dict) -> None:
    raw = load_spec(SPEC_DIR / "transactions.yaml").model_dump()
    raw["event"].update(bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        PipelineSpec.model_validate(raw)
