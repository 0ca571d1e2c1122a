"""``/healthz``, ``/readyz`` and ``/metrics``: a minimal ASGI app served by uvicorn on its own port.

Three GET routes need no framework; uvicorn gives a real HTTP server without us parsing requests.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from servicekit.health import QuietServer

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class HealthApp:
    """The ASGI app: liveness (the process answers), readiness (``ready()``), Prometheus metrics."""

    def __init__(self, ready: Callable[[], bool], metrics: Callable[[], bytes]) -> None:
        self._ready = ready
        self._metrics = metrics

    def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "application/json", b'{"error":"method not allowed"}'
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            ok = self._ready()
            body = json.dumps({"status": "ready" if ok else "not ready", "checks": {"nats": ok}}).encode()
            return (200 if ok else 503), "application/json", body
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics()
        return 404, "application/json", b'{"error":"not found"}'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; anything else is not ours
            return
        status, ctype, body = self.answer(scope["method"], scope["path"])
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class HealthServer:
    """Serves :class:`HealthApp` on ``host:port`` (port 0: any free port; see :attr:`port`)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool], metrics: Callable[[], bytes]) -> None:
        self._host = host
        self._port = port
        self._app = HealthApp(ready, metrics)
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        # Bind here, so the port is known and connections queue in the backlog before uvicorn accepts.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        config = uvicorn.Config(
            self._app, lifespan="off", log_config=None, access_log=False, log_level="warning", http="h11"
        )
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="runner-health")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()
