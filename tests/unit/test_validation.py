"""Unit tests of event validation against the pipeline spec's checks."""

from __future__ import annotations

import math
import random

import pytest

from precog.errors import ValidationError
from precog.spec import SPEC_DIR, PipelineSpec, load_spec
from precog.validation import CheckFailure, check_batch, check_event, validate_event

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


# check_batch: the fast path must never hide a failure, nor change one

#: values that sit on, just inside or just outside every limit and check of the specs below
HOSTILE_VALUES: list[object] = [
    None, "", " ", "x", "E" * 16, "E" * 17, "a" * 63, "a" * 64, "a" * 65, "\u00e9" * 64,
    "\u00e9" * 65, "e" * 256, "e" * 257, "c" * 1024, "c" * 1025, "\ud800", b"", b"x" * 1025,
    True, False, 0, 0.0, -0.0, -1, 1, 0.01, 0.009, 40.0, 50000, 50000.0, 50000.5, 1000.5,
    999.0, -50, -51.0, 200, 201.0, 1e15, -1e15, 1e15 + 2, 10**15, 10**15 + 1, 1e300, math.nan,
    math.inf, -math.inf, "12", "nan", "DE", "de", "D\n", "DEU", "US", "pos", "online", "fax",
    "fuel", "weapons", "card-7", "card-x", "card-", "sensor-1", "site-2", "pump", [], {},
    NOW, NOW + DAY, NOW + DAY + 1, NOW + 3600_000, NOW + 3600_001, NOW - 3650 * DAY,
    NOW - 3650 * DAY - 1, MIN_TIME, MIN_TIME - 1, 1_577_836_799_999, 1_577_836_800_000,
    -(2**63), 2**63 - 1, float(NOW), NOW + 0.5,
]


def _specs() -> dict[str, PipelineSpec]:
    limited = load_spec(SPEC_DIR / "transactions.yaml").model_dump()
    limited["event"].update(min_event_time="2020-01-01", max_time_age=None, max_abs=1e6,
                            max_id_bytes=8, max_string_bytes=16)
    limited["event"]["checks"]["amount"]["max_abs"] = 1e3
    limited["event"]["checks"]["customer_id"] = {"max_bytes": 2}
    limited["event"]["checks"]["currency"] = {"categories": ["EUR", "USD"], "required": False}
    limited["event"]["checks"]["extra"] = {"categories": ["0", "1"], "required": False}
    return {"transactions": load_spec(SPEC_DIR / "transactions.yaml"),
            "sensors": load_spec(SPEC_DIR / "sensors.yaml"),
            "limited": PipelineSpec.model_validate(limited)}


SENSOR_OK = {"event_id": "r1", "sensor_id": "sensor-1", "site": "site-2", "kind": "pump",
             "value": 3.5, "temperature": 40.0, "event_time": NOW}


def hostile_corpus(seed: int, base: dict, n: int) -> list[dict]:
    """Valid records with 0 to 3 fields (existing or new) set to hostile values or removed."""
    rng = random.Random(seed)
    names = [*base, "extra", "note"]
    out = []
    for _ in range(n):
        record = dict(base)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            name = rng.choice(names)
            if rng.random() < 0.1:
                record.pop(name, None)
            else:
                record[name] = rng.choice(HOSTILE_VALUES)
        out.append(record)
    return out


def decoded_hostile_records() -> list[dict]:
    """The records of the hostile corpus (tests/unit/test_hostile.py) that decode."""
    from precog.errors import EventError
    from tests.unit.test_hostile import CORPUS, TX

    records = []
    for value, _ in CORPUS.values():
        try:
            records.append(TX.decode(value))
        except EventError:
            continue
    return records


@pytest.mark.parametrize("name", ["transactions", "sensors", "limited"])
def test_check_batch_equals_check_event_on_a_hostile_corpus(name: str, ok: dict) -> None:
    spec = _specs()[name]
    base = SENSOR_OK if name == "sensors" else {**ok, "event_id": "e" * 8, "currency": "EUR",
                                                 "customer_id": "c1"}
    records = [base, *hostile_corpus(7, base, 4000)]
    if name == "transactions":
        records += decoded_hostile_records()
    assert check_batch(spec, records, MIN_TIME) == [check_event(spec, r, MIN_TIME)
                                                    for r in records]  # all in the future
    expected = [check_event(spec, r, NOW) for r in records]
    assert check_batch(spec, records, NOW) == expected
    # the corpus reaches both sides of every kind of check
    kinds = {f.check.split(".")[1] for fs in expected for f in fs}
    assert kinds >= {"required", "length", "type", "finite", "range", "min", "categories",
                     "pattern", "skew"}
    if name != "limited":  # there amount's range (max_abs 1e3) comes before its max
        assert {"max", "age"} <= kinds
    valid = sum(not fs for fs in expected)
    assert 1000 < valid < len(records) - 1000


def test_check_batch_sends_only_the_records_with_failures_to_check_event(
    spec: PipelineSpec, ok: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precog import validation

    records = hostile_corpus(11, ok, 500)
    expected = [check_event(spec, r, NOW) for r in records]
    slow: list[dict] = []

    def counting(spec_: PipelineSpec, record: dict, now_ms: int) -> list[CheckFailure]:
        slow.append(record)
        return check_event(spec_, record, now_ms)

    monkeypatch.setattr(validation, "check_event", counting)
    assert validation.check_batch(spec, records, NOW) == expected
    # what reaches check_event: every invalid record, and valid ones with an unusual value
    invalid = [r for r, fs in zip(records, expected, strict=True) if fs]
    assert [r for r in slow if r in invalid] == invalid
    assert ok not in slow and len(slow) < len(invalid) + 50


def test_check_batch_of_nothing_and_of_valid_records(spec: PipelineSpec, ok: dict) -> None:
    assert check_batch(spec, [], NOW) == []
    edge = {**ok, "amount": 50000.0, "event_time": NOW + DAY, "merchant_id": "m" * 64}
    assert check_batch(spec, [ok, edge, {**ok, "amount": 0.01}], NOW) == [[], [], []]
