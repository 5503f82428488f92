"""Role transitions are exact; records round-trip through the model-control schema."""

from __future__ import annotations

import pytest
from precog.services.model_control import decode_roles, encode_roles

from precog.errors import ConfigError
from precog.roles import (
    ModelRef,
    Roles,
    add_challenger,
    initial_roles,
    remove_challenger,
    rollback,
    set_leader,
)

pytestmark = pytest.mark.unit

L1, L2, L3 = ModelRef("lgbm", 1), ModelRef("lgbm", 2), ModelRef("lgbm", 3)
C1, C2 = ModelRef("logreg", 1), ModelRef("logreg", 2)


def _start() -> Roles:
    return initial_roles("fraud", L1, [C1], at=100, by="alice")


def test_initial_roles():
    assert _start() == Roles("fraud", 1, L1, (C1,), (), 100, "alice", "initial roles")


def test_set_leader_pushes_the_old_leader():
    r = set_leader(_start(), L2, at=200, by="bob", reason="better auc")
    assert r == Roles("fraud", 2, L2, (C1,), (L1,), 200, "bob", "better auc")
    r = set_leader(r, L3, at=300, by="bob")
    assert r == Roles("fraud", 3, L3, (C1,), (L2, L1), 300, "bob", "set leader lgbm v3")


def test_promoted_challenger_leaves_the_challengers():
    r = add_challenger(_start(), C2, at=150, by="a")
    assert r.challengers == (C1, C2) and r.revision == 2
    r = set_leader(r, C1, at=200, by="a")
    assert (r.leader, r.challengers, r.previous_leaders, r.revision) == (C1, (C2,), (L1,), 3)


def test_rollback_restores_previous_leaders_in_order():
    r = set_leader(set_leader(_start(), L2, at=2, by="a"), L3, at=3, by="a")
    r = rollback(r, at=4, by="carol")
    assert r == Roles("fraud", 4, L2, (C1,), (L1,), 4, "carol", "rollback from lgbm v3 to lgbm v2")
    r = rollback(r, at=5, by="carol")
    assert (r.leader, r.previous_leaders, r.revision) == (L1, (), 5)
    with pytest.raises(ConfigError, match="no previous leader"):
        rollback(r, at=6, by="carol")


def test_rollback_to_a_leader_that_became_challenger_removes_it_there():
    r = set_leader(_start(), L2, at=2, by="a")
    r = add_challenger(r, L1, at=3, by="a")
    r = rollback(r, at=4, by="a")
    assert (r.leader, r.challengers, r.previous_leaders) == (L1, (C1,), ())


def test_invalid_changes_raise():
    r = _start()
    with pytest.raises(ConfigError, match="already the leader"):
        set_leader(r, L1, at=1, by="a")
    with pytest.raises(ConfigError, match="already a challenger"):
        add_challenger(r, C1, at=1, by="a")
    msg = r"logreg v2 is not a challenger of fraud \(challengers: logreg v1\)"
    with pytest.raises(ConfigError, match=msg):
        remove_challenger(r, C2, at=1, by="a")
    r = remove_challenger(r, C1, at=1, by="a")
    assert r.challengers == () and r.revision == 2


def test_roles_round_trip_through_avro():
    r = set_leader(add_challenger(_start(), C2, at=2, by="a"), C1, at=3, by="a")
    assert decode_roles(encode_roles(r)) == r
    assert decode_roles(None) is None


def test_role_of():
    r = set_leader(_start(), L2, at=2, by="a")
    assert [r.role_of(x) for x in (L2, C1, L1, L3)] == [
        "leader", "challenger", "previous-leader", None
    ]
    assert r.active == (L2, C1)
