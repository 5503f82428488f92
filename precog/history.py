"""The history format read by ``precog train`` and ``precog backfill``: read, check, convert.

(About 500 lines: the readers of the four file formats share one record check, kept here
with the format it checks, and the writers of a history share its all-or-nothing write.)

Events files in Avro, CSV, JSON lines or Parquet are read record by record with
:func:`read_rows` (``precog history write`` and ``precog score-batch`` read them so).

A history is a directory with ``events.avro`` (records of the spec's event schema) and
``outcomes.avro`` (records of its outcome schema), both Avro object container files; times
are epoch milliseconds, and a ``timestamp-millis`` / ``timestamp-micros`` field (which
fastavro reads as a datetime) is turned back into epoch ms. docs/features.md has the
format; every problem is one line naming the file, the record and the field.

>>> from datetime import UTC, datetime
>>> to_epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 500_999, tzinfo=UTC)), to_epoch_ms(7)
(1500, 7)
>>> coerce("12", "long"), coerce("2.5", ["null", "double"]), coerce("", ["null", "string"])
(12, 2.5, None)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from precog.avro import Codec
from precog.errors import ConfigError
from precog.spec import PipelineSpec, epoch_ms

EVENTS_FILE = "events.avro"
OUTCOMES_FILE = "outcomes.avro"
MANIFEST_FILE = "manifest.json"  # what the simulator wrote (ignored by the readers)
#: the files a history directory holds
HISTORY_FILES = (EVENTS_FILE, OUTCOMES_FILE, MANIFEST_FILE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_NUMBERS = {"int": int, "long": int, "float": float, "double": float}
_MISSING = object()


def to_epoch_ms(value: Any) -> Any:
    """Epoch ms of a datetime (naive = UTC; micros truncated); anything else unchanged."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _MS
    return value


def _types(field_type: Any) -> list[Any]:
    return field_type if isinstance(field_type, list) else [field_type]


def _base(t: Any) -> Any:
    return t["type"] if isinstance(t, dict) and t["type"] not in ("record", "enum") else t


def coerce(text: str, field_type: Any) -> Any:
    """A CSV cell as the Avro type of its field (empty: null if the field may be null)."""
    types = [_base(t) for t in _types(field_type)]
    if text == "" and "null" in types:
        return None
    for t in types:
        if t in _NUMBERS:
            try:
                return _NUMBERS[t](text)
            except ValueError:
                continue
        if t == "boolean" and text.lower() in ("true", "false", "1", "0"):
            return text.lower() in ("true", "1")
        if t == "string" or (isinstance(t, dict) and t.get("type") == "enum"):
            return text
    return text  # the check names the field and its type


@dataclass(frozen=True)
class HistoryCheck:
    """What :func:`check_history` found in a good history."""

    events: int
    outcomes: int
    positives: int
    first_event_time: int | None
    last_event_time: int | None

    def summary(self) -> str:
        span = f"events {self.first_event_time}..{self.last_event_time}" if self.events else ""
        return (f"{self.events:,} events, {self.outcomes:,} outcomes ({self.positives:,}"
                f" positive) {span}").rstrip()


