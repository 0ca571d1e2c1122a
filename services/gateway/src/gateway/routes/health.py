"""Health: ``/healthz`` (the process is alive), ``/readyz`` (its dependencies answer), ``/metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.responses import Response

from contracts import ErrorInfo, ListModelsReply, ListModelsRequest

from ..deps import CtxDep
from ..errors import JSONResponse
from ..rpc import call

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(ctx: CtxDep) -> JSONResponse:
    """Ready when NATS is connected, Redis (if configured) pings, and the catalog answers."""
    checks: dict[str, str] = {"nats": "ok" if ctx.nc.is_connected else "down"}
    if ctx.redis is not None:
        try:
            async with asyncio.timeout(ctx.settings.rpc_timeout_s):
                await ctx.redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "down"
    if checks["nats"] == "ok":
        assert ctx.rpc is not None
        try:
            # Any well-formed answer (even an error about an unknown user) proves the catalog is serving.
            await call(
                ctx.rpc,
                ctx.subjects.catalog_models_list,
                ListModelsRequest(user_id="readiness-probe"),
                ListModelsReply,
                ctx.settings.rpc_timeout_s,
                "catalog",
            )
            checks["catalog"] = "ok"
        except Exception:
            checks["catalog"] = "down"
    else:
        checks["catalog"] = "unknown"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    info = ErrorInfo(status=503, type="server_error", message=f"Not ready: {down}.", code="service_unavailable")
    return JSONResponse({**info.envelope(), "checks": checks}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics(ctx: CtxDep) -> Response:
    return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)
