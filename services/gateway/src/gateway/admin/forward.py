"""Forward one admin call to the service that owns it (NATS request/reply) and render its answer."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from contracts import AdminReply, AdminRequest

from ..context import GatewayContext
from ..errors import SERVER, GatewayError, JSONResponse, ServiceUnavailable, error_response

log = logging.getLogger(__name__)

Service = Literal["catalog", "billing"]


def admin_subject(ctx: GatewayContext, service: Service) -> str:
    return ctx.subjects.catalog_admin if service == "catalog" else ctx.subjects.billing_admin


async def request_reply(
    ctx: GatewayContext, service: Service, subject: str, message: BaseModel, reply_type: type[Any]
) -> Any:
    """Send ``message`` on ``subject`` and parse the reply; 503 when ``service`` doesn't answer in time."""
    assert ctx.rpc is not None
    try:
        data = await ctx.rpc(subject, message.model_dump_json().encode(), ctx.settings.rpc_timeout_s)
    except ServiceUnavailable as exc:
        # NoResponders, timeout, closed connection: the owning service is down or overloaded.
        raise GatewayError.unavailable(f"The {service} service is unavailable; try again shortly.") from exc
    try:
        return reply_type.model_validate_json(data)
    except ValidationError as exc:
        log.error("malformed reply from the %s service on %s", service, subject)
        raise GatewayError.of(500, f"The {service} service sent a malformed reply.", SERVER, "bad_reply") from exc


async def forward(
    ctx: GatewayContext,
    service: Service,
    op: str,
    *,
    params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> AdminReply:
    """The :class:`AdminReply` of ``op`` from ``service``."""
    request = AdminRequest(op=op, params=params or {}, query=query or {}, body=body)
    reply: AdminReply = await request_reply(ctx, service, admin_subject(ctx, service), request, AdminReply)
    return reply


def render(reply: AdminReply, success: int = 200) -> Response:
    """The HTTP answer of an :class:`AdminReply`: its error envelope, an empty 204, or status + body.

    A plain 200 from the service takes the route's own success status (201 for creates; 204 for
    deletes when there is no body — a delete that answers a deletion object keeps 200, as OpenAI's
    own deletes do). Any other status the service chose is kept.
    """
    if reply.error is not None:
        return error_response(reply.error)
    status = reply.status
    if status == 200 and not (success == 204 and reply.body is not None):
        status = success
    if status == 204:
        return Response(status_code=204)
    return JSONResponse(reply.body, status_code=status)


async def relay(
    ctx: GatewayContext,
    service: Service,
    op: str,
    *,
    params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    success: int = 200,
) -> Response:
    """:func:`forward` then :func:`render`."""
    return render(await forward(ctx, service, op, params=params, query=query, body=body), success)
