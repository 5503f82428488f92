"""Event validation: the quality checks of a pipeline spec applied to one decoded record.

Checks, each named ``<field>.<check>`` so monitors can count failures per check:

* ``<field>.required``: a required field is missing, None or an empty string (the id,
  entity and time fields, every field a feature reads, and every field in
  ``event.checks`` unless it says ``required: false``);
* ``<field>.type``: a number was expected (min/max checks, time field, numeric features);
* ``<field>.finite``: a number is NaN or infinite;
* ``<field>.min`` / ``<field>.max`` / ``<field>.categories`` / ``<field>.pattern``: the
  spec's ``event.checks`` (patterns must match the whole value);
* ``<time field>.skew``: the event time is more than ``event.max_time_skew`` after now.

>>> from precog.spec import SPEC_DIR, load_spec
>>> spec = load_spec(SPEC_DIR / "transactions.yaml")
>>> ok = {"event_id": "e1", "card_id": "card-1", "customer_id": "c1", "merchant_id": "m1",
...       "category": "fuel", "amount": 40.0, "currency": "EUR", "country": "DE",
...       "channel": "pos", "event_time": 1_000}
>>> check_event(spec, ok, now_ms=1_000)
[]
>>> [f.check for f in check_event(spec, {**ok, "amount": -1.0, "country": "de"}, 1_000)]
['amount.min', 'country.pattern']
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from precog.errors import ValidationError
from precog.spec import (
    DecayedSumFeature,
    EqualsFeature,
    FieldCheck,
    Log1pFeature,
    NoveltyFeature,
    PipelineSpec,
    RatioToMeanFeature,
    ValueFeature,
    parse_duration,
)

_NUMERIC_FEATURES = (ValueFeature, Log1pFeature, DecayedSumFeature, RatioToMeanFeature)


@dataclass(frozen=True)
class CheckFailure:
    """One failed check of one field."""

    field: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


_RULES: dict[int, tuple[PipelineSpec, list[str], set[str]]] = {}


def _rules(spec: PipelineSpec) -> tuple[list[str], set[str]]:
    """(required fields in a stable order, fields that must be numbers), cached per spec."""
    hit = _RULES.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1], hit[2]
    required, numeric = _derive_rules(spec)
    if len(_RULES) > 64:  # specs are few; never grow without bound
        _RULES.clear()
    _RULES[id(spec)] = (spec, required, numeric)
    return required, numeric


def _derive_rules(spec: PipelineSpec) -> tuple[list[str], set[str]]:
    ev = spec.event
    required = [ev.id_field, ev.entity_field, ev.time_field]
    numeric = {ev.time_field}
    for f in spec.features:
        if isinstance(f, (*_NUMERIC_FEATURES, EqualsFeature, NoveltyFeature)):
            required.append(f.field)
        if isinstance(f, _NUMERIC_FEATURES):
            numeric.add(f.field)
    for name, check in ev.checks.items():
        if check.required:
            required.append(name)
        elif name in required and name not in (ev.id_field, ev.entity_field, ev.time_field):
            required = [r for r in required if r != name]
        if check.min is not None or check.max is not None:
            numeric.add(name)
    return list(dict.fromkeys(required)), numeric


def _missing(value: Any) -> bool:
    return value is None or value == ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field_checks(name: str, value: Any, check: FieldCheck) -> list[CheckFailure]:
    out: list[CheckFailure] = []
    if check.min is not None and _is_number(value) and value < check.min:
        out.append(CheckFailure(name, f"{name}.min", f"{value!r} is below {check.min:g}"))
    if check.max is not None and _is_number(value) and value > check.max:
        out.append(CheckFailure(name, f"{name}.max", f"{value!r} is above {check.max:g}"))
    if check.categories is not None and str(value) not in check.categories:
        allowed = ", ".join(check.categories)
        out.append(
            CheckFailure(name, f"{name}.categories", f"{value!r} is not one of {allowed}")
        )
    if check.pattern is not None and not _pattern(check.pattern).fullmatch(str(value)):
        out.append(
            CheckFailure(name, f"{name}.pattern", f"{value!r} does not match {check.pattern}")
        )
    return out


def check_event(spec: PipelineSpec, record: Mapping[str, Any], now_ms: int) -> list[CheckFailure]:
    """Every failed check of ``record``, in a stable order (empty when it is valid)."""
    required, numeric = _rules(spec)
    failures: list[CheckFailure] = []
    for name in required:
        if _missing(record.get(name)):
            failures.append(CheckFailure(name, f"{name}.required", "missing"))
    for name, value in record.items():
        if name in numeric and not _missing(value) and not _is_number(value):
            failures.append(CheckFailure(name, f"{name}.type", f"{value!r} is not a number"))
        elif isinstance(value, float) and not math.isfinite(value):
            failures.append(CheckFailure(name, f"{name}.finite", f"{value!r} is not finite"))
    for name, check in spec.event.checks.items():
        value = record.get(name)
        if _missing(value) or (isinstance(value, float) and not math.isfinite(value)):
            continue
        failures.extend(_field_checks(name, value, check))
    failures.extend(_skew(spec, record, now_ms))
    return failures


def _skew(spec: PipelineSpec, record: Mapping[str, Any], now_ms: int) -> list[CheckFailure]:
    name = spec.event.time_field
    t = record.get(name)
    if not isinstance(t, int | float) or isinstance(t, bool):
        return []
    limit = parse_duration(spec.event.max_time_skew)
    if t - now_ms > limit:
        ahead = (t - now_ms) / 1000.0
        msg = f"{ahead:.0f}s in the future (limit {spec.event.max_time_skew})"
        return [CheckFailure(name, f"{name}.skew", msg)]
    return []


def validate_event(spec: PipelineSpec, record: Mapping[str, Any], now_ms: int) -> None:
    """Raise :class:`~precog.errors.ValidationError` naming every failed check.

    >>> from precog.spec import SPEC_DIR, load_spec
    >>> spec = load_spec(SPEC_DIR / "transactions.yaml")
    >>> validate_event(spec, {"event_id": "e1"}, 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    precog.errors.ValidationError: 7 failed checks: card_id.required: missing; ...
    """
    failures = check_event(spec, record, now_ms)
    if failures:
        detail = "; ".join(str(f) for f in failures)
        raise ValidationError(f"{len(failures)} failed checks: {detail}")
