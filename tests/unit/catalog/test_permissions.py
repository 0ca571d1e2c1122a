"""The permission union: effective bits are the OR over the grants that match the caller."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.permissions import GrantBits, Principals, effective_bits, has_permission, role_bits
from contracts import DELETE, EDIT, SHARE, VIEW

pytestmark = pytest.mark.unit

USERS = ["u1", "u2", "u3"]
GROUPS = ["g1", "g2", "g3"]
ROLES = ["USER", "ADMIN"]

principals_st = st.builds(
    Principals,
    user_id=st.sampled_from(USERS),
    role=st.sampled_from([*ROLES, None]),
    groups=st.frozensets(st.sampled_from(GROUPS)),
)
grant_st = st.one_of(
    st.builds(GrantBits, st.just("public"), st.none(), st.sampled_from([1, 3, 7, 15])),
    st.builds(GrantBits, st.just("user"), st.sampled_from(USERS), st.sampled_from([1, 3, 7, 15])),
    st.builds(GrantBits, st.just("group"), st.sampled_from(GROUPS), st.sampled_from([1, 3, 7, 15])),
    st.builds(GrantBits, st.just("role"), st.sampled_from(ROLES), st.sampled_from([1, 3, 7, 15])),
)


def _matches(p: Principals, g: GrantBits) -> bool:
    """An independent statement of who a grant applies to."""
    return (
        g.principal_type == "public"
        or (g.principal_type == "user" and g.principal_id == p.user_id)
        or (g.principal_type == "group" and g.principal_id in p.groups)
        or (g.principal_type == "role" and p.role is not None and g.principal_id == p.role)
    )


@given(principals_st, st.lists(grant_st, max_size=12))
def test_effective_bits_is_the_or_over_matching_grants(p: Principals, grants: list[GrantBits]) -> None:
    expected = 0
    for g in grants:
        if _matches(p, g):
            expected |= g.permissions
    assert effective_bits(p, grants) == expected


@given(principals_st, st.lists(grant_st, max_size=12), grant_st)
def test_adding_a_grant_never_removes_a_permission(p: Principals, grants: list[GrantBits], extra: GrantBits) -> None:
    before = effective_bits(p, grants)
    after = effective_bits(p, [*grants, extra])
    assert after & before == before


@given(principals_st, st.lists(grant_st, max_size=12), grant_st)
def test_a_non_matching_grant_adds_nothing(p: Principals, grants: list[GrantBits], extra: GrantBits) -> None:
    if _matches(p, extra):
        return
    assert effective_bits(p, [*grants, extra]) == effective_bits(p, grants)


def test_role_bits_and_checks() -> None:
    assert [role_bits(r) for r in ("viewer", "editor", "manager", "owner")] == [1, 3, 7, 15]
    assert has_permission(role_bits("viewer"), VIEW)
    assert not has_permission(role_bits("viewer"), EDIT)
    assert has_permission(role_bits("manager"), VIEW | EDIT | DELETE)
    assert not has_permission(role_bits("manager"), SHARE)
    assert has_permission(role_bits("owner"), VIEW | EDIT | DELETE | SHARE)


def test_no_grants_no_access_and_no_role_matches_no_role_grant() -> None:
    p = Principals(user_id="u1", role=None, groups=frozenset())
    assert effective_bits(p, []) == 0
    assert effective_bits(p, [GrantBits("role", "USER", 15), GrantBits("group", "g1", 15)]) == 0
    assert effective_bits(p, [GrantBits("user", "u2", 15)]) == 0
    assert effective_bits(p, [GrantBits("public", None, 1), GrantBits("user", "u1", 2)]) == 3
