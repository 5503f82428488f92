"""Event records decoded by a reader compiled for the event schema's newest version.

The score agent decodes every event; fastavro's generic reader (through
:meth:`precog.avro.Codec.decode`) took about 6.5 us for a transaction, one of the core's
larger stages. An event schema is a flat record of primitive fields, so
:class:`EventReader` compiles its writer version once into one Python function that reads
the fields in order (zig-zag varints, little-endian doubles and floats, length-prefixed
UTF-8; the source is :attr:`EventReader.source`) and returns the same dict as the codec,
fields in schema order. Anything else goes to the codec: a record
of another schema version, a truncated or corrupt body, trailing bytes, a varint that does
not fit 64 bits, an ``int`` outside 32 bits; so every refusal keeps the codec's exact
:class:`~precog.errors.DecodeError` and an older version is still read (into the newest
shape) by fastavro. A schema with any other field type (unions, records, arrays, maps,
enums, booleans, bytes, fixed) is not compiled: every record goes to the codec.
``tests/unit/test_event_reader.py`` compares both readers on seeded and hostile records.

>>> from precog.avro import Codec
>>> codec = Codec.for_schema("sensor_reading")
>>> rec = {"event_id": "e1", "sensor_id": "s-1", "site": "m\\u00fcnster", "kind": "pump",
...        "value": 0.25, "temperature": -3.5, "event_time": 1_700_000_000_000}
>>> reader = EventReader(codec)
>>> reader.compiled, reader.decode(codec.encode(rec)) == rec
(True, True)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache
from typing import Any

from precog.avro import Codec

_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from
_INT32 = 2**31
_UINT64 = 2**64

def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """One Avro ``long`` at ``pos``: (value, next position); ``ValueError`` past 64 bits."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z, shift = b & 0x7F, 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            if z >= _UINT64:  # fastavro keeps 64 bits; the codec decides
                raise ValueError("varint beyond 64 bits")
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _int(buf: bytes, pos: int) -> tuple[int, int]:
    value, pos = read_long(buf, pos)
    if not -_INT32 <= value < _INT32:
        raise ValueError("int beyond 32 bits")
    return value, pos


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    n, pos = read_long(buf, pos)
    if n < 0:
        raise ValueError("negative string length")
    end = pos + n
    if end > len(buf):
        raise ValueError("string runs past the record")
    return buf[pos:end].decode("utf-8"), end


def _double(buf: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE(buf, pos)[0], pos + 8


def _float(buf: bytes, pos: int) -> tuple[float, int]:
    return _FLOAT(buf, pos)[0], pos + 4


#: how each primitive is read: source lines assigning ``{v}`` and moving ``pos``
_SOURCE: dict[str, tuple[str, ...]] = {
    "string": (  # one-byte lengths (0-63 bytes: even bytes, zig-zag) are the rule: inline
        "n = buf[pos]",
        "if n < 0x80 and not n & 1:",
        "    pos += 1",
        "    stop = pos + (n >> 1)",
        "    if stop > size:",
        "        raise ValueError('string runs past the record')",
        "    {v} = buf[pos:stop].decode('utf-8')",
        "    pos = stop",
        "else:",
        "    {v}, pos = _string(buf, pos)",
    ),
    "long": ("{v}, pos = read_long(buf, pos)",),
    "int": ("{v}, pos = _int(buf, pos)",),
    "double": ("{v} = _DOUBLE(buf, pos)[0]", "pos += 8"),
    "float": ("{v} = _FLOAT(buf, pos)[0]", "pos += 4"),
}


def _field_types(schema: dict[str, Any]) -> list[tuple[str, str]] | None:
    """(field name, primitive type) per field of a flat record of primitives, else None."""
    if schema.get("type") != "record":
        return None
    fields = []
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict):  # {"type": "long", "logicalType": "timestamp-millis"}
            if set(t) - {"type", "logicalType"}:
                return None
            t = t["type"]
        if not isinstance(t, str) or t not in _SOURCE:
            return None
        fields.append((str(f["name"]), t))
    return fields


def compile_body(fields: list[tuple[str, str]]) -> tuple[str, Callable[[bytes], dict[str, Any]]]:
    """The source of a function reading a record body after the 10-byte header, and the
    function. Field names enter the source only as ``repr`` literals (dict keys)."""
    lines = ["def body(buf):", "    pos = 10", "    size = len(buf)"]
    for i, (_, kind) in enumerate(fields):
        lines += ["    " + line.format(v=f"v{i}") for line in _SOURCE[kind]]
    lines += ["    if pos != size:", "        raise ValueError('trailing bytes')",
              "    return {" + ", ".join(f"{name!r}: v{i}" for i, (name, _) in
                                        enumerate(fields)) + "}"]
    source = "\n".join(lines) + "\n"
    scope: dict[str, Any] = {"read_long": read_long, "_int": _int, "_string": _string,
                             "_DOUBLE": _DOUBLE, "_FLOAT": _FLOAT}
    exec(compile(source, "<precog.event_reader>", "exec"), scope)  # noqa: S102 - from _SOURCE
    return source, scope["body"]


class EventReader:
    """Decodes event records: the writer version compiled, anything else by ``codec``."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        fields = _field_types(codec.writer.raw)
        #: the compiled reader's source (None: the schema is not a flat record of primitives)
        self.source: str | None = None
        self._body: Callable[[bytes], dict[str, Any]] | None = None
        if fields is not None:
            self.source, self._body = compile_body(fields)
        self._header = codec.encode_header()

    @property
    def compiled(self) -> bool:
        """Whether the writer version has a compiled reader (else every record is the codec's)."""
        return self._body is not None

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """The record as :meth:`Codec.decode` returns it (the codec's errors for bad input)."""
        body = self._body
        if body is not None and data is not None and data[:10] == self._header:
            try:
                return body(data)
            except (ValueError, IndexError, struct.error):
                pass  # corrupt: the codec says precisely why
        return self.codec.decode(data)


@cache
def event_reader(schema_name: str) -> EventReader:
    """The reader of the packaged schema ``schema_name`` (one per process)."""
    return EventReader(Codec.for_schema(schema_name))
