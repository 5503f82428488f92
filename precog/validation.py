"""Event validation: the quality checks of a pipeline spec applied to one decoded record.

Checks, each named ``<field>.<check>`` so monitors can count failures per check:

* ``<field>.required``: a required field is missing, None or an empty string (the id,
  entity and time fields, every field a feature reads, and every field in
  ``event.checks`` unless it says ``required: false``);
* ``<field>.length``: a string (UTF-8 bytes) or bytes value is longer than its limit:
  ``event.max_id_bytes`` for the id, the entity and every field kept in entity state
  (novelty features), ``event.max_string_bytes`` for any other, ``checks.<field>.max_bytes``
  to override;
* ``<field>.type``: a number was expected (min/max checks, time field, numeric features);
* ``<field>.finite``: a number is NaN or infinite;
* ``<field>.range``: a number's magnitude is above ``event.max_abs`` (or
  ``checks.<field>.max_abs``), large enough to overflow the features' arithmetic;
* ``<field>.min`` / ``<field>.max`` / ``<field>.categories`` / ``<field>.pattern``: the
  spec's ``event.checks`` (patterns must match the whole value); skipped for a value that
  already failed its length, finite or range check;
* ``<time field>.range``: the event time is before ``event.min_event_time``;
* ``<time field>.age``: the event time is more than ``event.max_time_age`` before now;
* ``<time field>.skew``: the event time is more than ``event.max_time_skew`` after now.

Every check is cheap and reads nothing but the record, so the score agent runs them all
before any entity state is read or written; :func:`check_batch` does it for a batch, with a
short path for the valid records. Messages quote at most :data:`SHOWN_CHARS`
characters of a value, so a dead letter's reason stays small.

>>> from precog.spec import SPEC_DIR, load_spec
>>> spec = load_spec(SPEC_DIR / "transactions.yaml")
>>> now = 1_700_000_000_000
>>> ok = {"event_id": "e1", "card_id": "card-1", "customer_id": "c1", "merchant_id": "m1",
...       "category": "fuel", "amount": 40.0, "currency": "EUR", "country": "DE",
...       "channel": "pos", "event_time": now}
>>> check_event(spec, ok, now_ms=now)
[]
>>> [f.check for f in check_event(spec, {**ok, "amount": -1.0, "country": "de"}, now)]
['amount.min', 'country.pattern']
>>> for f in check_event(spec, {**ok, "merchant_id": "m" * 300, "event_time": 0}, now):
...     print(f)
merchant_id.length: 300 bytes, limit 256
event_time.range: 0 is before min_event_time 946684800000 (2000-01-01T00:00:00Z)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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

#: The longest quoted value in a failure message; longer ones are cut with ``...``.
SHOWN_CHARS = 64


@dataclass(frozen=True)
class CheckFailure:
    """One failed check of one field."""

    field: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@dataclass(frozen=True)
class _Rules:
    """What :func:`check_event` derives once per spec."""

    required: list[str]
    numeric: set[str]
    max_bytes: dict[str, int]  # fields with their own limit; others: default_bytes
    default_bytes: int
    max_abs: dict[str, float]  # fields with their own limit; others: default_abs
    default_abs: float
    short_chars: int  # a str this short is within every byte limit (4 bytes a character)
    small_abs: float  # a number this small is within every magnitude limit
    min_time: int
    max_age: int | None
    max_skew: int
    # the spec's event.checks for :func:`check_batch`'s fast path, compiled
    bounds: tuple[tuple[str, float, float], ...]  # (field, min or -inf, max or inf)
    categories: tuple[tuple[str, frozenset[str]], ...]
    # (field, fullmatch, values seen to match: at most _KNOWN_MATCHES, saves the regex)
    patterns: tuple[tuple[str, Callable[[str], re.Match[str] | None], set[str]], ...]


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


_RULES: dict[int, tuple[PipelineSpec, _Rules]] = {}
#: how many matching values :func:`check_batch` remembers per pattern (entity ids, codes)
_KNOWN_MATCHES = 4096


def _rules(spec: PipelineSpec) -> _Rules:
    """The spec's derived rules, cached per spec object."""
    hit = _RULES.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    rules = _derive_rules(spec)
    if len(_RULES) > 64:  # specs are few; never grow without bound
        _RULES.clear()
    _RULES[id(spec)] = (spec, rules)
    return rules


