"""The checkpoint of a batch run: ``<out>.checkpoint.json``, replaced after every chunk.

It says how far the output is complete (chunks, rows, the byte sizes of the Avro and
rejects files) and what the run was (input, models, state start, chunk size, the clock of
the validation), so a resumed run continues the same run or refuses to.

>>> c = Checkpoint(run={"chunk_size": 2, "models": {}, "validated_at": 5}, chunks=1, rows=2,
...                predictions=1, rejects=1, parts=[1])
>>> Checkpoint.from_json(c.to_json()) == c
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from precog.errors import ConfigError

VERSION = 1


@dataclass
class Checkpoint:
    """How far one batch run got; ``run`` identifies the run (compared on resume)."""

    run: dict[str, Any]
    chunks: int = 0
    rows: int = 0
    predictions: int = 0
    rejects: int = 0
    out_bytes: int = 0  # Avro output: the file's size after the last chunk
    rejects_bytes: int = 0
    complete: bool = False
    version: int = VERSION
    counts: dict[str, int] = field(default_factory=dict)  # rejects per stage
    parts: list[int] = field(default_factory=list)  # Parquet output: the rows of each part

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        if doc.get("version") != VERSION:
            raise ConfigError(f"checkpoint version {doc.get('version')} is not {VERSION}")
        ckpt = cls(**doc)
        _check_types(ckpt)
        return ckpt


def _check_types(c: Checkpoint) -> None:
    """Raise ValueError unless the fields have the types a run wrote (a hand-edited file).

    >>> _check_types(Checkpoint(run={"models": {}, "validated_at": 1}, chunks="2"))
    Traceback (most recent call last):
    ...
    ValueError: chunks is a str, not a number
    """
    if not isinstance(c.run, dict):
        raise ValueError(f"run is a {type(c.run).__name__}, not an object")
    for key in ("chunks", "rows", "predictions", "rejects", "out_bytes", "rejects_bytes"):
        value = getattr(c, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} is a {type(value).__name__}, not a number"
                             if not isinstance(value, int) else f"{key} is {value!r}")
    if not isinstance(c.run.get("models"), dict) or not isinstance(c.run.get("validated_at"),
                                                                     int):
        raise ValueError("run lacks its models or validation clock")
    if not isinstance(c.counts, dict) or not isinstance(c.parts, list) or not all(
            isinstance(n, int) for n in [*c.counts.values(), *c.parts]):
        raise ValueError("counts or parts are not numbers")


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path`` (None when there is none)."""
    try:
        return Checkpoint.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a score-batch checkpoint ({exc}); --restart starts"
                          " over") from None


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Keys of the run description that differ between a checkpoint and this run.

    >>> differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
    ['b', 'c']
    """
    return sorted(k for k in {*saved, *now} if saved.get(k) != now.get(k))
