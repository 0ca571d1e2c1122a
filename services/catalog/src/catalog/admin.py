"""The catalog's admin operations (``AdminRequest.op``; the list is in :mod:`contracts.admin`).

Each operation validates its input with the contracts' models (a failure is a 400 naming the field),
calls the repository, publishes the cache invalidations its change calls for, and answers an
:class:`contracts.AdminReply` with the resource's JSON. Errors are the OpenAI envelope.

Path and query parameters are checked before any op runs (no NUL, at most an id column's width), so
no value reaches the database that it cannot compare, and no error repeats a huge input. An agent's
answer is made inside the transaction that writes it: if it cannot be made, nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from contracts import AdminReply, AdminRequest, CacheInvalidated, problems, utcnow
from contracts.admin import (
    GRANT_ROLE_BITS,
    Agent,
    AgentCreate,
    AgentUpdate,
    ApiKey,
    ApiKeyRegister,
    Grant,
    GrantCreate,
    GroupCreate,
    GroupMemberAdd,
    Page,
    RoleUpdate,
    UserCreate,
    UserUpdate,
)
from contracts.bounds import ID_MAX_LENGTH, json_problem, text_problem
from contracts.fleet import capability_problems
from contracts.problems import Problem

from . import ids
from .errors import BadRequest, CatalogError
from .fleetreport import fleet_report
from .permissions import RESOURCE_AGENT, RESOURCE_REMOTE_AGENT
from .repository import PageResult
from .service import CatalogService

M = TypeVar("M", bound=BaseModel)
Op = Callable[[CatalogService, AdminRequest], Awaitable[AdminReply]]

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
#: The JSON a list page may hold (an agent is at most about 800 KB, a NATS message 1 MiB by default).
PAGE_BUDGET_BYTES = 512 * 1024
#: How much of a caller's input (a field path, an op name) an error message repeats.
ECHO_MAX = 200


def validation_error(
    exc: ValidationError, extra: list[Problem] | None = None, fields: list[str] | None = None
) -> BadRequest:
    """A 400 naming every problem at once (:mod:`contracts.problems`): pydantic's and ``extra``, in
    the order of ``fields``; ``param`` is the first one's (``tools[0]``, ``model_parameters.top_p``)."""
    found = problems.from_pydantic(exc.errors(include_url=False, include_input=False))
    return problems_error([*found, *(extra or [])], fields or [])


def problems_error(found: list[Problem], fields: list[str]) -> BadRequest:
    ordered = [(p[:ECHO_MAX] if p else None, m) for p, m in problems.in_field_order(found, fields)]
    return BadRequest(problems.describe(ordered), param=ordered[0][0])


def check_parameters(req: AdminRequest) -> None:
    """400 for a path or query parameter no catalog column can hold (every one is an id, a role
    name or a page size: at most 64 characters, no NUL)."""
    for name, value in [*req.params.items(), *req.query.items()]:
        problem = text_problem(value)
        if problem is None and len(value) > ID_MAX_LENGTH:
            problem = f"must be at most {ID_MAX_LENGTH} characters"
        if problem is not None:
            shown = name[:ECHO_MAX]
            raise BadRequest(f"{shown}: {problem}", param=shown)


def body_as(model: type[M], req: AdminRequest, extra: list[Problem] | None = None) -> M:
    """The body as ``model``, or one 400 naming its every problem (and the ``extra`` ones)."""
    if not isinstance(req.body, dict):
        raise BadRequest("The request body must be a JSON object.", param=None)
    fields = list(model.model_fields)
    try:
        body = model.model_validate(req.body)
    except ValidationError as exc:
        raise validation_error(exc, extra, fields) from exc
    if extra:
        raise problems_error(extra, fields)
    return body


def agent_body(model: type[M], svc: CatalogService, req: AdminRequest) -> M:
    """An agent body, its provider and tools checked against what the live runners serve."""
    body = req.body if isinstance(req.body, dict) else {}
    caps = svc.fleet.capabilities()
    return body_as(model, req, capability_problems(body.get("provider"), body.get("tools"), caps))


