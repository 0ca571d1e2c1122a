"""The admin token check: a separate secret, compared in constant time; API keys never work here."""

from __future__ import annotations

import hmac

from fastapi import Request

from ..deps import CtxDep
from ..errors import AUTHENTICATION, GatewayError


def _unauthorized(message: str) -> GatewayError:
    return GatewayError.of(401, message, AUTHENTICATION, "invalid_admin_token")


def check_admin_token(configured: str | None, authorization: str | None) -> None:
    """Raise a 401 :class:`GatewayError` unless ``authorization`` is ``Bearer <configured>``."""
    if not configured:
        # No token configured: the admin API is closed rather than open to anyone.
        raise _unauthorized("The admin API is disabled on this gateway (no admin token is configured).")
    if not authorization:
        raise _unauthorized("Missing admin token: provide it in the Authorization header as 'Bearer ADMIN_TOKEN'.")
    scheme, _, presented = authorization.strip().partition(" ")
    presented = presented.strip()
    # compare_digest on bytes: constant time in the length of the secret, whatever is presented.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), configured.encode()):
        raise _unauthorized("Incorrect admin token provided.")


async def require_admin(request: Request, ctx: CtxDep) -> None:
    """FastAPI dependency guarding every ``/admin/v1`` route."""
    check_admin_token(ctx.settings.admin_token, request.headers.get("authorization"))
