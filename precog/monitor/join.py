"""Join policy of delayed outcomes with predictions: pure state, no I/O.

Predictions and outcomes are both keyed by event id. :class:`JoinState` keeps one entry
per event id in a plain mutable mapping (a dict in tests, a changelog-backed Faust table
in the join agent) so that the whole state survives a worker restart:

* ``pending`` — a prediction waiting for its outcome;
* ``early`` — an outcome that arrived before its prediction (held, joined later);
* ``joined`` — a marker that the event was joined, so a duplicate outcome is counted once.

Every entry expires at ``event_time + label_window + grace`` of event time; the
watermark is the largest prediction ``event_time`` seen (the pipeline's event-time clock).
Outcome times never move it: one outcome stamped far in the future must not expire the
predictions still waiting for theirs. An outcome whose ``outcome_time`` is later than
``event_time + label_window`` is *late*: counted and reported, never joined. A
``max_entries`` cap bounds memory: beyond it the entry that would expire first is
evicted and counted.

>>> state = JoinState(label_window_ms=1000)
>>> pred = {"prediction_id": "p1", "event_id": "e1", "entity_id": "c1", "source": "tx",
...         "event_time": 0, "scored_time": 5, "features": [],
...         "leader": {"model_id": "m", "version": 1, "role": "leader", "score": 0.9,
...                    "label": 1, "threshold": 0.5, "artifact_sha256": "x"},
...         "challengers": []}
>>> state.on_prediction(pred).labeled
[]
>>> out = state.on_outcome({"event_id": "e1", "label": 1, "event_time": 0, "outcome_time": 400})
>>> [(r["model_id"], r["label"], r["outcome"], r["label_latency_ms"]) for r in out.labeled]
[('m', 1, 1, 400)]
>>> state.on_outcome({"event_id": "e1", "label": 1, "event_time": 0, "outcome_time": 450}).labeled
[]
>>> state.counters.duplicate_outcomes
1
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any

PENDING = "pending"
EARLY = "early"
JOINED = "joined"

Entry = dict[str, Any]


@dataclass
class JoinCounters:
    """What the join did, for metrics and reconciliation (monotone counters)."""

    predictions: int = 0
    duplicate_predictions: int = 0
    outcomes: int = 0
    joined_events: int = 0
    labeled_records: int = 0
    early_outcomes: int = 0
    duplicate_outcomes: int = 0
    late_outcomes: int = 0
    expired_unlabeled: int = 0
    expired_orphan_outcomes: int = 0
    evicted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class JoinOutput:
    """What one call produced: labeled records to publish and facts to report."""

    labeled: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)
    expired: list[Entry] = field(default_factory=list)
    evicted: list[Entry] = field(default_factory=list)

    def extend(self, other: JoinOutput) -> None:
        self.labeled += other.labeled
        self.late += other.late
        self.expired += other.expired
        self.evicted += other.evicted


def pending_prediction(pred: dict[str, Any]) -> dict[str, Any]:
    """The parts of a prediction record the join needs (JSON-serialisable).

    >>> p = pending_prediction({"prediction_id": "p", "event_id": "e", "entity_id": "c",
    ...     "source": "s", "event_time": 1, "scored_time": 2,
    ...     "features": [{"name": "a", "value": 2.0, "age_ms": 0}],
    ...     "leader": {"model_id": "m", "version": 3, "role": "leader", "score": 0.2,
    ...                "label": 0, "threshold": 0.5, "artifact_sha256": "x"},
    ...     "challengers": []})
    >>> p["models"], p["features"]
    ([{'model_id': 'm', 'version': 3, 'role': 'leader', 'score': 0.2, 'label': 0}], {'a': 2.0})
    """
    models = [pred["leader"], *pred.get("challengers", [])]
    return {
        "prediction_id": pred["prediction_id"],
        "event_id": pred["event_id"],
        "entity_id": pred.get("entity_id", ""),
        "source": pred.get("source", ""),
        "event_time": int(pred["event_time"]),
        "scored_time": int(pred["scored_time"]),
        "models": [
            {
                "model_id": m["model_id"],
                "version": int(m["version"]),
                "role": str(m["role"]),
                "score": float(m["score"]),
                "label": int(m["label"]),
            }
            for m in models
        ],
        "features": {f["name"]: float(f["value"]) for f in pred.get("features", [])},
        "served": _served(pred),
    }


def _served(pred: dict[str, Any]) -> dict[str, Any]:
    """Whose decision was served (``served`` of prediction v3; the leader's before it)."""
    served = pred.get("served")
    if served is None:
        leader = pred["leader"]
        return {"policy": "shadow", "arm": None, "model_id": leader["model_id"],
                "version": int(leader["version"])}
    return {"policy": str(served["policy"]),
            "arm": None if served["policy"] == "shadow" else str(served["arm"]),
            "model_id": served["decided_by"]["model_id"],
            "version": int(served["decided_by"]["version"])}


def labeled_records(pending: dict[str, Any], outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``labeled.v2`` record per model that scored the event; the served one is marked,
    with the event's traffic arm."""
    latency = int(outcome["outcome_time"]) - pending["event_time"]
    served = pending.get("served") or {"policy": "shadow", "arm": None,
                                       "model_id": pending["models"][0]["model_id"],
                                       "version": pending["models"][0]["version"]}
    decider = (served["model_id"], served["version"])
    return [
        {
            "model_id": m["model_id"],
            "version": m["version"],
            "role": m["role"],
            "prediction_id": pending["prediction_id"],
            "event_id": pending["event_id"],
            "entity_id": pending["entity_id"],
            "source": pending["source"],
            "event_time": pending["event_time"],
            "scored_time": pending["scored_time"],
            "outcome_time": int(outcome["outcome_time"]),
            "score": m["score"],
            "label": m["label"],
            "outcome": int(outcome["label"]),
            "label_latency_ms": latency,
            "features": dict(pending.get("features") or {}) or None,
            "policy": served["policy"],
            "arm": served["arm"],
            "served": (m["model_id"], m["version"]) == decider,
        }
        for m in pending["models"]
    ]


class JoinState:
    """Pending predictions and early outcomes by event id, with the join policies.

    Parameters
    ----------
    label_window_ms
        How long after its event time a prediction waits for its outcome
        (``spec.outcome.label_window``).
    max_entries
        Hard cap on entries (pending + early + joined markers); beyond it the entry that
        would expire first is evicted and counted.
    grace_ms
        Extra event time an entry is kept after its window, for outcomes and predictions
        that arrive out of order between the two topics.
    store
        Where entries live; any mutable mapping from event id to a JSON-able dict.
        Existing entries are recovered (the expiry index is rebuilt from them).
    """

    def __init__(
        self,
        label_window_ms: int,
        max_entries: int = 1_000_000,
        grace_ms: int = 0,
        store: MutableMapping[str, Entry] | None = None,
    ) -> None:
        if label_window_ms <= 0 or max_entries <= 0 or grace_ms < 0:
            raise ValueError("label_window_ms and max_entries must be > 0, grace_ms >= 0")
        self.label_window_ms = label_window_ms
        self.max_entries = max_entries
        self.grace_ms = grace_ms
        self.store: MutableMapping[str, Entry] = {} if store is None else store
        self.counters = JoinCounters()
        self.watermark = 0
        self._expiry: list[tuple[int, str]] = []
        self._size = 0
        self.recover()

    # -- state ---------------------------------------------------------------------
    def recover(self) -> int:
        """Rebuild the expiry index from the store (after a restart); returns entries found."""
        self._expiry = [(int(e["expires"]), k) for k, e in self.store.items()]
        heapq.heapify(self._expiry)
        self._size = len(self._expiry)
        return self._size

    def __len__(self) -> int:
        return self._size

    def pending(self) -> Iterator[str]:
        """Event ids of predictions still waiting for their outcome."""
        return (k for k, e in self.store.items() if e["kind"] == PENDING)

    def _expires(self, event_time: int) -> int:
        return event_time + self.label_window_ms + self.grace_ms

    def _put(self, event_id: str, entry: Entry, out: JoinOutput) -> None:
        if event_id not in self.store:
            self._size += 1
        self.store[event_id] = entry
        heapq.heappush(self._expiry, (entry["expires"], event_id))
        while self._size > self.max_entries:
            victim = self._pop_first()
            if victim is None:
                break
            self.counters.evicted += 1
            out.evicted.append(victim)

    def _pop_first(self) -> Entry | None:
        """Remove and return the live entry that expires first (stale heap items skipped)."""
        while self._expiry:
            expires, event_id = heapq.heappop(self._expiry)
            entry = self.store.get(event_id)
            if entry is not None and entry["expires"] == expires:
                del self.store[event_id]
                self._size -= 1
                return entry
        return None

    def _advance(self, t: int) -> None:
        self.watermark = max(self.watermark, t)

    def _is_late(self, event_time: int, outcome_time: int) -> bool:
        return outcome_time > event_time + self.label_window_ms

    # -- policies ------------------------------------------------------------------
    def on_prediction(self, pred: dict[str, Any], now_event_ms: int | None = None) -> JoinOutput:
        """A prediction record arrived: hold it, or join it with an outcome held early."""
        out = JoinOutput()
        pending = pending_prediction(pred)
        event_id, event_time = pending["event_id"], pending["event_time"]
        self._advance(event_time if now_event_ms is None else max(now_event_ms, event_time))
        entry = self.store.get(event_id)
        if entry is not None and entry["kind"] in (PENDING, JOINED):
            self.counters.duplicate_predictions += 1
            return out
        self.counters.predictions += 1
        if entry is not None:  # an early outcome was waiting for this prediction
            outcome = entry["outcome"]
            if self._is_late(event_time, int(outcome["outcome_time"])):
                self.counters.late_outcomes += 1
                out.late.append(outcome)
                self._put(event_id, self._entry(PENDING, event_id, event_time, pending), out)
            else:
                self._join(pending, outcome, out)
            return out
        self._put(event_id, self._entry(PENDING, event_id, event_time, pending), out)
        return out

    def on_outcome(self, outcome: dict[str, Any]) -> JoinOutput:
        """An outcome arrived: join it, hold it until its prediction, or count it."""
        out = JoinOutput()
        event_id = outcome["event_id"]
        outcome = {
            "event_id": event_id,
            "label": int(outcome["label"]),
            "event_time": int(outcome["event_time"]),
            "outcome_time": int(outcome["outcome_time"]),
        }
        self.counters.outcomes += 1
        entry = self.store.get(event_id)
        if entry is not None and entry["kind"] in (JOINED, EARLY):
            self.counters.duplicate_outcomes += 1
            return out
        event_time = entry["event_time"] if entry is not None else outcome["event_time"]
        if self._is_late(event_time, outcome["outcome_time"]):
            self.counters.late_outcomes += 1
            out.late.append(outcome)
            return out
        if entry is None:
            self.counters.early_outcomes += 1
            held = self._entry(EARLY, event_id, outcome["event_time"], outcome=outcome)
            self._put(event_id, held, out)
            return out
        self._join(entry["prediction"], outcome, out)
        return out

    def expire(self, watermark_ms: int | None = None) -> JoinOutput:
        """Drop entries whose window ended before the watermark; count what expired."""
        out = JoinOutput()
        if watermark_ms is not None:
            self._advance(watermark_ms)
        while self._expiry and self._expiry[0][0] < self.watermark:
            expires, event_id = heapq.heappop(self._expiry)
            entry = self.store.get(event_id)
            if entry is None or entry["expires"] != expires:
                continue
            del self.store[event_id]
            self._size -= 1
            if entry["kind"] == PENDING:
                self.counters.expired_unlabeled += 1
                out.expired.append(entry)
            elif entry["kind"] == EARLY:
                self.counters.expired_orphan_outcomes += 1
                out.expired.append(entry)
        return out

    def _entry(
        self,
        kind: str,
        event_id: str,
        event_time: int,
        prediction: dict[str, Any] | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> Entry:
        entry: Entry = {
            "kind": kind,
            "event_id": event_id,
            "event_time": event_time,
            "expires": self._expires(event_time),
        }
        if prediction is not None:
            entry["prediction"] = prediction
        if outcome is not None:
            entry["outcome"] = outcome
        return entry

    def _join(self, pending: dict[str, Any], outcome: dict[str, Any], out: JoinOutput) -> None:
        records = labeled_records(pending, outcome)
        self.counters.joined_events += 1
        self.counters.labeled_records += len(records)
        out.labeled += records
        marker = self._entry(JOINED, pending["event_id"], pending["event_time"])
        self._put(pending["event_id"], marker, out)
