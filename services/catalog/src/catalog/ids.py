"""Identifiers of catalog objects (pure)."""

from __future__ import annotations

import secrets
import string

_BASE62 = string.digits + string.ascii_letters


def _random62(n: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(n))


def new_agent_id() -> str:
    """``agent_`` + 24 base62 characters (~143 bits)."""
    return "agent_" + _random62(24)


def new_user_id() -> str:
    return "user_" + secrets.token_hex(12)


def new_group_id() -> str:
    return "group_" + secrets.token_hex(12)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(12)


def new_grant_id() -> str:
    return "grant_" + secrets.token_hex(12)
