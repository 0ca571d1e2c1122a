"""Rows → the contracts' resources, and keyset pagination."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import AgentSnapshot
from contracts.admin import Agent, ApiKey, Grant, User

from ..errors import BadRequest
from ..keys import as_utc


@dataclass(frozen=True)
class PageResult:
    items: list[Any]
    has_more: bool


def user_of(row: Any, groups: Sequence[str]) -> User:
    return User(
        id=row.id,
        name=row.name,
        email=row.email,
        role=row.role,
        groups=list(groups),
        created_at=as_utc(row.created_at),
    )


def key_of(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        last_used_at=as_utc(row.last_used_at),
        revoked_at=as_utc(row.revoked_at),
        rate_limit_per_minute=row.rate_limit_per_minute,
    )


def agent_of(row: Any) -> Agent:
    return Agent(
        id=row.id,
        name=row.name,
        description=row.description,
        provider=row.provider,
        model=row.model,
        instructions=row.instructions,
        model_parameters=row.model_parameters or {},
        tools=row.tools or [],
        owner_id=row.owner_id,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def grant_of(row: Any) -> Grant:
    return Grant(
        id=row.id,
        agent_id=row.agent_id,
        resource_type=row.resource_type,
        principal_type=row.principal_type,
        principal_id=row.principal_id,
        role=row.role,
        permissions=row.permissions,
        created_at=as_utc(row.created_at),
    )


def agent_snapshot(agent: Agent) -> AgentSnapshot:
    return AgentSnapshot(
        id=agent.id,
        name=agent.name,
        description=agent.description,
        provider=agent.provider,
        model=agent.model,
        instructions=agent.instructions,
        model_parameters=agent.model_parameters,
        tools=agent.tools,
        owner_id=agent.owner_id,
        created_at=agent.created_at,
    )


async def keyset_page(
    conn: AsyncConnection, table: Any, where: Any, limit: int, after: str | None
) -> tuple[list[Any], bool]:
    """Rows of ``table`` matching ``where`` in (created_at, id) order, after the row with id ``after``."""
    cond = where
    if after is not None:
        anchor = (await conn.execute(select(table.c.created_at).where(and_(where, table.c.id == after)))).first()
        if anchor is None:
            raise BadRequest(f"No object with id `{after}` in this list.", param="after")
        cond = and_(
            where,
            or_(
                table.c.created_at > anchor.created_at,
                and_(table.c.created_at == anchor.created_at, table.c.id > after),
            ),
        )
    rows = (
        await conn.execute(select(table).where(cond).order_by(table.c.created_at, table.c.id).limit(limit + 1))
    ).all()
    return list(rows[:limit]), len(rows) > limit


def principal_key(ptype: str, pid: str | None) -> str:
    return "*" if ptype == "public" else (pid or "")


def grant_row(g: Grant) -> dict[str, Any]:
    row = g.model_dump(exclude={"object"})
    row["principal_key"] = principal_key(g.principal_type, g.principal_id)
    return row
