"""Resume checkpoints of a replay and the delivery acknowledgements they are built from.

Per source ``(topic, partition)`` the checkpoint holds the last source offset whose copy
the broker acknowledged, and the target offset it got. It is written only from delivery
reports; acknowledgements of one partition may arrive out of order relative to sending
(retries), so :class:`AckTracker` only advances over a contiguous acknowledged prefix.

On resume, records acknowledged after the last checkpoint write are found on the target
(the target partition is written by this replay only, in source order): their number is
the target's high watermark minus the checkpoint's target offset + 1, and that many
source records after the checkpoint are skipped (:func:`already_delivered`).

>>> t = AckTracker()
>>> t.sent(("ev", 0), 10); t.sent(("ev", 0), 12); t.sent(("ev", 0), 15)
>>> t.acked(("ev", 0), 12, target_offset=1); t.position(("ev", 0)) is None
True
>>> t.acked(("ev", 0), 10, target_offset=0); t.position(("ev", 0))
(12, 1)
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from precog.errors import ConfigError

Stream = tuple[str, int]
CHECKPOINT_VERSION = 1


class AckTracker:
    """In-flight source offsets per stream and the contiguous acknowledged prefix."""

    def __init__(self) -> None:
        self._inflight: dict[Stream, deque[int]] = {}
        self._acked: dict[Stream, dict[int, int]] = {}
        self._position: dict[Stream, tuple[int, int]] = {}
        self.errors: list[str] = []

    def sent(self, stream: Stream, offset: int) -> None:
        """A record of ``stream`` at source ``offset`` was handed to the producer."""
        self._inflight.setdefault(stream, deque()).append(offset)

    def acked(self, stream: Stream, offset: int, target_offset: int) -> None:
        """The broker acknowledged the copy of source ``offset`` at ``target_offset``."""
        done = self._acked.setdefault(stream, {})
        done[offset] = target_offset
        queue = self._inflight.get(stream, deque())
        while queue and queue[0] in done:
            head = queue.popleft()
            self._position[stream] = (head, done.pop(head))

    def failed(self, stream: Stream, offset: int, reason: str) -> None:
        """A delivery failed: the prefix stops before it; the replay must stop."""
        self.errors.append(f"{stream[0]}[{stream[1]}]@{offset}: {reason}")

    def position(self, stream: Stream) -> tuple[int, int] | None:
        """(last contiguous acknowledged source offset, its target offset), or None."""
        return self._position.get(stream)

    def positions(self) -> dict[Stream, tuple[int, int]]:
        return dict(self._position)

    @property
    def pending(self) -> int:
        """Records sent and not yet acknowledged (or failed)."""
        return sum(len(q) for q in self._inflight.values())


@dataclass
class Checkpoint:
    """A replay's plan and progress, stored as JSON (``.precog/replay/<to-ns>/<topic>.json``).

    ``ranges``: ``topic -> partition -> [start, end)`` source offsets; ``target_start``:
    ``topic -> partition -> high watermark of the target partition before sending``;
    ``acked``: ``topic -> partition -> [source offset, target offset]`` of the last
    contiguous acknowledged record. ``options``: the range options the replay was asked
    with (:attr:`ReplayRequest.range_options`; None in checkpoints written before they
    were kept), which a resume must repeat.

    >>> c = Checkpoint("prod", "par", "events.transactions", {"prod.e": {"0": [0, 9]}},
    ...                {"prod.e": {"0": 0}})
    >>> c.record_ack("prod.e", 0, 4, 4); Checkpoint.from_json(c.to_json()) == c
    True
    >>> c.resume_offset("prod.e", 0), c.resume_offset("prod.e", 1)
    (5, None)
    """

    from_namespace: str
    to_namespace: str
    topic: str
    ranges: dict[str, dict[str, list[int]]]
    target_start: dict[str, dict[str, int]]
    acked: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    warmup_done: bool = False
    warmup_entities: int = 0
    sent: int = 0
    complete: bool = False
    started_time: int = 0
    updated_time: int = 0
    version: int = CHECKPOINT_VERSION
    options: dict[str, Any] | None = None

    def record_ack(self, topic: str, partition: int, offset: int, target_offset: int) -> None:
        self.acked.setdefault(topic, {})[str(partition)] = [offset, target_offset]

    def resume_offset(self, topic: str, partition: int) -> int | None:
        """The first source offset not known to be delivered (None: nothing acknowledged)."""
        pos = self.acked.get(topic, {}).get(str(partition))
        return None if pos is None else pos[0] + 1

    def next_target_offset(self, topic: str, partition: int) -> int:
        """The target offset the next copy of this partition should get."""
        pos = self.acked.get(topic, {}).get(str(partition))
        return pos[1] + 1 if pos is not None else self.target_start[topic][str(partition)]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """A checkpoint from its JSON; anything else is a ConfigError (use --restart).

        >>> Checkpoint.from_json("[]")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        precog.errors.ConfigError: unreadable replay checkpoint (not a JSON object but a list);...
        """
        try:
            doc: Any = json.loads(text)
            if not isinstance(doc, dict):
                raise TypeError(f"not a JSON object but a {type(doc).__name__}")
            if doc.get("version") != CHECKPOINT_VERSION:
                raise ConfigError(f"replay checkpoint version {doc.get('version')} is not "
                                  f"{CHECKPOINT_VERSION}; use --restart")
            ckpt = cls(**doc)
            for name in ("ranges", "target_start", "acked"):
                value = getattr(ckpt, name)
                if not (isinstance(value, dict)
                        and all(isinstance(v, dict) for v in value.values())):
                    raise TypeError(f"{name} is not an object of objects")
            if ckpt.options is not None and not isinstance(ckpt.options, dict):
                raise TypeError("options is not an object")
            return ckpt
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"unreadable replay checkpoint ({exc}); use --restart") from exc

    def changed_options(self, options: dict[str, Any]) -> list[str]:
        """The range options in which ``options`` differs from the checkpoint's (none when
        the checkpoint predates keeping them).

        >>> c = Checkpoint("a", "b", "t", {}, {}, options={"--start": 5, "--end": None})
        >>> c.changed_options({"--start": 5, "--end": 9}), c.changed_options(c.options)
        (['--end'], [])
        """
        if self.options is None:
            return []
        return sorted(k for k in {*self.options, *options}
                      if self.options.get(k) != options.get(k))

    def same_job(self, other: Checkpoint) -> bool:
        """Whether ``other`` describes the same replay (namespaces, topic, ranges)."""
        return (self.from_namespace, self.to_namespace, self.topic, self.ranges) == (
            other.from_namespace, other.to_namespace, other.topic, other.ranges)


def already_delivered(next_target_offset: int, target_high: int) -> int:
    """Records on the target beyond the checkpoint: delivered after its last write.

    >>> already_delivered(next_target_offset=40, target_high=43)
    3
    """
    extra = target_high - next_target_offset
    if extra < 0:
        raise ConfigError(
            f"the target partition ends at {target_high}, before the checkpoint's "
            f"{next_target_offset}: it was truncated or recreated; use --restart")
    return extra