def param(req: AdminRequest, name: str) -> str:
    value = req.params.get(name)
    if not value:
        raise BadRequest(f"Missing path parameter `{name}`.", param=name)
    return value


def paging(req: AdminRequest) -> tuple[int, str | None]:
    raw = req.query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest("limit: must be an integer", param="limit") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}", param="limit")
    return limit, req.query.get("after") or None


def ok(resource: BaseModel | dict[str, Any], status: int = 200) -> AdminReply:
    """The success answer; raises (a 500) when its JSON is not what the gateway can render, which
    inside a write's transaction undoes the write."""
    body = resource.model_dump(mode="json") if isinstance(resource, BaseModel) else resource
    found = json_problem(body)
    if found is not None:
        raise CatalogError(f"The answer cannot be rendered as JSON ({found[1]}).")
    return AdminReply(status=status, body=body)


def page(result: PageResult) -> AdminReply:
    """A list page of at most :data:`PAGE_BUDGET_BYTES` of JSON: items beyond it are left for the next
    page (``has_more``), since one reply must fit in one NATS message. The first item always fits."""
    data: list[dict[str, Any]] = []
    ids_: list[str | None] = []
    size, has_more = 0, result.has_more
    for item in result.items:
        body = item.model_dump(mode="json")
        size += len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        if data and size > PAGE_BUDGET_BYTES:
            has_more = True
            break
        data.append(body)
        ids_.append(getattr(item, "id", None) or getattr(item, "name", None))
    return ok(
        Page(
            data=data,
            first_id=ids_[0] if ids_ else None,
            last_id=ids_[-1] if ids_ else None,
            has_more=has_more,
        )
    )


def deleted(obj_id: str, kind: str) -> AdminReply:
    return ok({"id": obj_id, "object": f"{kind}.deleted", "deleted": True})


# --- users ---------------------------------------------------------------------------------------
async def users_create(svc: CatalogService, req: AdminRequest) -> AdminReply:
    body = body_as(UserCreate, req)
    user = await svc.repo.create_user(ids.new_user_id(), body.name, body.email, body.role)
    return ok(user, 201)


async def users_list(svc: CatalogService, req: AdminRequest) -> AdminReply:
    return page(await svc.repo.list_users(*paging(req)))


async def users_get(svc: CatalogService, req: AdminRequest) -> AdminReply:
    return ok(await svc.repo.get_user(param(req, "user_id")))


async def users_update(svc: CatalogService, req: AdminRequest) -> AdminReply:
    user_id = param(req, "user_id")
    body = body_as(UserUpdate, req)
    changes = body.model_dump(exclude_unset=True, exclude={"groups"})
    if changes.get("name", 1) is None or changes.get("role", 1) is None:
        raise BadRequest("name and role cannot be null.", param="name" if "name" in changes else "role")
    before, after = await svc.repo.update_user(user_id, changes, body.groups)
    if before.role != after.role or sorted(before.groups) != sorted(after.groups):
        await svc.invalidate(CacheInvalidated(kind="user", user_id=user_id, at=utcnow()))
    return ok(after)


async def users_delete(svc: CatalogService, req: AdminRequest) -> AdminReply:
    user_id = param(req, "user_id")
    hashes = await svc.repo.delete_user(user_id)
    await svc.invalidate(CacheInvalidated(kind="user", user_id=user_id, at=utcnow()), key_hashes=hashes)
    return deleted(user_id, "user")


# --- groups and roles ----------------------------------------------------------------------------
async def groups_create(svc: CatalogService, req: AdminRequest) -> AdminReply:
    body = body_as(GroupCreate, req)
    return ok(await svc.repo.create_group(ids.new_group_id(), body.name), 201)


async def groups_list(svc: CatalogService, req: AdminRequest) -> AdminReply:
    return page(await svc.repo.list_groups(*paging(req)))


async def groups_members_add(svc: CatalogService, req: AdminRequest) -> AdminReply:
    group_id = param(req, "group_id")
    body = body_as(GroupMemberAdd, req)
    group, changed = await svc.repo.add_member(group_id, body.user_id)
    if changed:
        await svc.invalidate(CacheInvalidated(kind="user", user_id=body.user_id, at=utcnow()))
    return ok(group)


