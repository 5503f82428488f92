"""Prediction records decoded by a reader compiled for ``schemas/prediction.v3.avsc``.

The index agent decodes every prediction it indexes; fastavro's generic reader took about
39 us for one (a nested record with an array of feature records), most of the agent's
Python time. :func:`decode_prediction` walks the v3 layout directly (zig-zag varints,
little-endian doubles, length-prefixed UTF-8) and returns the same dict as
:meth:`precog.avro.Codec.decode`. Anything else, a record of another schema version, a
truncated or corrupt body, trailing bytes, is handed to the codec (a v1 or v2 record too: it
gets the defaults of the newer fields, ``provenance.channel`` ``stream`` and ``served``
null), so every refusal keeps
the codec's exact :class:`~precog.errors.DecodeError` message and a future version is
still read (into the newest shape) by fastavro. ``tests/unit/test_prediction_reader.py``
compares both readers on seeded and hostile records.
"""

from __future__ import annotations

import struct
from typing import Any

from precog.avro import Codec
from precog.event_reader import read_long as _long

_DOUBLE = struct.Struct("<d").unpack_from
_ROLES = ("leader", "challenger")
#: the version whose layout :func:`_body` reads
COMPILED_VERSION = 3
#: feature names seen (raw UTF-8 -> str): the same few names in every record
_NAMES: dict[bytes, str] = {}


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    n = buf[pos]
    if n < 0x80 and not n & 1:  # a one-byte length of 0-63 (odd bytes are negative)
        n >>= 1
        pos += 1
    else:
        n, pos = _long(buf, pos)
    end = pos + n
    if n < 0 or end > len(buf):
        raise ValueError("string runs past the record")
    return buf[pos:end].decode("utf-8"), end


def _double(buf: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE(buf, pos)[0], pos + 8


def _model(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    model_id, pos = _string(buf, pos)
    version, pos = _long(buf, pos)
    role, pos = _long(buf, pos)
    score, pos = _double(buf, pos)
    label, pos = _long(buf, pos)
    threshold, pos = _double(buf, pos)
    sha, pos = _string(buf, pos)
    return {"model_id": model_id, "version": version, "role": _ROLES[role], "score": score,
            "label": label, "threshold": threshold, "artifact_sha256": sha}, pos


def _blocks(buf: bytes, pos: int) -> tuple[int, int]:
    """The item count of the next array block (a negative count is followed by its size)."""
    n, pos = _long(buf, pos)
    if n < 0:
        n = -n
        _, pos = _long(buf, pos)
    return n, pos


def _body(buf: bytes, pos: int = 10) -> dict[str, Any]:
    prediction_id, pos = _string(buf, pos)
    event_id, pos = _string(buf, pos)
    entity_id, pos = _string(buf, pos)
    source, pos = _string(buf, pos)
    event_time, pos = _long(buf, pos)
    scored_time, pos = _long(buf, pos)
    leader, pos = _model(buf, pos)
    challengers = []
    n, pos = _blocks(buf, pos)
    while n:
        for _ in range(n):
            m, pos = _model(buf, pos)
            challengers.append(m)
        n, pos = _blocks(buf, pos)
    features = []
    n, pos = _blocks(buf, pos)
    names = _NAMES
    while n:
        for _ in range(n):  # the hot loop, inlined: one-byte lengths and ages are the rule
            size = buf[pos]
            if size < 0x80 and not size & 1:
                size >>= 1
                pos += 1
            else:
                size, pos = _long(buf, pos)
                if size < 0:
                    raise ValueError("negative string length")
            end = pos + size
            raw = buf[pos:end]
            name = names.get(raw)
            if name is None:
                if size < 0 or end > len(buf):
                    raise ValueError("string runs past the record")
                name = raw.decode("utf-8")
                if len(names) < 4096:
                    names[raw] = name
            value = _DOUBLE(buf, end)[0]
            pos = end + 8
            b = buf[pos]
            if b < 0x80:
                age = (b >> 1) ^ -(b & 1)
                pos += 1
            else:
                age, pos = _long(buf, pos)
            features.append({"name": name, "value": value, "age_ms": age})
        n, pos = _blocks(buf, pos)
    prov: dict[str, Any] = {}
    for key in ("namespace", "spec", "event_schema", "prediction_schema", "code_version",
                "source_topic"):
        prov[key], pos = _string(buf, pos)
    prov["partition"], pos = _long(buf, pos)
    prov["offset"], pos = _long(buf, pos)
    prov["worker"], pos = _string(buf, pos)
    prov["channel"], pos = _string(buf, pos)
    branch, pos = _long(buf, pos)
    served: dict[str, Any] | None = None
    if branch == 1:
        policy, pos = _string(buf, pos)
        arm, pos = _string(buf, pos)
        model_id, pos = _string(buf, pos)
        version, pos = _long(buf, pos)
        score, pos = _double(buf, pos)
        label, pos = _long(buf, pos)
        bucket, pos = _long(buf, pos)
        served = {"policy": policy, "arm": arm,
                  "decided_by": {"model_id": model_id, "version": version},
                  "score": score, "label": label, "bucket": bucket}
    elif branch != 0:
        raise ValueError("bad union branch")
    if pos != len(buf):
        raise ValueError("trailing bytes")
    return {"prediction_id": prediction_id, "event_id": event_id, "entity_id": entity_id,
            "source": source, "event_time": event_time, "scored_time": scored_time,
            "leader": leader, "challengers": challengers, "features": features,
            "provenance": prov, "served": served}


class PredictionReader:
    """Decodes prediction records: v3 by the compiled reader, anything else by ``codec``."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        compiled = next((v for v in codec.versions if v.version == COMPILED_VERSION), None)
        if compiled is None or compiled.full_name != "precog.predictions.Prediction":
            raise ValueError("the compiled reader reads precog.predictions.Prediction"
                             f" v{COMPILED_VERSION}")
        # v3's header (single-object, or Confluent's id); a v3 record read as the newest
        # version (a later writer) must go through the codec, which fills the newer fields'
        # defaults
        self._header = (codec.header_of(COMPILED_VERSION)
                        if codec.writer.version == COMPILED_VERSION else None)

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """The record as :meth:`Codec.decode` returns it (the codec's errors for bad input)."""
        header = self._header
        if data is not None and header is not None and data[:len(header)] == header:
            try:
                return _body(data, len(header))
            except (ValueError, IndexError, struct.error):
                pass  # corrupt: the codec says precisely why
        return self.codec.decode(data)
