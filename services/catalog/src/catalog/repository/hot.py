"""Reads on the request hot path: one connection (one pool checkout) and as few round trips as the
question allows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.admin import Agent

from .. import db
from ..permissions import GrantBits, Principals
from .rows import agent_of


@dataclass(frozen=True)
class KeyOwner:
    """What verify-key needs, read in one query."""

    key_id: str
    user_id: str
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit_per_minute: int | None
    role: str
    remote_agents_use: bool
    groups: list[str]


@dataclass(frozen=True)
class Caller:
    """A user's principals and their role's REMOTE_AGENTS USE."""

    principals: Principals
    remote_agents_use: bool


async def _caller(conn: AsyncConnection, user_id: str) -> Caller | None:
    u, r, gm = db.users, db.roles, db.group_members
    rows = (
        await conn.execute(
            select(u.c.role, r.c.remote_agents_use, gm.c.group_id)
            .join(r, r.c.name == u.c.role)
            .outerjoin(gm, gm.c.user_id == u.c.id)
            .where(u.c.id == user_id)
        )
    ).all()
    if not rows:
        return None
    groups = frozenset(row.group_id for row in rows if row.group_id is not None)
    return Caller(Principals(user_id, rows[0].role, groups), bool(rows[0].remote_agents_use))


def _matching(p: Principals) -> list[ColumnElement[bool]]:
    """SQL conditions for grants that could apply to ``p`` (the exact check is the pure function)."""
    g = db.grants
    match: list[ColumnElement[bool]] = [
        g.c.principal_type == "public",
        and_(g.c.principal_type == "user", g.c.principal_key == p.user_id),
    ]
    if p.role:
        match.append(and_(g.c.principal_type == "role", g.c.principal_key == p.role))
    if p.groups:
        match.append(and_(g.c.principal_type == "group", g.c.principal_key.in_(sorted(p.groups))))
    return match


class HotPathReads:
    """The hot-path half of the repository."""

    engine: AsyncEngine

    async def key_owner(self, key_hash: str) -> KeyOwner | None:
        """The key with this hash and its owner's role, role permission and groups (one query)."""
        k, u, r, gm = db.api_keys, db.users, db.roles, db.group_members
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        k.c.id,
                        k.c.user_id,
                        k.c.expires_at,
                        k.c.revoked_at,
                        k.c.rate_limit_per_minute,
                        u.c.role,
                        r.c.remote_agents_use,
                        gm.c.group_id,
                    )
                    .join(u, u.c.id == k.c.user_id)
                    .join(r, r.c.name == u.c.role)
                    .outerjoin(gm, gm.c.user_id == u.c.id)
                    .where(k.c.key_hash == key_hash)
                    .order_by(gm.c.group_id)
                )
            ).all()
        if not rows:
            return None
        row = rows[0]
        return KeyOwner(
            key_id=row.id,
            user_id=row.user_id,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            rate_limit_per_minute=row.rate_limit_per_minute,
            role=row.role,
            remote_agents_use=bool(row.remote_agents_use),
            groups=[x.group_id for x in rows if x.group_id is not None],
        )

    async def access_facts(
        self, agent_id: str, user_id: str, resource_type: str
    ) -> tuple[Agent | None, list[GrantBits], Caller | None]:
        """The agent, its grants on ``resource_type``, and the caller (two queries, one connection).
        The caller is read even when there is no such agent: their role decides the answer first."""
        a, g = db.agents, db.grants
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(a, g.c.principal_type, g.c.principal_id, g.c.permissions)
                    .outerjoin(g, and_(g.c.agent_id == a.c.id, g.c.resource_type == resource_type))
                    .where(a.c.id == agent_id)
                )
            ).all()
            caller = await _caller(conn, user_id)
        if not rows:
            return None, [], caller
        grants = [GrantBits(r.principal_type, r.principal_id, r.permissions) for r in rows if r.principal_type]
        return agent_of(rows[0]), grants, caller

    async def candidate_agents(
        self, user_id: str, resource_type: str
    ) -> tuple[Caller | None, list[Agent], dict[str, list[GrantBits]]]:
        """The caller, and every agent with a grant on ``resource_type`` that could match them, with those
        grants (two queries, one connection). Agents come in (created_at, id) order."""
        a, g = db.agents, db.grants
        async with self.engine.connect() as conn:
            caller = await _caller(conn, user_id)
            if caller is None:
                return None, [], {}
            rows = (
                await conn.execute(
                    select(a, g.c.principal_type, g.c.principal_id, g.c.permissions)
                    .join(g, g.c.agent_id == a.c.id)
                    .where(g.c.resource_type == resource_type, or_(*_matching(caller.principals)))
                    .order_by(a.c.created_at, a.c.id)
                )
            ).all()
        agents: dict[str, Agent] = {}
        grants: dict[str, list[GrantBits]] = {}
        for r in rows:
            if r.id not in agents:
                agents[r.id] = agent_of(r)
            grants.setdefault(r.id, []).append(GrantBits(r.principal_type, r.principal_id, r.permissions))
        return caller, list(agents.values()), grants

    async def touch_keys(self, seen: dict[str, datetime]) -> None:
        """Write ``last_used_at`` for many keys in one transaction."""
        if not seen:
            return
        k = db.api_keys
        async with self.engine.begin() as conn:
            for key_id, ts in seen.items():
                await conn.execute(update(k).where(k.c.id == key_id).values(last_used_at=ts))