def _derive_rules(spec: PipelineSpec) -> _Rules:
    ev = spec.event
    required = [ev.id_field, ev.entity_field, ev.time_field]
    numeric = {ev.time_field}
    # key-like: ids, and values kept in entity state (Redis) for as long as its TTL
    key_like = {ev.id_field, ev.entity_field}
    for f in spec.features:
        if isinstance(f, (*_NUMERIC_FEATURES, EqualsFeature, NoveltyFeature)):
            required.append(f.field)
        if isinstance(f, _NUMERIC_FEATURES):
            numeric.add(f.field)
        if isinstance(f, NoveltyFeature):
            key_like.add(f.field)
    max_bytes = dict.fromkeys(key_like, ev.max_id_bytes)
    max_abs: dict[str, float] = {}
    for name, check in ev.checks.items():
        if check.required:
            required.append(name)
        elif name in required and name not in (ev.id_field, ev.entity_field, ev.time_field):
            required = [r for r in required if r != name]
        if check.min is not None or check.max is not None or check.max_abs is not None:
            numeric.add(name)
        if check.max_bytes is not None:
            max_bytes[name] = check.max_bytes
        if check.max_abs is not None:
            max_abs[name] = check.max_abs
    return _Rules(
        required=list(dict.fromkeys(required)),
        numeric=numeric,
        max_bytes=max_bytes,
        default_bytes=ev.max_string_bytes,
        max_abs=max_abs,
        default_abs=ev.max_abs,
        short_chars=min([ev.max_string_bytes, *max_bytes.values()]) // 4,
        small_abs=min([ev.max_abs, *max_abs.values()]),
        min_time=ev.min_event_time,
        max_age=None if ev.max_time_age is None else parse_duration(ev.max_time_age),
        max_skew=parse_duration(ev.max_time_skew),
        bounds=tuple(
            (name, -math.inf if c.min is None else c.min, math.inf if c.max is None else c.max)
            for name, c in ev.checks.items() if c.min is not None or c.max is not None
        ),
        categories=tuple((name, frozenset(c.categories)) for name, c in ev.checks.items()
                         if c.categories is not None),
        patterns=tuple((name, _pattern(c.pattern).fullmatch, set())
                       for name, c in ev.checks.items() if c.pattern is not None),
    )


def _missing(value: Any) -> bool:
    return value is None or value == ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """``repr(value)``, a long string cut to :data:`SHOWN_CHARS` characters and its length."""
    if isinstance(value, str | bytes | bytearray) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({utf8_length(value)} bytes)"
    text = repr(value)
    return text if len(text) <= 2 * SHOWN_CHARS else text[: 2 * SHOWN_CHARS] + "..."


def utf8_length(value: str | bytes | bytearray) -> int:
    """Length in bytes: UTF-8 for a string (lone surrogates count 3 bytes each).

    >>> utf8_length("abc"), utf8_length("caf\u00e9"), utf8_length(bytes(2))
    (3, 5, 2)
    """
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    return len(value)


def _field_checks(name: str, value: Any, check: FieldCheck) -> list[CheckFailure]:
    out: list[CheckFailure] = []
    if check.min is not None and _is_number(value) and value < check.min:
        out.append(CheckFailure(name, f"{name}.min", f"{value!r} is below {check.min:g}"))
    if check.max is not None and _is_number(value) and value > check.max:
        out.append(CheckFailure(name, f"{name}.max", f"{value!r} is above {check.max:g}"))
    if check.categories is not None and str(value) not in check.categories:
        allowed = ", ".join(check.categories)
        out.append(
            CheckFailure(name, f"{name}.categories", f"{_show(value)} is not one of {allowed}")
        )
    if check.pattern is not None and not _pattern(check.pattern).fullmatch(str(value)):
        out.append(
            CheckFailure(name, f"{name}.pattern",
                         f"{_show(value)} does not match {check.pattern}")
        )
    return out


