"""The ACL: which principals a user stands for, and the permission bits their grants add up to (pure).

Effective bits on a resource = bitwise OR of the bits of every grant whose principal matches the
caller: the user itself, any of their groups, their role, or ``public``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from contracts.admin import GRANT_ROLE_BITS

RESOURCE_AGENT = "agent"
RESOURCE_REMOTE_AGENT = "remote_agent"


@dataclass(frozen=True)
class Principals:
    """Everything a user is, for matching grants."""

    user_id: str
    role: str | None
    groups: frozenset[str] = frozenset()

    def matches(self, principal_type: str, principal_id: str | None) -> bool:
        """Does a grant to (``principal_type``, ``principal_id``) apply to this user?"""
        if principal_type == "public":
            return True
        if principal_type == "user":
            return principal_id == self.user_id
        if principal_type == "group":
            return principal_id is not None and principal_id in self.groups
        if principal_type == "role":
            return self.role is not None and principal_id == self.role
        return False


@dataclass(frozen=True)
class GrantBits:
    """The part of a grant that matters for permission checks."""

    principal_type: str
    principal_id: str | None
    permissions: int


def role_bits(role: str) -> int:
    """The bits of a grant role (viewer 1, editor 3, manager 7, owner 15)."""
    return GRANT_ROLE_BITS[role]


def effective_bits(principals: Principals, grants: Iterable[GrantBits]) -> int:
    """OR of the bits of every grant that matches ``principals``."""
    bits = 0
    for g in grants:
        if principals.matches(g.principal_type, g.principal_id):
            bits |= g.permissions
    return bits


def has_permission(bits: int, required: int) -> bool:
    """Every bit of ``required`` is in ``bits``."""
    return (bits & required) == required
