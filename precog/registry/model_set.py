"""The :class:`~precog.scoring.ModelSet` a model-control record names, loaded from the registry.

The worker's role watcher (services/agents/role_watcher.py) and ``precog score-batch`` load
their models through :func:`model_set_from_roles`, so both score with the same versions,
sha256-checked the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from precog.errors import PrecogError
from precog.registry.store import ModelRegistry
from precog.roles import Traffic
from precog.scoring import ModelSet, make_model_set

log = logging.getLogger("precog.control")


def model_set_from_roles(
    registry: ModelRegistry, record: dict[str, Any], feature_names: list[str], salt: str = ""
) -> ModelSet:
    """Load the leader and challengers a model-control record names (sha256 verified), with
    its traffic split (``salt``: the spec's ``traffic.salt``).

    A leader that fails to load raises (the caller keeps the current set); a challenger
    that fails to load is refused and left out, so it never blocks the leader's scoring;
    a split whose arm it was serves shadow until the roles change.
    """
    leader = registry.load(record["leader"]["model_id"], record["leader"]["version"])
    challengers = []
    for c in record["challengers"]:
        try:
            challengers.append(registry.load(c["model_id"], c["version"]))
        except PrecogError as exc:
            log.error("challenger %s v%s refused: %s", c["model_id"], c["version"], exc)
    traffic = Traffic.from_record(record.get("traffic"))
    models = make_model_set(int(record["revision"]), leader, challengers, feature_names,
                            traffic=traffic, salt=salt)
    if traffic is not None and models.plan.policy == "shadow":
        log.error("traffic %s not applied (a model of its arms did not load): serving shadow",
                  traffic.policy)
    return models
