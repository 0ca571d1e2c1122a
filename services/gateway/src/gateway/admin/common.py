"""What every admin route module shares: the guarded router factory, paging, and body aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from .security import require_admin

ADMIN_PREFIX = "/admin/v1"
#: Error answers every admin route may give (documented once, rendered as the OpenAI envelope).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request (`invalid_request_error`, `param` names the field)"},
    401: {"description": "missing or wrong admin token"},
    404: {"description": "no such resource"},
    503: {"description": "the owning service did not answer"},
}


def admin_router() -> APIRouter:
    """A router under ``/admin/v1``, tagged ``admin``, every route behind the admin token."""
    return APIRouter(
        prefix=ADMIN_PREFIX, tags=["admin"], dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES
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