async def groups_members_remove(svc: CatalogService, req: AdminRequest) -> AdminReply:
    group_id, user_id = param(req, "group_id"), param(req, "user_id")
    group = await svc.repo.remove_member(group_id, user_id)
    await svc.invalidate(CacheInvalidated(kind="user", user_id=user_id, at=utcnow()))
    return ok(group)


async def roles_list(svc: CatalogService, req: AdminRequest) -> AdminReply:
    roles = await svc.repo.list_roles()
    return page(PageResult(roles, False))


async def roles_update(svc: CatalogService, req: AdminRequest) -> AdminReply:
    name = param(req, "role_name")
    body = body_as(RoleUpdate, req)
    role, changed = await svc.repo.update_role(name, body.remote_agents_use)
    if changed:
        # Every principal of that role changes: simpler and safe to drop everything.
        await svc.invalidate(CacheInvalidated(kind="all", at=utcnow()))
    return ok(role)


# --- API keys ------------------------------------------------------------------------------------
async def api_keys_create(svc: CatalogService, req: AdminRequest) -> AdminReply:
    user_id = param(req, "user_id")
    body = body_as(ApiKeyRegister, req)
    key = ApiKey(
        id=ids.new_key_id(),
        user_id=user_id,
        name=body.name,
        prefix=body.prefix,
        created_at=utcnow(),
        expires_at=body.expires_at,
        rate_limit_per_minute=body.rate_limit_per_minute,
    )
    key = await svc.repo.create_key(key, body.key_hash)
    # A gateway may hold a cached "invalid" answer for this hash.
    await svc.invalidate(CacheInvalidated(kind="api_key", key_hash=body.key_hash, user_id=user_id, at=utcnow()))
    return ok(key, 201)


async def api_keys_list(svc: CatalogService, req: AdminRequest) -> AdminReply:
    return page(await svc.repo.list_keys(param(req, "user_id"), *paging(req)))


async def api_keys_revoke(svc: CatalogService, req: AdminRequest) -> AdminReply:
    key, key_hash = await svc.repo.revoke_key(param(req, "key_id"))
    await svc.invalidate(CacheInvalidated(kind="api_key", key_hash=key_hash, user_id=key.user_id, at=utcnow()))
    return ok(key)


# --- agents and grants ---------------------------------------------------------------------------
async def agents_create(svc: CatalogService, req: AdminRequest) -> AdminReply:
    body = agent_body(AgentCreate, svc, req)
    now = utcnow()
    agent = Agent(**body.model_dump(), id=ids.new_agent_id(), created_at=now, updated_at=now)
    # The owner gets `owner` on both resource types, as LibreChat does at creation.
    owner_grants = [
        Grant(
            id=ids.new_grant_id(),
            agent_id=agent.id,
            resource_type=rt,
            principal_type="user",
            principal_id=agent.owner_id,
            role="owner",
            permissions=GRANT_ROLE_BITS["owner"],
            created_at=now,
        )
        for rt in (RESOURCE_AGENT, RESOURCE_REMOTE_AGENT)
    ]
    reply = await svc.repo.create_agent(agent, owner_grants, lambda stored: ok(stored, 201))
    await svc.invalidate(CacheInvalidated(kind="agent", agent_id=agent.id, at=utcnow()))
    return reply


async def agents_list(svc: CatalogService, req: AdminRequest) -> AdminReply:
    limit, after = paging(req)
    return page(await svc.repo.list_agents(req.query.get("owner_id") or None, limit, after))


async def agents_get(svc: CatalogService, req: AdminRequest) -> AdminReply:
    return ok(await svc.repo.get_agent(param(req, "agent_id")))


async def agents_update(svc: CatalogService, req: AdminRequest) -> AdminReply:
    agent_id = param(req, "agent_id")
    body = agent_body(AgentUpdate, svc, req)
    changes = body.model_dump(exclude_unset=True)
    nulls = [
        name
        for name in ("name", "provider", "model", "model_parameters", "tools")
        if name in changes and changes[name] is None
    ]
    if nulls:
        raise problems_error([(name, "cannot be null") for name in nulls], list(AgentUpdate.model_fields))
    changes["updated_at"] = utcnow()
    reply = await svc.repo.update_agent(agent_id, changes, ok)
    await svc.invalidate(CacheInvalidated(kind="agent", agent_id=agent_id, at=utcnow()))
    return reply


