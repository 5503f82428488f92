"""Where a batch run's entity states start: empty (rebuilt from the input), Redis, or a snapshot.

A *snapshot* is a JSON lines file, one entity per line: ``{"entity": "card-1", "state":
{...}}`` with the state as :meth:`~precog.features.EntityState.to_bytes` writes it.
``precog score-batch --state-out`` writes the states a run ended with; ``--from-snapshot``
starts a later run from them.

>>> import tempfile
>>> from pathlib import Path
>>> p = Path(tempfile.mkdtemp()) / "s.jsonl"
>>> write_snapshot(p, {"card-1": EntityState(last_time=5, counts={"3600000": 1.5})})
1
>>> read_snapshot(p)["card-1"].counts
{'3600000': 1.5}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from precog.errors import ConfigError
from precog.features import EntityState

STARTS = ("input", "redis", "snapshot")


def write_snapshot(path: Path, states: Mapping[str, EntityState]) -> int:
    """Write ``states`` as a snapshot file (entities sorted); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for entity in sorted(states):
            fh.write(b'{"entity":' + orjson.dumps(entity) + b',"state":'
                     + states[entity].to_bytes() + b"}\n")
    tmp.replace(path)
    return len(states)


def read_snapshot(path: Path) -> dict[str, EntityState]:
    """The states of a snapshot file; a bad line is an error naming it."""
    states: dict[str, EntityState] = {}
    try:
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                    states[str(doc["entity"])] = EntityState.from_bytes(orjson.dumps(doc["state"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError,
                        ValueError) as exc:
                    raise ConfigError(f"--from-snapshot {path}: line {n}: not an entity state"
                                      f" ({type(exc).__name__}: {exc})") from None
    except FileNotFoundError:
        raise ConfigError(f"--from-snapshot {path}: no such file") from None
    return states


class StateStart:
    """The states entities have before the run first sees them.

    ``input``: none (every entity starts empty: the state is rebuilt from the input in
    input order). ``snapshot``: the snapshot file's. ``redis``: the namespace's online
    store, read once per entity (one MGET per chunk for the entities not seen yet); Redis
    is never written. With ``drop_watermarks`` (file input: rows have no Kafka offsets)
    the states' offset watermarks are cleared, so no row is taken for a redelivery.
    """

    def __init__(self, kind: str, *, snapshot: Path | None = None, store: Any = None,
                 drop_watermarks: bool = False) -> None:
        if kind not in STARTS:
            raise ConfigError(f"unknown state start {kind!r}: one of {', '.join(STARTS)}")
        self.kind, self.store, self.drop = kind, store, drop_watermarks
        self._known: dict[str, EntityState] = {}
        if kind == "snapshot":
            assert snapshot is not None
            self._known = read_snapshot(snapshot)

    def fill(self, working: dict[str, EntityState | None], entities: Sequence[str]) -> int:
        """Add the start state of every entity of ``entities`` not in ``working`` yet."""
        new = [e for e in dict.fromkeys(entities) if e not in working]
        if not new:
            return 0
        if self.kind == "redis":
            found = self.store.read_sync(new)
        else:
            found = {e: self._known.get(e) for e in new}
        for e in new:
            state = found.get(e)
            working[e] = (replace(state, applied={}) if state is not None and self.drop
                          else state)
        return len(new)
