"""API-key checks (pure): may a stored key still authenticate?"""

from __future__ import annotations

from datetime import UTC, datetime

INVALID = "Invalid API key."
EXPIRED = "API key has expired."
REVOKED = "API key has been revoked."


def as_utc(ts: datetime | None) -> datetime | None:
    """``ts`` in UTC. PostgreSQL hands ``timestamptz`` back aware; a naive datetime (a caller's) is
    taken as UTC, as everything stored is."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def key_problem(*, expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> str | None:
    """Why a stored key may not be used (a message), or None when it is good. Revocation wins."""
    if revoked_at is not None:
        return REVOKED
    exp = as_utc(expires_at)
    if exp is not None and exp <= now:
        return EXPIRED
    return None


def seconds_left(expires_at: datetime | None, now: datetime) -> float | None:
    """Seconds until expiry (None: never expires), so a cached answer never outlives its key."""
    exp = as_utc(expires_at)
    return None if exp is None else max(0.0, (exp - now).total_seconds())