async def agents_delete(svc: CatalogService, req: AdminRequest) -> AdminReply:
    agent_id = param(req, "agent_id")
    await svc.repo.delete_agent(agent_id)
    await svc.invalidate(CacheInvalidated(kind="agent", agent_id=agent_id, at=utcnow()))
    return deleted(agent_id, "agent")


async def grants_create(svc: CatalogService, req: AdminRequest) -> AdminReply:
    agent_id = param(req, "agent_id")
    body = body_as(GrantCreate, req)
    if body.principal_type == "public" and body.principal_id is not None:
        raise BadRequest("principal_id: must be null for a public grant", param="principal_id")
    if body.principal_type != "public" and not body.principal_id:
        raise BadRequest(f"principal_id: required for a {body.principal_type} grant", param="principal_id")
    grant = Grant(
        id=ids.new_grant_id(),
        agent_id=agent_id,
        resource_type=body.resource_type,
        principal_type=body.principal_type,
        principal_id=body.principal_id,
        role=body.role,
        permissions=GRANT_ROLE_BITS[body.role],
        created_at=utcnow(),
    )
    grant = await svc.repo.create_grant(grant)
    await svc.invalidate(CacheInvalidated(kind="grant", agent_id=agent_id, at=utcnow()))
    return ok(grant, 201)


async def grants_list(svc: CatalogService, req: AdminRequest) -> AdminReply:
    return page(await svc.repo.list_grants(param(req, "agent_id"), *paging(req)))


async def grants_delete(svc: CatalogService, req: AdminRequest) -> AdminReply:
    agent_id, grant_id = param(req, "agent_id"), param(req, "grant_id")
    await svc.repo.delete_grant(agent_id, grant_id)
    await svc.invalidate(CacheInvalidated(kind="grant", agent_id=agent_id, at=utcnow()))
    return deleted(grant_id, "grant")


async def fleet_capabilities(svc: CatalogService, req: AdminRequest) -> AdminReply:
    """What the live runners serve (the provider connections and tools agents may name)."""
    return ok(svc.fleet.capabilities())


async def fleet_report_op(svc: CatalogService, req: AdminRequest) -> AdminReply:
    """The same per provider, tool and runner, for operators (read-only)."""
    return ok(fleet_report(svc.fleet.live_runners()))


OPS: dict[str, Op] = {
    "users.create": users_create,
    "users.list": users_list,
    "users.get": users_get,
    "users.update": users_update,
    "users.delete": users_delete,
    "groups.create": groups_create,
    "groups.list": groups_list,
    "groups.members.add": groups_members_add,
    "groups.members.remove": groups_members_remove,
    "roles.list": roles_list,
    "roles.update": roles_update,
    "api_keys.create": api_keys_create,
    "api_keys.list": api_keys_list,
    "api_keys.revoke": api_keys_revoke,
    "agents.create": agents_create,
    "agents.list": agents_list,
    "agents.get": agents_get,
    "agents.update": agents_update,
    "agents.delete": agents_delete,
    "grants.create": grants_create,
    "grants.list": grants_list,
    "grants.delete": grants_delete,
    "fleet.capabilities": fleet_capabilities,
    "fleet.report": fleet_report_op,
}


def error_reply(err: CatalogError) -> AdminReply:
    info = err.info()
    return AdminReply(status=info.status, body=info.envelope(), error=info)


async def dispatch(svc: CatalogService, req: AdminRequest) -> AdminReply:
    """Run one admin op; every catalog error becomes its envelope (other exceptions propagate)."""
    op = OPS.get(req.op)
    try:
        if op is None:
            shown = req.op[:ECHO_MAX] if text_problem(req.op) is None else "(unprintable)"
            raise BadRequest(f"Unknown catalog operation `{shown}`.", param="op", code="unknown_operation")
        check_parameters(req)
        return await op(svc, req)
    except CatalogError as err:
        return error_reply(err)
