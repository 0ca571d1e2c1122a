"""``GET /v1/balance``: the calling API key's own balance (API-key auth, not the admin token)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from contracts import BalanceReply, BalanceRequest
from contracts.admin import Balance

from ..deps import CtxDep, PrincipalDep
from ..errors import GatewayError, JSONResponse
from .forward import request_reply

router = APIRouter(tags=["balance"])


@router.get("/v1/balance", response_model=Balance, summary="The caller's balance in credits (decimal strings)")
async def get_own_balance(ctx: CtxDep, principal: PrincipalDep) -> Response:
    reply: BalanceReply = await request_reply(
        ctx, "billing", ctx.subjects.billing_balance, BalanceRequest(user_id=principal.user_id), BalanceReply
    )
    if reply.error is not None:
        raise GatewayError(reply.error)
    balance = Balance(
        user_id=principal.user_id,
        balance=reply.balance,
        reserved=reply.reserved,
        available=reply.balance - reply.reserved,
        enabled=reply.enabled,
    )
    # mode="json" renders every Decimal as a string: money never becomes a JSON float.
    return JSONResponse(balance.model_dump(mode="json"))
