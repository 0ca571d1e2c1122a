"""Load the gateway cannot serve soon is refused at once, not queued blindly.

Two bounds, each a fast ``503`` in the OpenAI envelope with ``Retry-After`` (SDKs retry it after the
pause), counted in ``gateway_requests_shed``:

- **requests in flight** (``GATEWAY_MAX_IN_FLIGHT``, open streams included), checked by
  :class:`LoadShedMiddleware` before any work is done for the request: past it, the process would
  only grow its memory and everyone's latency;
- **runs waiting for a runner** (``GATEWAY_MAX_RUNS_STARTING``), checked by the orchestration
  (:mod:`gateway.orchestration`) before any credit is held: past it, the runners are saturated and a
  new run would wait out the queue timeout.

Health, readiness and metrics are never shed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .metrics import Metrics

#: Seconds a shed client is told to wait before it tries again.
RETRY_AFTER_S = 1


def overloaded_body(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": "overloaded"}})


class LoadShedMiddleware:
    """At most ``max_in_flight`` API requests (paths under ``/v1/``) at once; the rest a 503 at once."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_in_flight: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.shed.labels("in_flight").inc()
            body = overloaded_body(
                f"The gateway is at its limit of {self.max_in_flight} requests at once; retry shortly."
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(RETRY_AFTER_S).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
