"""Avro contracts from ``schemas/``: load them and encode/decode records on the wire.

Every topic carries Avro *single-object encoding* (Avro specification: the two bytes
``C3 01``, the schema's 8-byte CRC-64-AVRO fingerprint little-endian, then the binary
record). Any standard Avro library can decode it with the ``.avsc`` files, and a record
written with another schema is recognised by its fingerprint instead of decoding into
garbage.

>>> codec = Codec.for_schema("outcome")
>>> rec = {"event_id": "e1", "label": 1, "event_time": 0, "outcome_time": 5, "source": "x"}
>>> codec.decode(codec.encode(rec)) == rec
True
>>> codec.decode(b"not avro")
Traceback (most recent call last):
...
precog.errors.DecodeError: bad marker 6e6f (expected c301): not an Avro single-object record
"""

from __future__ import annotations

import copy
import io
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from precog import resources
from precog.errors import DecodeError, SchemaError

#: the packaged contracts; lookups without a directory also search :func:`resources.schema_dirs`
SCHEMA_DIR = resources.schema_dir()
_MARKER = b"\xc3\x01"
#: Confluent wire format: a zero byte, then the registry's schema id (4 bytes, big-endian)
CONFLUENT_MAGIC = b"\x00"
_FILE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One versioned ``.avsc`` file."""

    name: str
    version: int
    path: Path
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def full_name(self) -> str:
        """Avro full name, e.g. ``precog.events.Transaction``."""
        ns = self.raw.get("namespace")
        return f"{ns}.{self.raw['name']}" if ns else str(self.raw["name"])

    @property
    def label(self) -> str:
        """Name and version as provenance records it, e.g. ``precog.events.Transaction/v1``."""
        return f"{self.full_name}/v{self.version}"


def schema_versions(schema_dir: Path | None = None) -> dict[str, list[SchemaVersion]]:
    """Every schema in ``schema_dir`` by short name, versions in ascending order.

    Without ``schema_dir``: every directory of :func:`precog.resources.schema_dirs`; a
    name and version found in two of them is an error.
    """
    return _merged((schema_dir,) if schema_dir is not None else tuple(resources.schema_dirs()))


def _merged(dirs: tuple[Path, ...]) -> dict[str, list[SchemaVersion]]:
    found: dict[str, list[SchemaVersion]] = {}
    for d in dirs:
        for name, versions in _versions_in(d).items():
            known = found.setdefault(name, [])
            clash = {v.version for v in known} & {v.version for v in versions}
            if clash:
                raise SchemaError(f"schema {name} v{min(clash)} is both in {known[0].path.parent}"
                                  f" and in {d}")
            known.extend(versions)
    for versions in found.values():
        versions.sort(key=lambda v: v.version)
    return found


def _versions_in(schema_dir: Path) -> dict[str, list[SchemaVersion]]:
    found: dict[str, list[SchemaVersion]] = {}
    for path in sorted(schema_dir.glob("*.avsc")):
        m = _FILE.match(path.name)
        if not m:
            raise SchemaError(f"{path}: schema files are named <name>.v<N>.avsc")
        raw = json.loads(path.read_text())
        sv = SchemaVersion(m["name"], int(m["version"]), path, raw)
        found.setdefault(sv.name, []).append(sv)
    return found


def latest(name: str, schema_dir: Path | None = None) -> SchemaVersion:
    """The newest version of schema ``name`` (e.g. ``"prediction"``)."""
    versions = schema_versions(schema_dir).get(name)
    if not versions:
        where = schema_dir or ", ".join(str(d) for d in resources.schema_dirs())
        raise SchemaError(f"no schema named {name!r} in {where}")
    return versions[-1]


def _plain(schema: Any) -> Any:
    """The schema without logical types: precog handles times as epoch-millisecond ints.

    Logical types are not part of the parsing canonical form, so fingerprints are the same.
    """
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


def _fingerprint(parsed: dict[str, Any]) -> bytes:
    canonical = to_parsing_canonical_form(parsed)
    # fastavro's hex is already the little-endian byte order the single-object header uses
    # (for "int": 8f5c393f1ad57572, i.e. the spec's 0x7275d51a3f395c8f little-endian).
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class Codec:
    """Encodes records with one writer schema; decodes any known version of it."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        if not versions:
            raise SchemaError("a codec needs at least one schema version")
        self.versions = versions
        self.writer = versions[-1]
        # plain parse (no fastavro hint keys): the fingerprints and the public ``schema``
        self._parsed: dict[str, Any] = parse_schema(  # type: ignore[assignment]
            _plain(self.writer.raw), _write_hint=False
        )
        # hinted parse for encode/decode: fastavro re-parses an unhinted schema on every
        # call (about 10 us per prediction record each way, docs/benchmarks.md)
        self._fast: dict[str, Any] = parse_schema(_plain(self.writer.raw))  # type: ignore[assignment]
        self._header = _MARKER + _fingerprint(self._parsed)
        # fingerprint -> (writer schema, reader schema or None when it is the writer)
        self._readers: dict[bytes, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self._headers: dict[int, bytes] = {}
        #: Confluent wire format (:meth:`confluent`): schema id -> the entry of ``_readers``
        self._by_id: dict[int, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        for v in versions:
            fp = _fingerprint(parse_schema(_plain(v.raw), _write_hint=False))  # type: ignore[arg-type]
            self._headers[v.version] = _MARKER + fp
            if v is self.writer:
                self._readers[fp] = (self._fast, None)
            else:
                self._readers[fp] = (parse_schema(_plain(v.raw)), self._fast)  # type: ignore[assignment]

    @classmethod
    def for_schema(cls, name: str, schema_dir: Path | None = None) -> Codec:
        """A codec for the short schema name, writing its newest version.

        Without ``schema_dir`` the schema is looked up in :func:`precog.resources.schema_dirs`.
        """
        dirs = (schema_dir,) if schema_dir is not None else tuple(resources.schema_dirs())
        return _codec(name, dirs)

    @property
    def wire_format(self) -> str:
        """``single-object`` or ``confluent`` (what :meth:`encode` writes)."""
        return "confluent" if self._by_id else "single-object"

    def confluent(self, ids: dict[int, int]) -> Codec:
        """A codec writing the Confluent wire format: byte 0, the writer's schema id, the body.

        ``ids`` maps every version of this schema to its Schema Registry id. The body is the
        same binary record, so only the header changes (10 bytes become 5); decoding takes
        both formats, so a worker reads events from either kind of producer.

        >>> codec = Codec.for_schema("outcome").confluent({1: 7})
        >>> rec = {"event_id": "e1", "label": 1, "event_time": 0, "outcome_time": 5,
        ...        "source": "x"}
        >>> data = codec.encode(rec)
        >>> data[:5].hex(), data[5:] == Codec.for_schema("outcome").encode(rec)[10:]
        ('0000000007', True)
        >>> codec.decode(data) == codec.decode(Codec.for_schema("outcome").encode(rec)) == rec
        True
        """
        missing = [v.version for v in self.versions if v.version not in ids]
        if missing:
            raise SchemaError(f"{self.writer.full_name}: no schema id for versions {missing}")
        if self._by_id:
            raise SchemaError(f"{self.writer.full_name}: the codec is Confluent-framed already")
        framed = copy.copy(self)
        # the single-object headers are marker + fingerprint, the key of ``_readers``
        framed._by_id = {ids[v.version]: self._readers[self._headers[v.version][2:]]
                         for v in self.versions}
        framed._headers = {v.version: CONFLUENT_MAGIC + ids[v.version].to_bytes(4, "big")
                           for v in self.versions}
        framed._header = framed._headers[self.writer.version]
        return framed

    @property
    def schema(self) -> dict[str, Any]:
        """The parsed writer schema (for fastavro calls)."""
        return self._parsed

    def header_of(self, version: int) -> bytes:
        """The header bytes of a record written with ``version`` of this schema (10; 5 in
        the Confluent wire format)."""
        return self._headers[version]

    def encode_header(self) -> bytes:
        """The bytes every record this codec writes starts with (marker + fingerprint, or
        in the Confluent wire format byte 0 + schema id)."""
        return self._header

    def encode(self, record: dict[str, Any]) -> bytes:
        """``record`` after :meth:`encode_header`; raises ``ValueError`` if it breaks the schema."""
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self._fast, record)
        return buf.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """Decode single-object bytes of any known version into the newest version's shape.

        Every refusal is a :class:`~precog.errors.DecodeError` with its own reason:

        >>> codec = Codec.for_schema("outcome")
        >>> data = codec.encode({"event_id": "e1", "label": 1, "event_time": 0,
        ...                      "outcome_time": 5, "source": "x"})
        >>> for bad in (None, data[:5], data + bytes(2), data[:10] + b"\\x08ab"):
        ...     try:
        ...         codec.decode(bad)
        ...     except DecodeError as exc:
        ...         print(exc)  # doctest: +NORMALIZE_WHITESPACE
        empty value (tombstone): null
        truncated header: 5 bytes, a single-object record starts with 10
        trailing bytes: 2 after a valid record (precog.outcomes.Outcome/v1)
        corrupt precog.outcomes.Outcome/v1 record at byte 13 of 13 (the body ends early):
            EOFError: Expected 4 bytes, read 2
        """
        if data is None:
            raise DecodeError("empty value (tombstone): null")
        if not data:
            raise DecodeError("empty value (tombstone): 0 bytes")
        if self._by_id and data[:1] == CONFLUENT_MAGIC:
            return self._decode_body(data, 5, self._confluent_entry(data))
        if data[:2] != _MARKER[: len(data[:2])]:
            raise DecodeError(f"bad marker {data[:2].hex()} (expected {_MARKER.hex()}):"
                              " not an Avro single-object record")
        if len(data) < 10:
            n = len(data)
            raise DecodeError(f"truncated header: {n} byte{'' if n == 1 else 's'},"
                              " a single-object record starts with 10")
        entry = self._readers.get(data[2:10])
        if entry is None:
            known = ", ".join(fp.hex() for fp in self._readers)
            raise DecodeError(
                f"record written with an unknown schema (fingerprint {data[2:10].hex()}),"
                f" expected {self.writer.label} (fingerprints {known})"
            )
        return self._decode_body(data, 10, entry)

    def _confluent_entry(self, data: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if len(data) < 5:
            raise DecodeError(f"truncated header: {len(data)} bytes, a Confluent-framed"
                              " record starts with 5")
        schema_id = int.from_bytes(data[1:5], "big")
        entry = self._by_id.get(schema_id)
        if entry is None:
            known = ", ".join(str(i) for i in self._by_id)
            raise DecodeError(f"record written with an unknown schema id {schema_id},"
                              f" expected {self.writer.label} (ids {known})")
        return entry

    def _decode_body(self, data: bytes, start: int,
                     entry: tuple[dict[str, Any], dict[str, Any] | None]) -> dict[str, Any]:
        writer, reader = entry
        body = io.BytesIO(data)
        body.seek(start)
        try:
            record: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
                body, writer, reader
            )
        except Exception as exc:  # truncated or corrupt body
            at = body.tell()
            raise DecodeError(
                f"corrupt {self.writer.label} record at byte {at} of {len(data)}"
                f"{_what_broke(exc, at >= len(data))}: {_describe(exc)}"
            ) from exc
        extra = len(data) - body.tell()
        if extra:
            raise DecodeError(
                f"trailing bytes: {extra} after a valid record ({self.writer.label})"
            )
        return record


_EXPECTED = re.compile(r"Expected (-?\d+) bytes, read (\d+)")


def _what_broke(exc: BaseException, at_end: bool) -> str:
    """Why fastavro stopped, where its own message misleads: a negative or an impossible
    length (a corrupt length prefix), or a read past the end (the body ends early).

    >>> _what_broke(EOFError("Expected -5 bytes, read 105"), True)
    ' (a negative length, -5: a corrupt length prefix)'
    >>> _what_broke(EOFError("Expected 1152921504606846976 bytes, read 99"), True)
    ' (a length of 1152921504606846976 bytes with 99 left: a corrupt length or a truncated body)'
    >>> _what_broke(EOFError("Expected 4 bytes, read 2"), True)
    ' (the body ends early)'
    >>> _what_broke(IndexError("string index out of range"), True), _what_broke(KeyError(1), False)
    (' (the body ends early)', '')
    """
    found = _EXPECTED.search(str(exc)) if isinstance(exc, EOFError) else None
    if found is not None:
        wanted, left = int(found[1]), int(found[2])
        if wanted < 0:
            return f" (a negative length, {wanted}: a corrupt length prefix)"
        if wanted > left + 1024:
            return (f" (a length of {wanted} bytes with {left} left: a corrupt length or a"
                    " truncated body)")
    return " (the body ends early)" if at_end else ""


def _describe(exc: BaseException) -> str:
    """``Class: message``, never an empty detail (``Class`` and its repr when str is empty).

    Object addresses are left out, so the same bad bytes always get the same reason (fastavro
    names its buffer: ``cannot read double from <_io.BytesIO object at 0x7f...>``):

    >>> _describe(EOFError("Expected 3 bytes")), _describe(EOFError()), _describe(KeyError(7))
    ('EOFError: Expected 3 bytes', 'EOFError: EOFError()', 'KeyError: 7')
    >>> _describe(EOFError("cannot read double from <_io.BytesIO object at 0x7f9333534400>"))
    'EOFError: cannot read double from <_io.BytesIO object>'
    """
    detail = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {_ADDRESS.sub('', detail)}"


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@cache
def _codec(name: str, dirs: tuple[Path, ...]) -> Codec:
    versions = _merged(dirs).get(name)
    if not versions:
        raise SchemaError(f"no schema named {name!r} in {', '.join(str(d) for d in dirs)}")
    return Codec(versions)


def evolution_problems(schema_dir: Path | None = None) -> list[str]:
    """Every break of the evolution rules between consecutive versions of each schema.

    A new version must read data written with the previous one (backward compatible:
    new fields need defaults, types only widen as Avro's promotion rules allow) and the
    previous one must read the new one's data (forward: removed fields had defaults), so
    producers and consumers can upgrade in any order. Versions must be numbered 1, 2, ...
    and keep the record's full name. Checked with Apache Avro's own compatibility checker
    (the ``avro`` package of the ``dev`` extra).
    """
    try:
        import avro.schema
        from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
    except ImportError:  # pragma: no cover - the dev extra is missing
        raise SchemaError("checking schema evolution needs the `avro` package:"
                          " pip install 'precog[dev]'") from None
    problems: list[str] = []
    checker = ReaderWriterCompatibilityChecker()
    for name, versions in sorted(schema_versions(schema_dir).items()):
        numbers = [v.version for v in versions]
        if numbers != list(range(1, len(versions) + 1)):
            problems.append(f"{name}: versions {numbers} are not numbered 1, 2, ...")
        parsed = [avro.schema.parse(json.dumps(v.raw)) for v in versions]
        for (old, new), (p_old, p_new) in zip(
            zip(versions, versions[1:], strict=False), zip(parsed, parsed[1:], strict=False),
            strict=True,
        ):
            if old.full_name != new.full_name:
                problems.append(f"{name}: v{new.version} renames {old.full_name}"
                                f" to {new.full_name}")
            for reader, writer, how in ((p_new, p_old, "backward"), (p_old, p_new, "forward")):
                res = checker.get_compatibility(reader, writer)
                if res.compatibility is not SchemaCompatibilityType.compatible:
                    detail = "; ".join(sorted(str(m) for m in res.messages))
                    where = ", ".join(sorted(str(loc) for loc in res.locations))
                    problems.append(f"{name}: v{new.version} is not {how} compatible with"
                                    f" v{old.version} at {where}: {detail}")
    return problems
