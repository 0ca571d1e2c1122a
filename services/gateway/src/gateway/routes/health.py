"""Health: ``/healthz`` (the process is alive), ``/readyz`` (it can serve), ``/metrics``.

The gateway answers these on its API port with FastAPI routes; the body of ``/readyz`` is the one
every service answers (:mod:`servicekit.health`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from servicekit.health import Check, Health, nats_answers

from ..deps import CtxDep
from ..drain import is_draining
from ..errors import JSONResponse

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request, ctx: CtxDep) -> JSONResponse:
    """Ready while NATS answers a round trip; Redis (when configured) is optional: without it rate
    limits are counted in this process (``degraded``, still 200). From SIGTERM on, 503 ``draining``
    (:mod:`gateway.drain`): the process still serves what it has, but should get nothing new.

    The catalog and billing are not checked here: each has a readiness probe of its own, and a gateway
    taken out of service with them would turn their outage into connection errors at the load
    balancer instead of the gateway's own 503 answers (or, for a known key, its stale-while-unreachable
    cache).
    """
    optional: dict[str, Check] = {}
    if ctx.redis is not None:
        redis = ctx.redis

        async def redis_answers() -> bool:
            return bool(await redis.ping())

        optional["redis"] = redis_answers
    health = Health({"nats": lambda: nats_answers(ctx.nc)}, optional=optional, metrics=ctx.metrics.render)
    # The routes answer only between the lifespan's start-up and shutdown: serving, unless told to stop.
    health.phase = "draining" if is_draining(request.app) else "serving"
    readiness = await health.readiness()
    body: dict[str, Any] = readiness.body()
    return JSONResponse(body, status_code=readiness.http_status)


@router.get("/metrics", include_in_schema=False)
async def metrics(ctx: CtxDep) -> Response:
    await ctx.metrics.sample(ctx.js, ctx.subjects)
    return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)
