"""The short way in for the two routes that carry the traffic: ``POST /v1/chat/completions`` and
``POST /v1/responses``.

A request to any route passes through Starlette's and FastAPI's layers before it reaches its endpoint:
the application, the server-error, exception-telemetry, exception and exit-stack middleware, the
router and the route's two wrappers. Each is a coroutine frame that lives as long as the request, so
a stream open for minutes holds them all, and each of its chunks goes out through three ``send``
wrappers. For the two hot routes none of them does anything that this module does not do here:

- :class:`HotRoutes`, the innermost middleware, calls the endpoint itself and answers an error raised
  on purpose (``errors.HANDLERS``) as the exception middleware would; anything else propagates to the
  observability middleware, which logs it and answers 500 like it always did;
- :class:`GatewayApp` sends such a request straight to the observability middleware (request id,
  span, metrics, last-resort 500), past the application and its outer middleware. Which paths are
  hot it reads off the :class:`HotRoutes` layer in its own stack: they are named once, where the
  middleware is added.

Every other route, and any other method on these paths (405), goes the usual way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from .errors import handler_for
from .middleware import ObservabilityMiddleware

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """``POST`` to a path of ``routes`` runs its endpoint here; everything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            started = True  # the first message is always the response's start
            await send(message)

        try:
            response = await endpoint(request)
            await response(scope, receive, sender)
        except Exception as exc:
            handler = handler_for(exc)
            if handler is None:
                raise
            if started:
                raise RuntimeError("An error with an answer of its own came after the response started.") from exc
            await (await handler(request, exc))(scope, receive, sender)


class GatewayApp(FastAPI):
    """FastAPI, except that a request to a path of its :class:`HotRoutes` layer enters at the
    observability middleware. Without both layers every request goes the usual way."""

    _entry: ASGIApp | None = None
    _hot_paths: Collection[str] = ()

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        layers = list(_layers(stack))
        entry = next((layer for layer in layers if isinstance(layer, ObservabilityMiddleware)), None)
        hot = next((layer for layer in layers if isinstance(layer, HotRoutes)), None)
        if entry is not None and hot is not None:
            self._entry, self._hot_paths = entry, hot.routes.keys()
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.middleware_stack is None:  # as Starlette does on the first call, so the first request is hot too
            self.middleware_stack = self.build_middleware_stack()
        entry = self._entry
        if entry is not None and scope["type"] == "http" and scope["path"] in self._hot_paths:
            if self.root_path:
                scope["root_path"] = self.root_path
            scope["app"] = self
            await entry(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _layers(app: object) -> Iterator[object]:
    """``app`` and the application each middleware wraps, outermost first (to the router)."""
    while app is not None:
        yield app
        app = getattr(app, "app", None)
