"""The gateway's admin API (and optionally its model routes) as an ASGI app over a given NATS client,
with the context the admin routes read: what the admin tests drive without the rest of the gateway."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, FastAPI

from contracts import Subjects
from gateway.admin import router as admin_router
from gateway.auth import Authenticator
from gateway.errors import install_exception_handlers
from gateway.rpc import nats_requester


def admin_app(
    nc: Any,
    subjects: Subjects,
    admin_token: str,
    *,
    rpc_timeout_s: float = 2.0,
    auth: Any = None,
    routers: Sequence[APIRouter] = (admin_router,),
) -> FastAPI:
    """The routers on a bare FastAPI app, its context built over ``nc`` (a real or a fake client)."""
    app = FastAPI()
    install_exception_handlers(app)
    for router in routers:
        app.include_router(router)
    requester = nats_requester(nc)
    app.state.ctx = SimpleNamespace(
        settings=SimpleNamespace(
            admin_token=admin_token,
            rpc_timeout_s=rpc_timeout_s,
            default_rate_limit_per_minute=600,
            admin_max_body_bytes=1024 * 1024,
            body_timeout_s=30.0,
        ),
        nc=nc,
        rpc=requester,
        subjects=subjects,
        auth=auth if auth is not None else Authenticator(requester, subjects),
        rate_limiter=None,
        preadmitted=None,
    )
    return app
