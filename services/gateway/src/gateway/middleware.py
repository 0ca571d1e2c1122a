"""One server span and one request count per HTTP request, as a plain ASGI middleware (no per-chunk work
beyond reading the status off the response start)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .metrics import Metrics


class ObservabilityMiddleware:
    """Continues the caller's W3C trace (``traceparent``), names the span after the route, counts requests."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = trace.get_tracer("gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _TRACE_HEADERS}
        parent = propagate.extract(carrier) if carrier else None
        method = scope["method"]
        status = 500
        started = False

        async def send_with_status(message: Message) -> None:
            nonlocal status, started
            if not started and message["type"] == "http.response.start":
                started = True
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            f"{method} {scope['path']}", context=parent, kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                route = _route(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self.metrics.requests.labels(method, route, str(status)).inc()


_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label, so a scan of random URLs can't grow the metric without bound.
    return path if isinstance(path, str) else "unmatched"
