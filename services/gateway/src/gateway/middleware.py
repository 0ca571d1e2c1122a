"""One server span, one request count and one request id per HTTP request, as a plain ASGI middleware
(no per-chunk work beyond reading the status off the response start and adding ``x-request-id`` to it).

It is the outermost middleware, so it also answers an exception nothing else handled: logged with its
traceback while the request id is still set, then a 500 in the OpenAI envelope that carries
``x-request-id`` like every other answer (Starlette's own last-resort handler sits outside every
middleware, where the id is gone).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.requests import ClientDisconnect

from servicekit import requestid

from .errors import SERVER, openai_error

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .metrics import Metrics

log = logging.getLogger(__name__)


class ObservabilityMiddleware:
    """Continues the caller's W3C trace (``traceparent``), names the span after the route, counts requests,
    and gives each request an id: the client's ``X-Request-ID`` when it is acceptable (see
    :func:`servicekit.requestid.accept`), else a new one. The id is in the response's ``x-request-id``
    header, in every log record while the request is served, and on the run it starts."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = trace.get_tracer("gateway")
        requestid.install()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        sent_id: bytes | None = None
        for k, v in scope["headers"]:
            if k in _TRACE_HEADERS:
                carrier[k.decode("latin-1")] = v.decode("latin-1")
            elif k == _REQUEST_ID:
                sent_id = v
        rid = requestid.accept(sent_id.decode("latin-1") if sent_id is not None else None)
        token = requestid.request_id.set(rid)
        rid_header = (_REQUEST_ID, rid.encode())
        parent = propagate.extract(carrier) if carrier else None
        method = scope["method"]
        status = 500
        started = False

        async def send_with_status(message: Message) -> None:
            nonlocal status, started
            if not started and message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        if scope["path"] in _PROBES:
            spanning: Any = _NO_SPAN  # the orchestrator's probes and scrapes: counted, not traced
        else:
            name = f"{method} {scope['path']}"
            spanning = self.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER)
        with spanning as span:
            try:
                await self.app(scope, receive, send_with_status)
            except ClientDisconnect:
                # The client left before its request was read whole: there is no one to answer, and
                # nothing went wrong here. Counted as 499 (nginx's "client closed request").
                status = CLIENT_CLOSED_REQUEST
                log.info("the client closed the connection before its request was read")
            except Exception:
                if started:
                    # Too late for an error answer: uvicorn closes the connection, the client sees it cut.
                    log.exception("unhandled error after the response started")
                    return
                log.exception("unhandled error")
                await _SERVER_ERROR(scope, receive, send_with_status)
            finally:
                route = _route(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self.metrics.requests.labels(method, route, str(status)).inc()
                requestid.request_id.reset(token)


_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")
#: Paths of probes and scrapes: every few seconds from every orchestrator and Prometheus, nothing a
#: trace would explain. Not traced (Jaeger would hold mostly these), still counted.
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)
#: The status a request gets in metrics and traces when its client left before it was read whole.
CLIENT_CLOSED_REQUEST = 499
_SERVER_ERROR = openai_error(500, "The server had an error while processing your request.", SERVER, "internal_error")
_REQUEST_ID = requestid.HEADER.encode()


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label, so a scan of random URLs can't grow the metric without bound.
    return path if isinstance(path, str) else "unmatched"
