"""``/healthz``, ``/readyz`` (NATS and the database) and ``/metrics`` on the billing health port.

Parked usage (``usage_dead_letters``, see :mod:`billing.deadletters`) does not make billing unready:
every other user's usage is still billed, and taking the process out of service (or restarting it)
would bill nothing more and park nothing less. ``/readyz`` stays 200 and says ``"status": "degraded"``
with the number parked in ``dead_letters``; the ``billing_usage_dead_letters_total`` metric is what
to alert on. A parked message is money not billed until an operator deals with it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from servicekit.health import QuietServer

if TYPE_CHECKING:
    from .app import BillingApp

APPLIED = Gauge("billing_ledger_entries_written", "Usage ledger entries written by this process")
BATCHES = Gauge("billing_usage_batches", "Usage batches committed by this process")


class HealthServer:
    def __init__(self, app: BillingApp, host: str, port: int) -> None:
        self.billing = app
        config = uvicorn.Config(self, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        self.server = QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task:
            await self._task

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            await _send(send, 200, b'{"status":"ok"}', b"application/json")
        elif path == "/readyz":
            db = await self.billing.check_database()
            ok = self.billing.ready and db
            parked = await self.billing.count_dead_letters() if db else None
            status = ("degraded" if parked else "ready") if ok else "not ready"
            body = orjson.dumps(
                {
                    "status": status,
                    "checks": {"nats": self.billing.ready, "database": db},
                    "dead_letters": parked,
                }
            )
            await _send(send, 200 if ok else 503, body, b"application/json")
        elif path == "/metrics":
            if self.billing.consumer:
                APPLIED.set(self.billing.consumer.applied)
                BATCHES.set(self.billing.consumer.batches)
            await _send(send, 200, generate_latest(), CONTENT_TYPE_LATEST.encode())
        else:
            await _send(
                send,
                404,
                b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}',
                b"application/json",
            )


async def _send(send: Any, status: int, body: bytes, ctype: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})
