"""The hostile corpus: every bad record gets its own precise reason and a sendable dead letter.

Each bad value sits between two valid records, is triaged the way the score agent does it
(decode, then ``check_event``, both before any state is read), and must leave its
neighbours valid.
"""

from __future__ import annotations

import hashlib
import math

import pytest

from precog.avro import Codec
from precog.errors import EventError, ValidationError
from precog.scoring import DLQ_MESSAGE_LIMIT, DLQ_PAYLOAD_KEEP, EventContext, dead_letter
from precog.spec import SPEC_DIR, load_spec
from precog.validation import check_event

pytestmark = pytest.mark.unit

SPEC = load_spec(SPEC_DIR / "transactions.yaml")
TX = Codec.for_schema("transaction")
DLQ = Codec.for_schema("dead_letter")
NOW = 1_700_000_000_000
VALID = {"event_id": "e-1", "card_id": "card-1", "customer_id": "cust-1", "merchant_id": "m-1",
         "category": "fuel", "amount": 40.0, "currency": "EUR", "country": "DE",
         "channel": "pos", "event_time": NOW - 1000}
GOOD = TX.encode(VALID)
OUTCOME = Codec.for_schema("outcome").encode(
    {"event_id": "e-1", "label": 1, "event_time": 1, "outcome_time": 2, "source": "x"}
)
TX_FP = GOOD[2:10].hex()
RANGE = "is before min_event_time 946684800000 (2000-01-01T00:00:00Z)"


def _tx(**change: object) -> bytes:
    return TX.encode({**VALID, **change})


#: name -> (value on the wire, the exact reason it is dead-lettered with)
CORPUS: dict[str, tuple[bytes | None, str]] = {
    "event_time -2**63": (_tx(event_time=-(2**63)),
                          f"event_time.range: -9223372036854775808 {RANGE}"),
    "event_time 0": (_tx(event_time=0), f"event_time.range: 0 {RANGE}"),
    "event_time negative": (_tx(event_time=-86_400_000), f"event_time.range: -86400000 {RANGE}"),
    "event_time 2001": (_tx(event_time=978_307_200_000),
                        "event_time.age: 978307200000 is 8353d before now 1700000000000"
                        " (limit max_time_age 3650d)"),
    "event_time far future": (_tx(event_time=2**63 - 1),
                              "event_time.skew: 9223370336854776s in the future (limit 1d)"),
    "1 MB merchant id": (_tx(merchant_id="m" * 1_000_000),
                         "merchant_id.length: 1000000 bytes, limit 256"),
    "1 MB customer id": (_tx(customer_id="\u00e9" * 500_000),
                         "customer_id.length: 1000000 bytes, limit 1024"),
    "600 KB event id": (_tx(event_id="e" * 600_000), "event_id.length: 600000 bytes, limit 256"),
    "NaN amount": (_tx(amount=math.nan), "amount.finite: nan is not finite"),
    "inf amount": (_tx(amount=-math.inf), "amount.finite: -inf is not finite"),
    "1e300 amount": (_tx(amount=1e300), "amount.range: 1e+300 is outside \u00b11e+15"),
    "tombstone": (None, "empty value (tombstone): null"),
    "empty value": (b"", "empty value (tombstone): 0 bytes"),
    "5-byte header": (GOOD[:5], "truncated header: 5 bytes, a single-object record starts with 10"),
    "trailing bytes": (GOOD + b"\x00\x00\x00",
                       "trailing bytes: 3 after a valid record (precog.events.Transaction/v1)"),
    "bad marker": (b"\x00\x01" + GOOD[2:],
                   "bad marker 0001 (expected c301): not an Avro single-object record"),
    "unknown fingerprint": (OUTCOME,
                            f"record written with an unknown schema (fingerprint"
                            f" {OUTCOME[2:10].hex()}), expected precog.events.Transaction/v1"
                            f" (fingerprints {TX_FP})"),
    "truncated body": (GOOD[:-4], "corrupt precog.events.Transaction/v1 record at byte 58 of 58"
                                  " (the body ends early): IndexError: string index out of range"),
    "invalid utf-8": (GOOD[:10] + b"\x04\xff\xfe" + GOOD[14:],
                      "corrupt precog.events.Transaction/v1 record at byte 13 of 61:"
                      " UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0:"
                      " invalid start byte"),
}


DECODE = {"tombstone", "empty value", "5-byte header", "trailing bytes", "bad marker",
          "unknown fingerprint", "truncated body", "invalid utf-8"}


def triage(value: bytes | None) -> tuple[str, str]:
    """('ok', '') or (stage, reason): the score agent's decode and check, nothing else."""
    try:
        record = TX.decode(value)
        failures = check_event(SPEC, record, NOW)
        if failures:
            raise ValidationError("; ".join(str(f) for f in failures))
    except EventError as exc:
        return ("validate" if isinstance(exc, ValidationError) else "decode"), str(exc)
    return "ok", ""


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_hostile_record_has_its_exact_reason_and_spares_its_neighbours(name: str) -> None:
    value, reason = CORPUS[name]
    batch = [GOOD, value, GOOD]
    outcome = [triage(v) for v in batch]
    assert outcome[0] == outcome[2] == ("ok", "")
    stage, got = outcome[1]
    assert got == reason
    assert stage == ("decode" if name in DECODE else "validate")


def test_reasons_are_distinct_and_never_empty() -> None:
    reasons = {name: triage(v)[1] for name, (v, _) in CORPUS.items()}
    assert all(r and not r.rstrip().endswith(":") for r in reasons.values())
    assert len(set(reasons.values())) == len(CORPUS) == 19


@pytest.mark.parametrize("name", list(CORPUS))
def test_every_dead_letter_of_the_corpus_is_sendable(name: str) -> None:
    value, reason = CORPUS[name]
    stage, got = triage(value)
    key = b"card-1"
    error = (ValidationError if stage == "validate" else EventError)(got)
    rec, headers = dead_letter(origin=EventContext("prod.events.transactions", 2, 41),
                               stage=stage, error=error, key=key, payload=value, failed_time=NOW)
    data = DLQ.encode(rec)
    message = len(data) + len(rec["key"]) + sum(len(k) + len(v) for k, v in headers)
    assert message < DLQ_MESSAGE_LIMIT
    back = DLQ.decode(data)
    assert back["error_message"] == reason
    h = dict(headers)
    if value is None:
        assert back["payload"] is None and "precog.payload_size" not in h
    else:
        assert h["precog.payload_size"] == str(len(value)).encode()
        assert h["precog.payload_sha256"] == hashlib.sha256(value).hexdigest().encode()


def test_a_1_mb_payload_is_cut_to_64_kib_with_its_size_and_sha256() -> None:
    value, _ = CORPUS["1 MB merchant id"]
    assert value is not None and len(value) == 1_000_061
    rec, headers = dead_letter(origin=EventContext("prod.events.transactions", 0, 9),
                               stage="validate", error=ValidationError(triage(value)[1]),
                               key=b"card-1", payload=value, failed_time=NOW)
    data = DLQ.encode(rec)
    assert len(data) == 65_661
    back = DLQ.decode(data)
    assert back["payload"] == value[:DLQ_PAYLOAD_KEEP] and len(back["payload"]) == 65_536
    h = dict(headers)
    assert h["precog.payload_size"] == b"1000061"
    assert h["precog.payload_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert h["precog.truncated"] == b"payload"
