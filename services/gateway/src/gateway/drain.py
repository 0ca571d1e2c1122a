"""How a gateway process stops without cutting a stream.

On SIGTERM (:func:`servicekit.runtime.serve_until_stopped` leaves the block of :func:`serving`):

1. **Not ready, at once.** ``/readyz`` answers 503 with ``"phase": "draining"`` from this moment, so
   whatever routes by readiness (a load balancer's health check, Kubernetes' endpoints) stops sending
   new requests here.
2. **Still accepting, for ``GATEWAY_ACCEPT_GRACE_S``.** A request routed here just before the balancer
   saw the 503 is served, not refused: closing the listener at once would turn it into a connection
   error. In Kubernetes the pod's ``preStop`` wait does this job (a terminating pod leaves the
   endpoints before the container hears SIGTERM), so the chart leaves it at 0.
3. **Open streams finish.** uvicorn's graceful shutdown: the listener closes, idle keep-alive
   connections close, every response under way runs to its end for up to ``GATEWAY_DRAIN_TIMEOUT_S``
   (what is still open then is cut: a stream sent with an ``Idempotency-Key`` is picked up on another
   gateway with ``Last-Event-ID``), then the lifespan closes NATS and the rest, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from servicekit.runtime import serving_uvicorn

log = logging.getLogger(__name__)


def is_draining(app: Starlette) -> bool:
    """Whether the process was told to stop (``/readyz`` is 503 from then on)."""
    return bool(getattr(app.state, "draining", False))


def graceful_timeout(drain_timeout_s: float) -> int:
    """uvicorn's ``timeout_graceful_shutdown`` for a drain of ``drain_timeout_s`` (it takes whole seconds;
    rounded up, so a drain is never shorter than asked, and 0 stays 0 — uvicorn's ``None`` would be no
    limit at all)."""
    return math.ceil(drain_timeout_s)


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config, app: Starlette, accept_grace_s: float) -> AsyncIterator[None]:
    """Serve ``config`` for the block; leaving it drains as the module says."""
    async with serving_uvicorn(config) as server:
        yield
        app.state.draining = True
        open_connections = len(server.server_state.connections)
        log.info(
            "gateway draining: /readyz answers 503; new requests accepted for %.1f s more, then %d open "
            "connection(s) may finish within %d s",
            accept_grace_s,
            open_connections,
            config.timeout_graceful_shutdown or 0,
        )
        if accept_grace_s > 0:
            await asyncio.sleep(accept_grace_s)
