"""Which namespace owns a resource name: exact, whatever other namespaces exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from precog.teardown import (
    GROUP_NAMES,
    index_stems,
    owner_of_group,
    owner_of_index,
    owner_of_redis_key,
    owner_of_topic,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
STEMS = index_stems()


def test_t1_never_owns_t10s_resources() -> None:
    known = {"t1", "t10"}
    assert [owner_of_topic(t, known) for t in ("t1.predictions", "t10.predictions",
                                               "t1.events.transactions")] == ["t1", "t10", "t1"]
    assert [owner_of_index(i, STEMS) for i in ("t1-models", "t10-models")] == ["t1", "t10"]
    assert [owner_of_redis_key(k) for k in ("t1:state:x", "t10:state:x")] == ["t1", "t10"]
    assert [owner_of_group(g, known) for g in ("precog-t1-score", "precog-t10-score",
                                               "precog-t10-index")] == ["t1", "t10", "t10"]


def test_a_namespace_with_a_dash_keeps_its_own_groups_and_indices() -> None:
    known = {"a", "a-b"}
    assert owner_of_group("precog-a-b-score", known) == "a-b"
    assert owner_of_group("precog-a-score", known) == "a"
    assert owner_of_group("precog-a-b-worker-__assignor-__leader", known) == "a-b"
    assert owner_of_topic("precog-a-worker-__assignor-__leader", known) == "a"
    assert owner_of_index("a-b-pipeline-health", STEMS) == "a-b"
    assert owner_of_index("a-pipeline-health", STEMS) == "a"
    assert owner_of_group("precog-a-roles-w1", known) == "a"


def test_names_that_are_not_a_namespaces_are_nobodys() -> None:
    assert owner_of_topic("__consumer_offsets") is None
    assert owner_of_topic("precog-stack-health") is None  # the stack's health probe
    assert owner_of_index("t1-notes", STEMS) is None
    assert owner_of_index(".kibana-predictions", STEMS) is None
    assert owner_of_redis_key("no-colon") is None
    assert owner_of_group("precog-t1-unknown", {"t1"}) is None
    assert owner_of_group("other-t1-score", {"t1"}) is None


def test_every_consumer_group_the_code_names_is_known_to_teardown() -> None:
    """A new ``settings.group("...")`` must be added to GROUP_NAMES, or drop would miss it."""
    used: set[str] = set()
    for folder in ("precog", "services", "pipelines"):
        for path in (ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"\.group\(\s*[\"']([a-z][\w-]*)[\"']", path.read_text()))
    assert used, "the scan found no group names"
    unknown = {g for g in used if not any(g == n or g.startswith(f"{n}-") for n in GROUP_NAMES)}
    assert unknown == set()