def _value_check(rules: _Rules, time_field: str, name: str, value: Any) -> CheckFailure | None:
    """The length, type, finite or range failure of one value (at most one)."""
    if isinstance(value, (str, bytes, bytearray)):
        limit = rules.max_bytes.get(name, rules.default_bytes)
        n = utf8_length(value)
        if n > limit:
            return CheckFailure(name, f"{name}.length", f"{n} bytes, limit {limit}")
    if name in rules.numeric and not _missing(value) and not _is_number(value):
        return CheckFailure(name, f"{name}.type", f"{_show(value)} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        return CheckFailure(name, f"{name}.finite", f"{value!r} is not finite")
    if name != time_field and _is_number(value):
        limit_abs = rules.max_abs.get(name, rules.default_abs)
        if abs(value) > limit_abs:
            return CheckFailure(name, f"{name}.range", f"{value!r} is outside ±{limit_abs:g}")
    return None


def check_event(spec: PipelineSpec, record: Mapping[str, Any], now_ms: int) -> list[CheckFailure]:
    """Every failed check of ``record``, in a stable order (empty when it is valid)."""
    rules = _rules(spec)
    time_field = spec.event.time_field
    failures: list[CheckFailure] = []
    for name in rules.required:
        if _missing(record.get(name)):
            failures.append(CheckFailure(name, f"{name}.required", "missing"))
    failed: set[str] = set()
    numeric, short, small = rules.numeric, rules.short_chars, rules.small_abs
    for name, value in record.items():
        # fast path for the common plain values (the score agent's hot loop)
        cls = type(value)
        if cls is str:
            if len(value) <= short and name not in numeric:
                continue
        elif cls is float or cls is int:
            if -small <= value <= small:  # False for NaN and infinities
                continue
        elif value is None:
            continue
        failure = _value_check(rules, time_field, name, value)
        if failure is not None:
            failures.append(failure)
            failed.add(name)
    for name, check in spec.event.checks.items():
        value = record.get(name)
        if _missing(value) or name in failed:
            continue
        failures.extend(_field_checks(name, value, check))
    if time_field not in failed:
        failures.extend(_time_bounds(rules, time_field, record.get(time_field), now_ms, spec))
    return failures


def check_batch(
    spec: PipelineSpec, records: Iterable[Mapping[str, Any]], now_ms: int
) -> list[list[CheckFailure]]:
    """:func:`check_event` of each record (the same failures in the same order), faster.

    A record that passes every check on a short path compiled once per spec (plain values
    of ordinary size, the spec's checks, the time bounds) gets ``[]`` without building any
    failure; any other record is checked by :func:`check_event` itself.

    >>> from precog.spec import SPEC_DIR, load_spec
    >>> spec = load_spec(SPEC_DIR / "transactions.yaml")
    >>> ok = {"event_id": "e1", "card_id": "card-1", "merchant_id": "m1", "category": "fuel",
    ...       "amount": 40.0, "country": "DE", "channel": "pos", "event_time": 10**12}
    >>> [[f.check for f in fs] for fs in check_batch(spec, [ok, {**ok, "amount": 0.0}], 10**12)]
    [[], ['amount.min']]
    """
    rules = _rules(spec)
    time_field = spec.event.time_field
    return [[] if _passes(rules, time_field, r, now_ms) else check_event(spec, r, now_ms)
            for r in records]


def _passes(rules: _Rules, time_field: str, record: Mapping[str, Any], now_ms: int) -> bool:
    """True only if :func:`check_event` finds nothing (False: it has to look closer)."""
    get = record.get
    for name in rules.required:
        value = get(name)
        if value is None or value == "":
            return False
    numeric, short, small = rules.numeric, rules.short_chars, rules.small_abs
    for name, value in record.items():  # what check_event's own fast path lets through
        cls = type(value)
        if cls is str:
            if len(value) > short or name in numeric:
                return False
        elif cls is float or cls is int:
            if not -small <= value <= small:  # also NaN and infinities
                return False
        elif value is not None:
            return False
    # every value is now a short str of a non-numeric field, a finite number or None
    for name, low, high in rules.bounds:
        value = get(name)
        if value is not None and not low <= value <= high:  # numeric: never a str here
            return False
    # values are hashable here; a str is looked up as it is before str() is called
    for name, allowed in rules.categories:
        value = get(name)
        if value in allowed or value is None or value == "":
            continue
        if str(value) not in allowed:
            return False
    for name, fullmatch, known in rules.patterns:
        value = get(name)
        if value in known or value is None or value == "":
            continue
        text = str(value)
        if text not in known:
            if fullmatch(text) is None:
                return False
            if len(known) < _KNOWN_MATCHES:
                known.add(text)
    t = record[time_field]  # required and numeric: a number
    if t < rules.min_time or t - now_ms > rules.max_skew:
        return False
    return rules.max_age is None or now_ms - t <= rules.max_age


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_bounds(
    rules: _Rules, name: str, t: Any, now_ms: int, spec: PipelineSpec
) -> list[CheckFailure]:
    """At most one of ``<time>.range`` (absolute), ``.age`` (past) and ``.skew`` (future)."""
    if not _is_number(t):
        return []
    if t < rules.min_time:
        msg = f"{t!r} is before min_event_time {rules.min_time} ({_iso(rules.min_time)})"
        return [CheckFailure(name, f"{name}.range", msg)]
    if rules.max_age is not None and now_ms - t > rules.max_age:
        days = (now_ms - t) / 86_400_000
        msg = (f"{t!r} is {days:.0f}d before now {now_ms}"
               f" (limit max_time_age {spec.event.max_time_age})")
        return [CheckFailure(name, f"{name}.age", msg)]
    if t - now_ms > rules.max_skew:
        ahead = (t - now_ms) / 1000.0
        msg = f"{ahead:.0f}s in the future (limit {spec.event.max_time_skew})"
        return [CheckFailure(name, f"{name}.skew", msg)]
    return []


def failure_reason(failures: Iterable[CheckFailure]) -> str:
    """The reason a dead letter (and a batch reject) carries for an event's failed checks.

    >>> failure_reason([CheckFailure("amount", "amount.min", "-1.0 is below 0.01")])
    'amount.min: -1.0 is below 0.01'
    """
    return "; ".join(str(f) for f in failures)


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
        detail = failure_reason(failures)
        raise ValidationError(f"{len(failures)} failed checks: {detail}")
