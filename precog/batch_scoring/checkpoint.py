"""The checkpoint of a batch run: ``<out>.checkpoint.json``, replaced after every chunk.

It says how far the output is complete (chunks, rows, the byte sizes of the Avro and
rejects files) and what the run was (input, models, state start, chunk size, the clock of
the validation), so a resumed run continues the same run or refuses to.

>>> c = Checkpoint(run={"chunk_size": 2}, chunks=1, rows=2, predictions=1, rejects=1)
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        doc = json.loads(text)
        if doc.get("version") != VERSION:
            raise ConfigError(f"checkpoint version {doc.get('version')} is not {VERSION}")
        return cls(**doc)


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path`` (None when there is none)."""
    try:
        return Checkpoint.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a score-batch checkpoint ({exc}); --restart starts"
                          " over") from None


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Keys of the run description that differ between a checkpoint and this run.

    >>> differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
    ['b', 'c']
    """
    return sorted(k for k in {*saved, *now} if saved.get(k) != now.get(k))
