"""Rows → the contracts' resources, and keyset pagination."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import AgentSnapshot
from contracts.admin import Agent, ApiKey, Grant, User
from contracts.bounds import json_problem, text_problem

from ..errors import BadRequest, Conflict
from ..keys import as_utc

log = logging.getLogger(__name__)


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


def agent_of(row: Any, *, strict: bool = False) -> Agent:
    """The agent of a row. Its JSON columns hold whatever was written; what could not be rendered as
    JSON (an integer beyond 64 bits, a non-finite number, NUL) is left out and logged, so that one bad
    row cannot fail a list or every request to it. ``strict`` (for a write about to commit) raises a
    409 instead, undoing the write."""
    params, tools, dropped = _clean_json_columns(row.model_parameters, row.tools)
    if dropped:
        if strict:
            raise Conflict(
                f"Agent `{row.id}` would hold a value that cannot be served ({dropped[0]}); "
                "send model_parameters and tools that replace it.",
                param=dropped[0].split(".", 1)[0].split("[", 1)[0].split(":", 1)[0],
            )
        log.warning("agent %s holds values that cannot be served, left out: %s", row.id, "; ".join(dropped))
    return Agent(
        id=row.id,
        name=row.name,
        description=row.description,
        provider=row.provider,
        model=row.model,
        instructions=row.instructions,
        model_parameters=params,
        tools=tools,
        owner_id=row.owner_id,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def _clean_json_columns(params: Any, tools: Any) -> tuple[dict[str, Any], list[str], list[str]]:
    """``model_parameters`` and ``tools`` without what cannot be served, and what was left out."""
    dropped: list[str] = []
    clean_params: dict[str, Any] = {}
    if isinstance(params, dict):
        for key, value in params.items():
            found = json_problem({key: value}, max_depth=32)
            if found is None:
                clean_params[key] = value
            else:
                dropped.append(f"model_parameters.{str(key)[:100]!r}: {found[1]}")
    elif params is not None:
        dropped.append("model_parameters: not a JSON object")
    clean_tools: list[str] = []
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            if isinstance(tool, str) and text_problem(tool) is None:
                clean_tools.append(tool)
            else:
                dropped.append(f"tools[{i}]: not a storable string")
    elif tools is not None:
        dropped.append("tools: not a JSON array")
    return clean_params, clean_tools, dropped


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
