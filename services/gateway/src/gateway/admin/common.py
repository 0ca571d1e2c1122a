"""What every admin route module shares: the guarded router factory, paging, and body aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from contracts.bounds import ID_MAX_LENGTH, text_problem

from ..bodylimits import check_declared_length
from ..deps import CtxDep
from ..errors import GatewayError
from .security import require_admin

ADMIN_PREFIX = "/admin/v1"
#: Error answers every admin route may give (documented once, rendered as the OpenAI envelope).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request (`invalid_request_error`, `param` names the field)"},
    401: {"description": "missing or wrong admin token"},
    404: {"description": "no such resource"},
    413: {"description": "the request body is larger than the gateway's admin body limit"},
    415: {"description": "the request body is not JSON"},
    503: {"description": "the owning service did not answer"},
}

#: The longest value of each path and query parameter (their columns' widths); ids are 64.
PARAM_MAX_LENGTH: dict[str, int] = {"model_key": 200, "run_id": 128}
#: Query parameters whose values are forwarded (the others are ignored, so not checked).
CHECKED_QUERY = ("after", "owner_id", "run_id")


def param_problem(name: str, value: str) -> str | None:
    """Why a path or query parameter's value cannot name anything stored, or ``None``."""
    problem = text_problem(value)
    if problem is not None:
        return problem
    limit = PARAM_MAX_LENGTH.get(name, ID_MAX_LENGTH)
    return f"must be at most {limit} characters" if len(value) > limit else None


async def guard_request(request: Request, ctx: CtxDep) -> None:
    """Refuse what no admin route can use before anything is read or forwarded: a body announced as
    larger than the limit (413), a path or query parameter that no column can hold (400)."""
    check_declared_length(request, ctx.settings.admin_max_body_bytes)
    query = [(name, value) for name in CHECKED_QUERY for value in request.query_params.getlist(name)]
    for name, value in [*request.path_params.items(), *query]:
        problem = param_problem(name, value)
        if problem is not None:
            raise GatewayError.bad_request(f"Invalid value for '{name}': {problem}.", param=name)


def admin_router() -> APIRouter:
    """A router under ``/admin/v1``, tagged ``admin``, every route behind the admin token and
    :func:`guard_request`."""
    return APIRouter(
        prefix=ADMIN_PREFIX,
        tags=["admin"],
        dependencies=[Depends(require_admin), Depends(guard_request)],
        responses=ERROR_RESPONSES,
    )


def page_query(
    limit: Annotated[int, Query(ge=1, le=100, description="page size")] = 20,
    after: Annotated[str | None, Query(description="the last id of the previous page")] = None,
) -> dict[str, str]:
    """The paging query forwarded to the owning service (``limit`` always present)."""
    query = {"limit": str(limit)}
    if after:
        query["after"] = after
    return query


PageQuery = Annotated[dict[str, str], Depends(page_query)]


def op_id(op: str) -> str:
    """The OpenAPI ``operationId`` of an admin op (``users.create`` → ``admin_users_create``)."""
    return "admin_" + op.replace(".", "_")
