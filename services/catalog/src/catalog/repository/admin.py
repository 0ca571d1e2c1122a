"""Admin reads and writes. Each public method is one transaction, so its checks and its change see
one consistent state; a unique-index race with a concurrent request becomes a 409 as well."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import utcnow
from contracts.admin import Agent, ApiKey, Grant, Group, Role, User

from .. import db
from ..errors import BadRequest, Conflict, NotFound
from ..keys import as_utc
from .rows import PageResult, agent_of, grant_of, grant_row, key_of, keyset_page, principal_key, user_of

R = TypeVar("R")


class AdminStore:
    """The admin half of the repository."""

    engine: AsyncEngine

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    async def _groups_of(conn: AsyncConnection, user_id: str) -> list[str]:
        gm = db.group_members
        rows = await conn.execute(select(gm.c.group_id).where(gm.c.user_id == user_id).order_by(gm.c.group_id))
        return list(rows.scalars())

    @staticmethod
    async def _members_of(conn: AsyncConnection, group_ids: Sequence[str]) -> dict[str, list[str]]:
        gm = db.group_members
        out: dict[str, list[str]] = {g: [] for g in group_ids}
        if group_ids:
            rows = await conn.execute(
                select(gm.c.group_id, gm.c.user_id)
                .where(gm.c.group_id.in_(list(group_ids)))
                .order_by(gm.c.created_at, gm.c.user_id)
            )
            for r in rows:
                out[r.group_id].append(r.user_id)
        return out

    @staticmethod
    async def _user_groups(conn: AsyncConnection, user_ids: Sequence[str]) -> dict[str, list[str]]:
        gm = db.group_members
        out: dict[str, list[str]] = {u: [] for u in user_ids}
        if user_ids:
            rows = await conn.execute(
                select(gm.c.user_id, gm.c.group_id).where(gm.c.user_id.in_(list(user_ids))).order_by(gm.c.group_id)
            )
            for r in rows:
                out[r.user_id].append(r.group_id)
        return out

    @staticmethod
    async def _exists(conn: AsyncConnection, table: Any, col: Any, value: Any) -> bool:
        return (await conn.execute(select(func.count()).select_from(table).where(col == value))).scalar_one() > 0

    async def _load_user(self, conn: AsyncConnection, user_id: str) -> User:
        row = (await conn.execute(select(db.users).where(db.users.c.id == user_id))).first()
        if row is None:
            raise NotFound(f"No user with id `{user_id}`.", param="user_id")
        return user_of(row, await self._groups_of(conn, user_id))

    async def _load_group(self, conn: AsyncConnection, group_id: str) -> Group:
        row = (await conn.execute(select(db.groups).where(db.groups.c.id == group_id))).first()
        if row is None:
            raise NotFound(f"No group with id `{group_id}`.", param="group_id")
        members = (await self._members_of(conn, [group_id]))[group_id]
        return Group(id=row.id, name=row.name, members=members, created_at=as_utc(row.created_at))

    async def _check_role(self, conn: AsyncConnection, role: str) -> None:
        if not await self._exists(conn, db.roles, db.roles.c.name, role):
            raise BadRequest(f"No role named `{role}`.", param="role")

    async def _check_email(self, conn: AsyncConnection, email: str | None, user_id: str | None = None) -> None:
        if email is None:
            return
        u = db.users
        cond = u.c.email == email if user_id is None else and_(u.c.email == email, u.c.id != user_id)
        if (await conn.execute(select(u.c.id).where(cond))).first() is not None:
            raise Conflict(f"A user with email `{email}` already exists.", param="email")

    # --- users -------------------------------------------------------------------------------
    async def create_user(self, user_id: str, name: str, email: str | None, role: str) -> User:
        now = utcnow()
        try:
            async with self.engine.begin() as conn:
                await self._check_role(conn, role)
                await self._check_email(conn, email)
                await conn.execute(
                    insert(db.users).values(id=user_id, name=name, email=email, role=role, created_at=now)
                )
        except IntegrityError as exc:  # a concurrent create with the same email
            raise Conflict(f"A user with email `{email}` already exists.", param="email") from exc
        return User(id=user_id, name=name, email=email, role=role, groups=[], created_at=now)

    async def get_user(self, user_id: str) -> User:
        async with self.engine.connect() as conn:
            return await self._load_user(conn, user_id)

    async def list_users(self, limit: int, after: str | None) -> PageResult:
        async with self.engine.connect() as conn:
            rows, more = await keyset_page(conn, db.users, db.users.c.id.is_not(None), limit, after)
            gmap = await self._user_groups(conn, [r.id for r in rows])
        return PageResult([user_of(r, gmap[r.id]) for r in rows], more)

    async def update_user(self, user_id: str, changes: dict[str, Any], groups: list[str] | None) -> tuple[User, User]:
        """Apply a PATCH; answers (before, after) so the caller can tell what changed."""
        try:
            async with self.engine.begin() as conn:
                before = await self._load_user(conn, user_id)
                if "role" in changes:
                    await self._check_role(conn, changes["role"])
                if "email" in changes:
                    await self._check_email(conn, changes["email"], user_id)
                if changes:
                    await conn.execute(update(db.users).where(db.users.c.id == user_id).values(**changes))
                if groups is not None:
                    wanted = sorted(set(groups))
                    if wanted:
                        found = set(
                            (await conn.execute(select(db.groups.c.id).where(db.groups.c.id.in_(wanted)))).scalars()
                        )
                        missing = [g for g in wanted if g not in found]
                        if missing:
                            raise BadRequest(f"No group with id `{missing[0]}`.", param="groups")
                    gm = db.group_members
                    await conn.execute(delete(gm).where(gm.c.user_id == user_id, gm.c.group_id.not_in(wanted)))
                    have = set(await self._groups_of(conn, user_id))
                    now = utcnow()
                    for gid in wanted:
                        if gid not in have:
                            await conn.execute(insert(gm).values(group_id=gid, user_id=user_id, created_at=now))
                after = await self._load_user(conn, user_id)
        except IntegrityError as exc:
            raise Conflict("The update conflicts with another user (duplicate email).", param="email") from exc
        return before, after

    async def delete_user(self, user_id: str) -> list[str]:
        """Delete a user, their keys, memberships and grants to them; answers their keys' hashes."""
        async with self.engine.begin() as conn:
            await self._load_user(conn, user_id)
            owned = (
                await conn.execute(select(func.count()).select_from(db.agents).where(db.agents.c.owner_id == user_id))
            ).scalar_one()
            if owned:
                raise Conflict(f"User `{user_id}` owns {owned} agent(s); delete them first.", param="user_id")
            k = db.api_keys
            hashes = list((await conn.execute(select(k.c.key_hash).where(k.c.user_id == user_id))).scalars())
            g = db.grants
            await conn.execute(delete(g).where(g.c.principal_type == "user", g.c.principal_key == user_id))
            await conn.execute(delete(k).where(k.c.user_id == user_id))
            await conn.execute(delete(db.group_members).where(db.group_members.c.user_id == user_id))
            await conn.execute(delete(db.users).where(db.users.c.id == user_id))
        return hashes

    # --- groups ------------------------------------------------------------------------------
    async def create_group(self, group_id: str, name: str) -> Group:
        now = utcnow()
        try:
            async with self.engine.begin() as conn:
                if await self._exists(conn, db.groups, db.groups.c.name, name):
                    raise Conflict(f"A group named `{name}` already exists.", param="name")
                await conn.execute(insert(db.groups).values(id=group_id, name=name, created_at=now))
        except IntegrityError as exc:
            raise Conflict(f"A group named `{name}` already exists.", param="name") from exc
        return Group(id=group_id, name=name, members=[], created_at=now)

    async def list_groups(self, limit: int, after: str | None) -> PageResult:
        async with self.engine.connect() as conn:
            rows, more = await keyset_page(conn, db.groups, db.groups.c.id.is_not(None), limit, after)
            members = await self._members_of(conn, [r.id for r in rows])
        return PageResult(
            [Group(id=r.id, name=r.name, members=members[r.id], created_at=as_utc(r.created_at)) for r in rows], more
        )

    async def add_member(self, group_id: str, user_id: str) -> tuple[Group, bool]:
        """Add a member; answers the group and whether anything changed (adding twice is a no-op)."""
        async with self.engine.begin() as conn:
            await self._load_group(conn, group_id)
            await self._load_user(conn, user_id)
            gm = db.group_members
            present = (
                await conn.execute(select(gm.c.user_id).where(gm.c.group_id == group_id, gm.c.user_id == user_id))
            ).first()
            if present is None:
                await conn.execute(insert(gm).values(group_id=group_id, user_id=user_id, created_at=utcnow()))
            return await self._load_group(conn, group_id), present is None

    async def remove_member(self, group_id: str, user_id: str) -> Group:
        async with self.engine.begin() as conn:
            await self._load_group(conn, group_id)
            gm = db.group_members
            res = await conn.execute(delete(gm).where(gm.c.group_id == group_id, gm.c.user_id == user_id))
            if res.rowcount == 0:
                raise NotFound(f"User `{user_id}` is not a member of group `{group_id}`.", param="user_id")
            return await self._load_group(conn, group_id)

    # --- roles -------------------------------------------------------------------------------
    async def list_roles(self) -> list[Role]:
        r = db.roles
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(r).order_by(r.c.name))).all()
        return [Role(name=x.name, remote_agents_use=bool(x.remote_agents_use)) for x in rows]

    async def update_role(self, name: str, remote_agents_use: bool) -> tuple[Role, bool]:
        """Set a role's REMOTE_AGENTS USE; answers the role and whether it changed."""
        r = db.roles
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(r).where(r.c.name == name))).first()
            if row is None:
                raise NotFound(f"No role named `{name}`.", param="role_name")
            changed = bool(row.remote_agents_use) != remote_agents_use
            if changed:
                await conn.execute(update(r).where(r.c.name == name).values(remote_agents_use=remote_agents_use))
        return Role(name=name, remote_agents_use=remote_agents_use), changed

    # --- API keys ----------------------------------------------------------------------------
    async def create_key(self, key: ApiKey, key_hash: str) -> ApiKey:
        try:
            async with self.engine.begin() as conn:
                await self._load_user(conn, key.user_id)
                if await self._exists(conn, db.api_keys, db.api_keys.c.key_hash, key_hash):
                    raise Conflict("This API key is already registered.", param="key_hash")
                await conn.execute(
                    insert(db.api_keys).values(
                        id=key.id,
                        user_id=key.user_id,
                        name=key.name,
                        key_hash=key_hash,
                        prefix=key.prefix,
                        created_at=key.created_at,
                        expires_at=key.expires_at,
                        rate_limit_per_minute=key.rate_limit_per_minute,
                    )
                )
        except IntegrityError as exc:
            raise Conflict("This API key is already registered.", param="key_hash") from exc
        return key

    async def list_keys(self, user_id: str, limit: int, after: str | None) -> PageResult:
        async with self.engine.connect() as conn:
            await self._load_user(conn, user_id)
            rows, more = await keyset_page(conn, db.api_keys, db.api_keys.c.user_id == user_id, limit, after)
        return PageResult([key_of(r) for r in rows], more)

    async def revoke_key(self, key_id: str) -> tuple[ApiKey, str]:
        """Set ``revoked_at`` (once; the row stays). Answers the key and its hash."""
        k = db.api_keys
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(k).where(k.c.id == key_id))).first()
            if row is None:
                raise NotFound(f"No API key with id `{key_id}`.", param="key_id")
            if row.revoked_at is None:
                await conn.execute(update(k).where(k.c.id == key_id).values(revoked_at=utcnow()))
                row = (await conn.execute(select(k).where(k.c.id == key_id))).one()
        return key_of(row), row.key_hash

    # --- agents ------------------------------------------------------------------------------
    async def create_agent(self, agent: Agent, owner_grants: list[Grant], reply: Callable[[Agent], R]) -> R:
        """Insert the agent and its owner's grants; ``reply(stored agent)`` is made before the commit,
        so an agent whose answer cannot be made is not left behind."""
        async with self.engine.begin() as conn:
            if not await self._exists(conn, db.users, db.users.c.id, agent.owner_id):
                raise NotFound(f"No user with id `{agent.owner_id}`.", param="owner_id")
            await conn.execute(insert(db.agents).values(**agent.model_dump(exclude={"object"})))
            for g in owner_grants:
                await conn.execute(insert(db.grants).values(**grant_row(g)))
            return reply(await self._load_agent(conn, agent.id, strict=True))

    async def get_agent(self, agent_id: str) -> Agent:
        async with self.engine.connect() as conn:
            return await self._load_agent(conn, agent_id)

    @staticmethod
    async def _load_agent(conn: AsyncConnection, agent_id: str, *, strict: bool = False) -> Agent:
        row = (await conn.execute(select(db.agents).where(db.agents.c.id == agent_id))).first()
        if row is None:
            raise NotFound(f"No agent with id `{agent_id}`.", param="agent_id")
        return agent_of(row, strict=strict)

    async def list_agents(self, owner_id: str | None, limit: int, after: str | None) -> PageResult:
        a = db.agents
        where = a.c.owner_id == owner_id if owner_id else a.c.id.is_not(None)
        async with self.engine.connect() as conn:
            rows, more = await keyset_page(conn, a, where, limit, after)
        return PageResult([agent_of(r) for r in rows], more)

    async def update_agent(self, agent_id: str, changes: dict[str, Any], reply: Callable[[Agent], R]) -> R:
        """Apply a PATCH; like :meth:`create_agent`, ``reply(updated agent)`` is made before the commit."""
        async with self.engine.begin() as conn:
            await self._load_agent(conn, agent_id)
            await conn.execute(update(db.agents).where(db.agents.c.id == agent_id).values(**changes))
            return reply(await self._load_agent(conn, agent_id, strict=True))

    async def delete_agent(self, agent_id: str) -> None:
        async with self.engine.begin() as conn:
            await self._load_agent(conn, agent_id)
            await conn.execute(delete(db.grants).where(db.grants.c.agent_id == agent_id))
            await conn.execute(delete(db.agents).where(db.agents.c.id == agent_id))

    # --- grants ------------------------------------------------------------------------------
    async def create_grant(self, grant: Grant) -> Grant:
        try:
            async with self.engine.begin() as conn:
                await self._load_agent(conn, grant.agent_id)
                await self._check_principal(conn, grant.principal_type, grant.principal_id)
                g = db.grants
                dup = (
                    await conn.execute(
                        select(g.c.id).where(
                            g.c.agent_id == grant.agent_id,
                            g.c.resource_type == grant.resource_type,
                            g.c.principal_type == grant.principal_type,
                            g.c.principal_key == principal_key(grant.principal_type, grant.principal_id),
                        )
                    )
                ).first()
                if dup is not None:
                    raise Conflict(
                        f"Grant `{dup.id}` already gives this principal access; delete it first.", param="principal_id"
                    )
                await conn.execute(insert(g).values(**grant_row(grant)))
        except IntegrityError as exc:
            raise Conflict("This principal already has a grant on this resource.", param="principal_id") from exc
        return grant

    async def _check_principal(self, conn: AsyncConnection, ptype: str, pid: str | None) -> None:
        if ptype == "public":
            return
        table, col = {
            "user": (db.users, db.users.c.id),
            "group": (db.groups, db.groups.c.id),
            "role": (db.roles, db.roles.c.name),
        }[ptype]
        if pid is None or not await self._exists(conn, table, col, pid):
            raise NotFound(f"No {ptype} `{pid}` to grant access to.", param="principal_id", code="principal_not_found")

    async def list_grants(self, agent_id: str, limit: int, after: str | None) -> PageResult:
        async with self.engine.connect() as conn:
            await self._load_agent(conn, agent_id)
            rows, more = await keyset_page(conn, db.grants, db.grants.c.agent_id == agent_id, limit, after)
        return PageResult([grant_of(r) for r in rows], more)

    async def delete_grant(self, agent_id: str, grant_id: str) -> None:
        g = db.grants
        async with self.engine.begin() as conn:
            await self._load_agent(conn, agent_id)
            res = await conn.execute(delete(g).where(g.c.id == grant_id, g.c.agent_id == agent_id))
            if res.rowcount == 0:
                raise NotFound(f"No grant with id `{grant_id}` on agent `{agent_id}`.", param="grant_id")
