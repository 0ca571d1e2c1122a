"""``Annotated`` dependency aliases: the request's context and its authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from contracts import Principal

from .context import GatewayContext
from .errors import RATE_LIMIT, GatewayError


async def get_ctx(request: Request) -> GatewayContext:
    """The :class:`GatewayContext` the lifespan created. ``async`` on purpose: FastAPI runs a plain
    ``def`` dependency in a worker thread, a thread hop on every request."""
    ctx: GatewayContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[GatewayContext, Depends(get_ctx)]


async def check_rate_limit(ctx: GatewayContext, principal: Principal) -> None:
    """Apply the key's rate limit: 429 with ``Retry-After`` when it is spent."""
    if ctx.rate_limiter is None:
        return
    limit = principal.rate_limit_per_minute or ctx.settings.default_rate_limit_per_minute
    retry_after = await ctx.rate_limiter.check(principal.key_id, limit)
    if retry_after is not None:
        seconds = max(1, int(-(-retry_after // 1)))
        raise GatewayError.of(
            429,
            f"Rate limit reached: {limit} requests per minute. Retry after {seconds} s.",
            RATE_LIMIT,
            "rate_limit_exceeded",
            headers={"Retry-After": str(seconds)},
        )


async def get_principal(request: Request, ctx: CtxDep) -> Principal:
    """Authenticate the Bearer API key (cached), require REMOTE_AGENTS USE, apply the key's rate limit."""
    principal = await ctx.auth.authenticate(request.headers.get("authorization"))
    await check_rate_limit(ctx, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
