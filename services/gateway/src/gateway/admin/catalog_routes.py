"""Admin routes owned by the catalog: users, groups, roles, API keys, agents, grants, and what the
runner fleet serves (read-only).

Each route validates its body with the contract model and forwards an ``AdminRequest`` to
``subjects.catalog_admin``; the op names are those of :mod:`contracts.admin`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from starlette.responses import Response

from contracts.admin import (
    Agent,
    AgentCreate,
    AgentUpdate,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRegister,
    CapabilitiesReport,
    Grant,
    GrantCreate,
    Group,
    GroupCreate,
    GroupMemberAdd,
    Page,
    Role,
    RoleUpdate,
    User,
    UserCreate,
    UserUpdate,
)

from ..deps import CtxDep
from ..errors import SERVER, GatewayError, JSONResponse
from .bodies import body_doc, json_body
from .capabilities import agent_problems
from .common import PageQuery, admin_router, op_id
from .forward import forward, relay, render
from .keys import make_key

router = admin_router()

UserCreateBody = Annotated[UserCreate, Depends(json_body(UserCreate))]
UserUpdateBody = Annotated[UserUpdate, Depends(json_body(UserUpdate))]
GroupCreateBody = Annotated[GroupCreate, Depends(json_body(GroupCreate))]
GroupMemberAddBody = Annotated[GroupMemberAdd, Depends(json_body(GroupMemberAdd))]
RoleUpdateBody = Annotated[RoleUpdate, Depends(json_body(RoleUpdate))]
ApiKeyCreateBody = Annotated[ApiKeyCreate, Depends(json_body(ApiKeyCreate))]
AgentCreateBody = Annotated[AgentCreate, Depends(json_body(AgentCreate, check=agent_problems))]
AgentUpdateBody = Annotated[AgentUpdate, Depends(json_body(AgentUpdate, check=agent_problems))]
GrantCreateBody = Annotated[GrantCreate, Depends(json_body(GrantCreate))]


# --- users ----------------------------------------------------------------------------------
@router.post(
    "/users",
    status_code=201,
    response_model=User,
    summary="Create a user",
    operation_id=op_id("users.create"),
    openapi_extra=body_doc(UserCreate),
)
async def create_user(ctx: CtxDep, body: UserCreateBody) -> Response:
    return await relay(ctx, "catalog", "users.create", body=body.model_dump(mode="json"), success=201)


@router.get("/users", response_model=Page, summary="List users", operation_id=op_id("users.list"))
async def list_users(ctx: CtxDep, page: PageQuery) -> Response:
    return await relay(ctx, "catalog", "users.list", query=page)


@router.get("/users/{user_id}", response_model=User, summary="Get a user", operation_id=op_id("users.get"))
async def get_user(ctx: CtxDep, user_id: str) -> Response:
    return await relay(ctx, "catalog", "users.get", params={"user_id": user_id})


@router.patch(
    "/users/{user_id}",
    response_model=User,
    summary="Update a user",
    operation_id=op_id("users.update"),
    openapi_extra=body_doc(UserUpdate),
)
async def update_user(ctx: CtxDep, user_id: str, body: UserUpdateBody) -> Response:
    # Only the fields sent: an absent field is left alone, an explicit null clears it.
    return await relay(
        ctx,
        "catalog",
        "users.update",
        params={"user_id": user_id},
        body=body.model_dump(mode="json", exclude_unset=True),
    )


@router.delete("/users/{user_id}", status_code=204, summary="Delete a user", operation_id=op_id("users.delete"))
async def delete_user(ctx: CtxDep, user_id: str) -> Response:
    return await relay(ctx, "catalog", "users.delete", params={"user_id": user_id}, success=204)


# --- groups and roles -----------------------------------------------------------------------
@router.post(
    "/groups",
    status_code=201,
    response_model=Group,
    summary="Create a group",
    operation_id=op_id("groups.create"),
    openapi_extra=body_doc(GroupCreate),
)
async def create_group(ctx: CtxDep, body: GroupCreateBody) -> Response:
    return await relay(ctx, "catalog", "groups.create", body=body.model_dump(mode="json"), success=201)


@router.get("/groups", response_model=Page, summary="List groups", operation_id=op_id("groups.list"))
async def list_groups(ctx: CtxDep, page: PageQuery) -> Response:
    return await relay(ctx, "catalog", "groups.list", query=page)


@router.post(
    "/groups/{group_id}/members",
    status_code=201,
    response_model=Group,
    summary="Add a member to a group",
    operation_id=op_id("groups.members.add"),
    openapi_extra=body_doc(GroupMemberAdd),
)
async def add_group_member(ctx: CtxDep, group_id: str, body: GroupMemberAddBody) -> Response:
    return await relay(
        ctx,
        "catalog",
        "groups.members.add",
        params={"group_id": group_id},
        body=body.model_dump(mode="json"),
        success=201,
    )


@router.delete(
    "/groups/{group_id}/members/{user_id}",
    status_code=204,
    summary="Remove a member from a group",
    operation_id=op_id("groups.members.remove"),
)
async def remove_group_member(ctx: CtxDep, group_id: str, user_id: str) -> Response:
    return await relay(
        ctx, "catalog", "groups.members.remove", params={"group_id": group_id, "user_id": user_id}, success=204
    )


@router.get("/roles", response_model=Page, summary="List roles", operation_id=op_id("roles.list"))
async def list_roles(ctx: CtxDep, page: PageQuery) -> Response:
    return await relay(ctx, "catalog", "roles.list", query=page)


@router.get(
    "/capabilities",
    response_model=CapabilitiesReport,
    summary="What the live runners serve: provider connections and tools, with the runners announcing each",
    operation_id=op_id("fleet.report"),
)
async def get_capabilities(ctx: CtxDep) -> Response:
    return await relay(ctx, "catalog", "fleet.report")


@router.patch(
    "/roles/{role_name}",
    response_model=Role,
    summary="Update a role's permissions",
    operation_id=op_id("roles.update"),
    openapi_extra=body_doc(RoleUpdate),
)
async def update_role(ctx: CtxDep, role_name: str, body: RoleUpdateBody) -> Response:
    return await relay(
        ctx,
        "catalog",
        "roles.update",
        params={"role_name": role_name},
        body=body.model_dump(mode="json", exclude_unset=True),
    )


# --- API keys -------------------------------------------------------------------------------
@router.post(
    "/users/{user_id}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key (the plaintext key is in this answer only)",
    operation_id=op_id("api_keys.create"),
    openapi_extra=body_doc(ApiKeyCreate),
)
async def create_api_key(ctx: CtxDep, user_id: str, body: ApiKeyCreateBody) -> Response:
    key = make_key()
    register = ApiKeyRegister(**body.model_dump(), key_hash=key.key_hash, prefix=key.prefix)
    reply = await forward(
        ctx, "catalog", "api_keys.create", params={"user_id": user_id}, body=register.model_dump(mode="json")
    )
    if reply.error is not None or reply.status >= 300:
        return render(reply)
    if not isinstance(reply.body, dict):
        raise GatewayError.of(500, "The catalog service sent a malformed reply.", SERVER, "bad_reply")
    # The one place the plaintext exists outside the caller: this response body.
    return JSONResponse({**reply.body, "key": key.plaintext}, status_code=201)


@router.get(
    "/users/{user_id}/api-keys",
    response_model=Page,
    summary="List a user's API keys (never the keys themselves)",
    operation_id=op_id("api_keys.list"),
)
async def list_api_keys(ctx: CtxDep, user_id: str, page: PageQuery) -> Response:
    return await relay(ctx, "catalog", "api_keys.list", params={"user_id": user_id}, query=page)


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    summary="Revoke an API key",
    operation_id=op_id("api_keys.revoke"),
)
async def revoke_api_key(ctx: CtxDep, key_id: str) -> Response:
    return await relay(ctx, "catalog", "api_keys.revoke", params={"key_id": key_id}, success=204)


# --- agents and grants ----------------------------------------------------------------------
@router.post(
    "/agents",
    status_code=201,
    response_model=Agent,
    summary="Create an agent",
    operation_id=op_id("agents.create"),
    openapi_extra=body_doc(AgentCreate),
)
async def create_agent(ctx: CtxDep, body: AgentCreateBody) -> Response:
    return await relay(ctx, "catalog", "agents.create", body=body.model_dump(mode="json"), success=201)


@router.get("/agents", response_model=Page, summary="List agents", operation_id=op_id("agents.list"))
async def list_agents(
    ctx: CtxDep,
    page: PageQuery,
    owner_id: Annotated[str | None, Query(description="only this user's agents")] = None,
) -> Response:
    query = {**page, "owner_id": owner_id} if owner_id else page
    return await relay(ctx, "catalog", "agents.list", query=query)


@router.get("/agents/{agent_id}", response_model=Agent, summary="Get an agent", operation_id=op_id("agents.get"))
async def get_agent(ctx: CtxDep, agent_id: str) -> Response:
    return await relay(ctx, "catalog", "agents.get", params={"agent_id": agent_id})


@router.patch(
    "/agents/{agent_id}",
    response_model=Agent,
    summary="Update an agent",
    operation_id=op_id("agents.update"),
    openapi_extra=body_doc(AgentUpdate),
)
async def update_agent(ctx: CtxDep, agent_id: str, body: AgentUpdateBody) -> Response:
    return await relay(
        ctx,
        "catalog",
        "agents.update",
        params={"agent_id": agent_id},
        body=body.model_dump(mode="json", exclude_unset=True),
    )


@router.delete("/agents/{agent_id}", status_code=204, summary="Delete an agent", operation_id=op_id("agents.delete"))
async def delete_agent(ctx: CtxDep, agent_id: str) -> Response:
    return await relay(ctx, "catalog", "agents.delete", params={"agent_id": agent_id}, success=204)


@router.post(
    "/agents/{agent_id}/grants",
    status_code=201,
    response_model=Grant,
    summary="Grant access to an agent",
    operation_id=op_id("grants.create"),
    openapi_extra=body_doc(GrantCreate),
)
async def create_grant(ctx: CtxDep, agent_id: str, body: GrantCreateBody) -> Response:
    if body.principal_type != "public" and not body.principal_id:
        raise GatewayError.bad_request(
            f"Missing required parameter: 'principal_id' (required for a '{body.principal_type}' grant).",
            param="principal_id",
        )
    return await relay(
        ctx, "catalog", "grants.create", params={"agent_id": agent_id}, body=body.model_dump(mode="json"), success=201
    )


@router.get(
    "/agents/{agent_id}/grants",
    response_model=Page,
    summary="List an agent's grants",
    operation_id=op_id("grants.list"),
)
async def list_grants(ctx: CtxDep, agent_id: str, page: PageQuery) -> Response:
    return await relay(ctx, "catalog", "grants.list", params={"agent_id": agent_id}, query=page)


@router.delete(
    "/agents/{agent_id}/grants/{grant_id}",
    status_code=204,
    summary="Revoke a grant",
    operation_id=op_id("grants.delete"),
)
async def delete_grant(ctx: CtxDep, agent_id: str, grant_id: str) -> Response:
    return await relay(
        ctx, "catalog", "grants.delete", params={"agent_id": agent_id, "grant_id": grant_id}, success=204
    )
