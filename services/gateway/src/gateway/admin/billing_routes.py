"""Admin routes owned by billing: balances, credits, the ledger and pricing (``subjects.billing_admin``).

The routes of one user ask the catalog first whether the user exists (``users.get``): billing opens an
account for any id it is given, so an unknown or deleted user is answered 404 here and nothing reaches
billing (no phantom account, no start entry). Billing never reads the catalog's tables.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from starlette.responses import Response

from contracts import AdminReply
from contracts.admin import Balance, CreditsAdd, LedgerEntry, Page, Price, PriceSet
from contracts.bounds import INT64_MAX

from ..context import GatewayContext
from ..deps import CtxDep
from ..errors import GatewayError
from .bodies import body_doc, json_body
from .common import PageQuery, admin_router, op_id
from .forward import forward, relay, render

router = admin_router()

#: Body fields that are money: a decimal string or an integer, never a JSON float.
CREDITS_MONEY = ("amount",)
PRICE_MONEY = ("input", "output", "cache_write", "cache_read")

CreditsAddBody = Annotated[CreditsAdd, Depends(json_body(CreditsAdd, money=CREDITS_MONEY))]
PriceSetBody = Annotated[PriceSet, Depends(json_body(PriceSet, money=PRICE_MONEY))]
LEDGER_ID_PREFIX = "le_"


def check_ledger_cursor(after: str | None) -> None:
    """400 unless ``after`` is a ledger entry id: ``le_`` and a sequence number a BIGINT holds."""
    if after is None:
        return
    digits = after.removeprefix(LEDGER_ID_PREFIX)
    valid = after.startswith(LEDGER_ID_PREFIX) and digits.isascii() and digits.isdigit() and len(digits) <= 19
    if not valid or int(digits) > INT64_MAX:
        raise GatewayError.bad_request(
            "Invalid value for 'after': it must be the id of a ledger entry (le_<number>).", param="after"
        )


async def require_user(ctx: GatewayContext, user_id: str) -> None:
    """The catalog's error (404 for a user that does not exist or was deleted) unless ``user_id`` is a user."""
    reply = await forward(ctx, "catalog", "users.get", params={"user_id": user_id})
    if reply.error is not None:
        raise GatewayError(reply.error)


@router.get(
    "/users/{user_id}/balance",
    response_model=Balance,
    summary="Get a user's balance",
    operation_id=op_id("balance.get"),
)
async def get_balance(ctx: CtxDep, user_id: str) -> Response:
    await require_user(ctx, user_id)
    return await relay(ctx, "billing", "balance.get", params={"user_id": user_id})


@router.post(
    "/users/{user_id}/credits",
    status_code=201,
    response_model=LedgerEntry,
    summary="Add credits to a user (negative: an adjustment down)",
    operation_id=op_id("credits.add"),
    openapi_extra=body_doc(CreditsAdd, money=CREDITS_MONEY),
)
async def add_credits(ctx: CtxDep, user_id: str, body: CreditsAddBody) -> Response:
    await require_user(ctx, user_id)
    return await relay(
        ctx, "billing", "credits.add", params={"user_id": user_id}, body=body.model_dump(mode="json"), success=201
    )


@router.get(
    "/users/{user_id}/ledger",
    response_model=Page,
    summary="List a user's ledger entries",
    operation_id=op_id("ledger.list"),
)
async def list_ledger(
    ctx: CtxDep,
    user_id: str,
    page: PageQuery,
    run_id: Annotated[str | None, Query(description="only this run's entries")] = None,
) -> Response:
    check_ledger_cursor(page.get("after"))
    await require_user(ctx, user_id)
    query = {**page, "run_id": run_id} if run_id else page
    return await relay(ctx, "billing", "ledger.list", params={"user_id": user_id}, query=query)


@router.get("/pricing", response_model=Page, summary="List model prices", operation_id=op_id("pricing.list"))
async def list_pricing(ctx: CtxDep, page: PageQuery) -> Response:
    return await relay(ctx, "billing", "pricing.list", query=page)


@router.put(
    "/pricing/{model_key:path}",
    response_model=Price,
    summary="Set a model's price (USD per million tokens)",
    operation_id=op_id("pricing.put"),
    openapi_extra=body_doc(PriceSet, money=PRICE_MONEY),
)
async def put_pricing(ctx: CtxDep, model_key: str, body: PriceSetBody) -> Response:
    reply: AdminReply | None = None
    try:
        reply = await forward(
            ctx, "billing", "pricing.put", params={"model_key": model_key}, body=body.model_dump(mode="json")
        )
    finally:
        # Unless billing refused it, the price may have changed (even without an answer in time): the
        # runs this gateway admitted ahead go back now, not only when billing's PricesChanged arrives.
        if ctx.preadmitted is not None and (reply is None or reply.error is None):
            ctx.preadmitted.drop_all()
    return render(reply)