class _Records:
    """One file's records checked against one schema (a pure function of both)."""

    def __init__(self, path: Path, codec: Codec) -> None:
        self.path, self.codec = path, codec
        self.named: dict[str, Any] = {}
        self.parsed = fastavro.parse_schema(codec.schema, named_schemas=self.named)
        self.fields: list[dict[str, Any]] = codec.schema["fields"]
        # each field's type parsed once (parsing it per record was most of the check's time)
        self._typed = [(f, fastavro.parse_schema(f["type"], named_schemas=self.named))
                       for f in self.fields]
        self._names = {f["name"] for f in self.fields}

    def fail(self, i: int, why: str) -> ConfigError:
        return ConfigError(f"{self.path}: record {i}: {why}")

    def check(self, i: int, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(i, f"not a record but {type(raw).__name__}")
        if self._names <= raw.keys() and validate(raw, self.parsed, raise_errors=False):
            return raw  # every field there and of its type (no datetime): nothing to change
        record = {k: to_epoch_ms(v) for k, v in raw.items()}
        for f, schema in self._typed:
            value = record.get(f["name"], _MISSING)
            if value is _MISSING:
                if "default" not in f:
                    raise self.fail(i, f"field {f['name']} is missing")
                value = record[f["name"]] = f["default"]
            if isinstance(value, date) and not isinstance(value, datetime):
                raise self.fail(i, f"field {f['name']}: a date, not epoch ms")
            if not validate(value, schema, raise_errors=False):
                raise self.fail(i, f"field {f['name']}: {value!r} is not"
                                   f" {_type_name(f['type'])}")
        return record


def _type_name(field_type: Any) -> str:
    return " or ".join(str(_base(t)) for t in _types(field_type))


def _avro_rows(path: Path, checker: _Records) -> Iterator[dict[str, Any] | ConfigError]:
    try:
        with open(path, "rb") as fo:
            reader = fastavro.reader(fo)
            if _written_with(reader.metadata.get("avro.schema", ""), checker.codec):
                # records of the schema itself: nothing to check or convert
                yield from cast(Iterator[dict[str, Any]], reader)
                return
            for i, raw in enumerate(reader):
                yield _checked(checker, i, raw)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (ValueError, EOFError, OSError) as exc:  # fastavro's "cannot read header" & co
        raise ConfigError(f"{path}: not an Avro container file: {exc}") from None


def _written_with(schema_json: str, codec: Codec) -> bool:
    """Whether a container file's schema is ``codec``'s, without logical types.

    Its records then have every field with a value of the field's type (fastavro decoded
    them with it), and times are already epoch ms.
    """
    if not schema_json or "logicalType" in schema_json:
        return False
    try:
        written = to_parsing_canonical_form(fastavro.parse_schema(json.loads(schema_json)))
    except (ValueError, TypeError, fastavro.schema.SchemaParseException):
        return False
    return bool(written == to_parsing_canonical_form(fastavro.parse_schema(codec.schema)))


def _checked(checker: _Records, i: int, raw: Any) -> dict[str, Any] | ConfigError:
    try:
        return checker.check(i, raw)
    except ConfigError as exc:
        return exc


def read_avro(path: Path, codec: Codec) -> list[dict[str, Any]]:
    """The checked records of one Avro container file (times as epoch ms)."""
    return _strict(_avro_rows(path, _Records(path, codec)))


def _strict(rows: Iterable[dict[str, Any] | ConfigError]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if isinstance(row, ConfigError):
            raise row
        out.append(row)
    return out


def _typer(checker: _Records, codec: Codec) -> Any:
    """Text cells (CSV) or JSON values as the schema's types; ISO times as epoch ms."""
    types = {f["name"]: f["type"] for f in checker.fields}
    times = {f["name"] for f in codec.writer.raw["fields"] if _is_timestamp(f["type"])}

    def typed(i: int, row: dict[str, Any], text: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in row.items():
            if k is None or k not in types:
                continue
            if k in times and isinstance(v, str) and v and not v.lstrip("-").isdigit():
                try:
                    out[k] = epoch_ms(v)
                except ConfigError as exc:
                    raise checker.fail(i, f"field {k}: {exc}") from None
            elif text:
                out[k] = coerce(v or "", types[k])
            else:
                out[k] = v
        return out

    return typed


def _csv_rows(path: Path, checker: _Records, codec: Codec
              ) -> Iterator[dict[str, Any] | ConfigError]:
    typed = _typer(checker, codec)
    try:
        with open(path, newline="") as fo:
            for i, row in enumerate(csv.DictReader(fo)):
                try:
                    yield checker.check(i, typed(i, row, True))
                except ConfigError as exc:
                    yield exc
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a CSV file: {exc}") from None


def read_csv(path: Path, codec: Codec) -> list[dict[str, Any]]:
    """The checked records of a CSV file with a header row naming the schema's fields.

    A ``timestamp-millis`` field may hold epoch ms or an ISO-8601 time (UTC unless it says).
    """
    return _strict(_csv_rows(path, _Records(path, codec), codec))


def _jsonl_rows(path: Path, checker: _Records, codec: Codec
                ) -> Iterator[dict[str, Any] | ConfigError]:
    """One JSON object per line (blank lines skipped); times as epoch ms or ISO 8601."""
    import orjson

    typed = _typer(checker, codec)
    try:
        with open(path, "rb") as fo:
            i = 0
            for line in fo:
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                    if not isinstance(doc, dict):
                        raise checker.fail(i, f"not a JSON object but {type(doc).__name__}")
                    yield checker.check(i, typed(i, doc, False))
                except orjson.JSONDecodeError as exc:
                    yield checker.fail(i, f"not JSON: {exc}")
                except ConfigError as exc:
                    yield exc
                i += 1
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None


def _parquet_rows(path: Path, checker: _Records, batch_rows: int = 10_000
                  ) -> Iterator[dict[str, Any] | ConfigError]:
    pq = _pyarrow_parquet(path)
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:  # pyarrow's ArrowInvalid is an OSError too
        raise ConfigError(f"{path}: not a Parquet file: {exc}") from None
    i = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        for raw in batch.to_pylist():
            yield _checked(checker, i, raw)
            i += 1


def _pyarrow_parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigError(f"{path}: reading Parquet needs pyarrow (pip install"
                          " 'precog[batch]')") from None
    return pq


def _is_timestamp(field_type: Any) -> bool:
    """Whether the ``.avsc`` gives the field a ``timestamp-*`` logical type."""
    return any(isinstance(t, dict) and str(t.get("logicalType", "")).startswith("timestamp")
               for t in _types(field_type))


#: file suffixes of each format :func:`read_rows` reads
FORMATS = {".avro": "avro", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def file_format(path: Path, given: str | None = None) -> str:
    """The format of ``path``: ``given``, else from its suffix (unknown suffixes: Avro).

    >>> file_format(Path("a.PARQUET")), file_format(Path("x.ndjson")), file_format(Path("e"))
    ('parquet', 'jsonl', 'avro')
    """
    if given is not None:
        if given not in set(FORMATS.values()):
            raise ConfigError(f"unknown format {given!r}: avro, csv, jsonl or parquet")
        return given
    return FORMATS.get(path.suffix.lower(), "avro")


def read_rows(path: Path, codec: Codec, fmt: str | None = None
              ) -> Iterator[dict[str, Any] | ConfigError]:
    """Every record of an Avro, CSV, JSON lines or Parquet file, checked one at a time.

    A record that breaks ``codec``'s schema is yielded as the :class:`ConfigError` naming
    it (file, record number, field) and reading goes on; a file that cannot be read at all
    raises. Records are read lazily, in file order.
    """
    checker = _Records(path, codec)
    kind = file_format(path, fmt)
    if kind == "csv":
        return _csv_rows(path, checker, codec)
    if kind == "jsonl":
        return _jsonl_rows(path, checker, codec)
    if kind == "parquet":
        return _parquet_rows(path, checker)
    return _avro_rows(path, checker)


def count_rows(path: Path, fmt: str | None = None) -> int:
    """How many records ``path`` holds (CSV and JSON lines: an estimate, from its lines)."""
    kind = file_format(path, fmt)
    try:
        if kind == "parquet":
            return int(_pyarrow_parquet(path).ParquetFile(path).metadata.num_rows)
        if kind == "avro":
            return _avro_blocks(path)
        lines = 0
        with open(path, "rb") as fo:
            while chunk := fo.read(1 << 20):
                lines += chunk.count(b"\n")
        return max(lines - 1, 0) if kind == "csv" else lines
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except EOFError as exc:
        raise ConfigError(f"{path}: a truncated or corrupt {_KIND_NAMES[kind]} file: {exc}"
                          ) from None
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not {_ARTICLE[kind]} {_KIND_NAMES[kind]} file: {exc}"
                          ) from None


def _avro_blocks(path: Path) -> int:
    """The records of an Avro container file, from its blocks (every block is read, so a
    truncated or corrupt file fails here); one line naming what is wrong if it is not one.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "e.avro"
    >>> _ = p.write_bytes(b"Obj")
    >>> _avro_blocks(p)
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: ...e.avro: not an Avro container file (a truncated or corrupt...
    """
    n = 0
    with open(path, "rb") as fo:
        try:
            blocks = fastavro.block_reader(fo)
        except (ValueError, EOFError, StopIteration) as exc:
            fo.seek(0)
            magic = fo.read(4)
            what = ("an empty file" if not magic else "a truncated or corrupt header"
                    if b"Obj\x01".startswith(magic) else "no Avro magic bytes")
            raise ConfigError(f"{path}: not an Avro container file ({what}: {exc})") from None
        try:
            for block in blocks:
                n += block.num_records
        except (ValueError, EOFError, OSError, StopIteration) as exc:
            raise ConfigError(f"{path}: truncated or corrupt Avro file: unreadable after {n:,}"
                              f" records ({type(exc).__name__}: {exc})") from None
    return n


_KIND_NAMES = {"avro": "Avro", "parquet": "Parquet", "csv": "CSV", "jsonl": "JSON lines"}
_ARTICLE = {"avro": "an", "parquet": "a", "csv": "a", "jsonl": "a"}


def read_records(path: Path, codec: Codec) -> list[dict[str, Any]]:
    """Records of an Avro, CSV, JSON lines or Parquet file (by suffix; :data:`FORMATS`).

    The first record that breaks the schema raises the :class:`ConfigError` naming it.
    """
    return _strict(read_rows(path, codec))


def history_dir(directory: Path | str) -> Path:
    """``directory`` if it holds a history's two files; else the one line saying what is not."""
    d = Path(directory)
    if not d.is_dir():
        if d.exists():
            raise ConfigError(f"{d}: not a directory (a history is a directory with"
                              f" {EVENTS_FILE} and {OUTCOMES_FILE})")
        raise ConfigError(f"history directory not found: {d}")
    missing = [name for name in (EVENTS_FILE, OUTCOMES_FILE) if not (d / name).exists()]
    if missing:
        raise ConfigError(f"no history in {d}: {d / missing[0]} is missing")
    return d


def read_history(directory: Path | str, spec: PipelineSpec | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The checked (events, outcomes) of a history directory.

    Without ``spec`` the files are checked against the schemas they were written with.
    """
    d = history_dir(directory)
    if spec is None:
        return _read_as_written(d / EVENTS_FILE), _read_as_written(d / OUTCOMES_FILE)
    events = read_avro(d / EVENTS_FILE, Codec.for_schema(spec.event.schema_name))
    _unique_ids(d / EVENTS_FILE, events, spec.event.id_field)
    outcomes = read_avro(d / OUTCOMES_FILE, Codec.for_schema(spec.outcome.schema_name))
    return events, outcomes


def _unique_ids(path: Path, events: list[dict[str, Any]], id_field: str) -> None:
    """Raise a :class:`ConfigError` naming the first event id that appears twice.

    The stream applies an event id to its entity's state once (a re-send at another offset
    is not counted again, docs/features.md), so a history with an id twice would train on
    features the stream never computes.

    >>> try:
    ...     _unique_ids(Path("h/events.avro"), [{"id": "a"}, {"id": "b"}, {"id": "a"}], "id")
    ... except ConfigError as exc:
    ...     print(exc)
    h/events.avro: event id 'a' appears twice (records 0 and 2): a history holds each event once
    """
    first: dict[Any, int] = {}
    for i, event in enumerate(events):
        seen = first.setdefault(event[id_field], i)
        if seen != i:
            raise ConfigError(f"{path}: event id {event[id_field]!r} appears twice (records "
                              f"{seen} and {i}): a history holds each event once")


def _read_as_written(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as fo:
            return [{k: to_epoch_ms(v) for k, v in r.items()}  # type: ignore[union-attr]
                    for r in fastavro.reader(fo)]
    except (ValueError, EOFError) as exc:
        raise ConfigError(f"{path}: not an Avro container file: {exc}") from None


def require_trainable(directory: Path, events: int, labels: Sequence[int]) -> None:
    """Raise the :class:`ConfigError` ``precog train`` (and ``history check``) stops with
    when a history of ``events`` events, whose events with an outcome have ``labels``,
    cannot be trained on.

    >>> require_trainable(Path("h"), 3, [0, 1])
    >>> for events, labels in ((0, []), (3, []), (3, [0, 0])):
    ...     try:
    ...         require_trainable(Path("h"), events, labels)
    ...     except ConfigError as exc:
    ...         print(exc)
    h: no events to train on
    h: none of its 3 events has an outcome: no labelled events to train on
    h: every labelled event (2) has label 0: training needs both labels, 0 and 1
    """
    if events == 0:
        raise ConfigError(f"{directory}: no events to train on")
    if not labels:
        raise ConfigError(f"{directory}: none of its {events:,} events has an outcome: no"
                          " labelled events to train on")
    classes = sorted(set(int(x) for x in labels))
    if classes != [0, 1]:
        raise ConfigError(f"{directory}: every labelled event ({len(labels):,}) has label"
                          f" {classes[0]}: training needs both labels, 0 and 1")


def check_history(directory: Path | str, spec: PipelineSpec) -> HistoryCheck:
    """Read a history as ``precog train`` does; a :class:`ConfigError` names what is wrong
    (also a history train refuses: no events, no labelled events, only one label)."""
    d = Path(directory)
    events, outcomes = read_history(d, spec)
    ev, label = spec.event, spec.outcome.label_field
    times = [e[ev.time_field] for e in events]
    for i, o in enumerate(outcomes):
        if o.get(label) not in (0, 1):
            raise ConfigError(f"{d / OUTCOMES_FILE}: record {i}: field {label}: {o.get(label)!r}"
                              " is not 0 or 1")
    ids = {str(e[ev.id_field]) for e in events}
    latest: dict[str, tuple[int, int]] = {}  # a later outcome_time wins, as in training
    for o in outcomes:
        eid, at = str(o[spec.outcome.join_key]), int(o.get("outcome_time", 0))
        if eid in ids and (eid not in latest or at >= latest[eid][0]):
            latest[eid] = (at, o[label])
    require_trainable(d, len(events), [lab for _, lab in latest.values()])
    return HistoryCheck(len(events), len(outcomes), sum(o[label] for o in outcomes),
                        min(times, default=None), max(times, default=None))


def write_records(path: Path, codec: Codec, records: Iterable[dict[str, Any]]) -> int:
    """Write records as an Avro container file with the schema precog reads; returns count."""
    rows = list(records)
    with open(path, "wb") as fo:
        fastavro.writer(fo, codec.schema, rows, codec="deflate")
    return len(rows)


def check_out(out: Path, force: bool = False, option: str = "--out") -> None:
    """Refuse ``out`` (the ``option`` naming it) as a history to write, in one line: a file,
    or a directory already holding a history's files unless ``force``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out}: not a directory")
    there = [name for name in HISTORY_FILES if (out / name).exists()]
    if there and not force:
        raise ConfigError(f"{option} {out}: already holds a history ({', '.join(there)});"
                          " give --force to replace it")


@contextmanager
def writing_history(out: Path, option: str = "--out") -> Iterator[Callable[[str], Path]]:
    """Write a history's files to ``out`` all or nothing.

    Yields ``part(name)``, the temporary file to write ``name`` (one of
    :data:`HISTORY_FILES`) to. When the block succeeds each is renamed onto ``out / name``
    and a history file not written is removed (it would describe the files replaced); when
    it fails they are removed, and so is ``out`` if this made it and it is empty.
    """
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option} {out}: cannot create the directory: {exc.strerror or exc}"
                          ) from None
    parts: dict[str, Path] = {}

    def part(name: str) -> Path:
        parts[name] = out / f".{name}.{os.getpid()}.part"
        return parts[name]

    try:
        yield part
    except BaseException:
        for path in parts.values():
            path.unlink(missing_ok=True)
        if made and not any(out.iterdir()):
            out.rmdir()
        raise
    for name, path in parts.items():
        os.replace(path, out / name)
    for name in set(HISTORY_FILES) - parts.keys():
        (out / name).unlink(missing_ok=True)
