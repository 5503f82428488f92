"""The event schema as the HTTP front ends show it: JSON Schema (OpenAPI) and V2 tensors.

Both are derived from the spec's Avro record, so the HTTP contract cannot drift from the
topic's: :func:`json_schema` is the ``/v1/score`` request body in the OpenAPI document,
:func:`v2_inputs` the inputs ``GET /v2/models/{name}`` lists (one tensor per field, as KServe
V2 clients send a table), and :func:`events_from_v2` turns such tensors back into events.

>>> from precog.avro import Codec
>>> raw = Codec.for_schema("transaction").writer.raw
>>> json_schema(raw)["properties"]["amount"]["type"], json_schema(raw)["required"][:2]
('number', ['event_id', 'card_id'])
>>> [(t["name"], t["datatype"]) for t in v2_inputs(raw)][-2:]
[('channel', 'BYTES'), ('event_time', 'INT64')]
>>> events_from_v2(raw, [
...     {"name": "amount", "datatype": "FP64", "shape": [2], "data": [1.5, 2]},
...     {"name": "event_id", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}])
[{'amount': 1.5, 'event_id': 'a'}, {'amount': 2, 'event_id': 'b'}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_JSON = {"string": "string", "boolean": "boolean", "int": "integer", "long": "integer",
         "float": "number", "double": "number", "bytes": "string"}
_V2 = {"string": "BYTES", "bytes": "BYTES", "boolean": "BOOL", "int": "INT32", "long": "INT64",
       "float": "FP32", "double": "FP64"}


class TensorError(ValueError):
    """V2 inputs that do not make a table of events (a 422 with the reason)."""


def _base(avro_type: Any) -> tuple[str, bool]:
    """The primitive type of a field and whether it may be null (``["null", T]`` unions)."""
    nullable = False
    if isinstance(avro_type, list):
        rest = [t for t in avro_type if t != "null"]
        nullable = len(rest) < len(avro_type)
        if len(rest) != 1:
            raise TypeError(f"union {avro_type!r}: only [null, T] is served")
        avro_type = rest[0]
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return "string", nullable
        avro_type = avro_type["type"]
    if avro_type not in _JSON:
        raise TypeError(f"Avro type {avro_type!r} is not served over HTTP")
    return str(avro_type), nullable


def json_schema(record: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Schema of the JSON form of an Avro record of primitive (or [null, T]) fields."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in record["fields"]:
        base, nullable = _base(f["type"])
        prop: dict[str, Any] = {"type": [_JSON[base], "null"] if nullable else _JSON[base]}
        if isinstance(f["type"], dict) and f["type"].get("type") == "enum":
            prop["enum"] = list(f["type"]["symbols"])
        if "doc" in f:
            prop["description"] = f["doc"]
        if "default" in f:
            prop["default"] = f["default"]
        else:
            required.append(f["name"])
        properties[f["name"]] = prop
    return {"title": record["name"], "type": "object", "description": record.get("doc", ""),
            "properties": properties, "required": required}


def v2_inputs(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The V2 input tensors of the record: one per field, shape ``[-1]`` (one row per event)."""
    return [{"name": f["name"], "datatype": _V2[_base(f["type"])[0]], "shape": [-1]}
            for f in record["fields"]]


def events_from_v2(record: Mapping[str, Any], inputs: Any) -> list[dict[str, Any]]:
    """Events from V2 input tensors (one per field, all of the same length ``shape[0]``)."""
    if not isinstance(inputs, Sequence) or not inputs:
        raise TensorError("inputs: a non-empty list of tensors is required")
    known = {f["name"] for f in record["fields"]}
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for t in inputs:
        if not isinstance(t, Mapping) or not isinstance(t.get("name"), str):
            raise TensorError("inputs: every tensor is an object with a name")
        name, data, shape = t["name"], t.get("data"), t.get("shape")
        if name not in known:
            raise TensorError(f"inputs: {name!r} is not a field of {record['name']}")
        if not isinstance(data, list) or not isinstance(shape, list) or len(shape) != 1:
            raise TensorError(f"inputs: {name!r} needs a one-dimensional shape and a data list")
        if shape[0] != len(data):
            raise TensorError(f"inputs: {name!r} has shape {shape} but {len(data)} values")
        if rows is not None and rows != len(data):
            raise TensorError(f"inputs: {name!r} has {len(data)} rows, the others {rows}")
        rows = len(data)
        columns[name] = data
    return [{name: values[i] for name, values in columns.items()} for i in range(rows or 0)]
