"""Billing answers its health port while NATS is away at start-up: alive, not ready, and saying why."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx
import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings
from devstack.procs import free_port

pytestmark = pytest.mark.integration


async def test_the_health_port_answers_while_nats_is_unreachable(
    billing_settings: Callable[..., BillingSettings],
) -> None:
    """A start-up probe that found the port closed would have the orchestrator restart a process that
    is only waiting for NATS (the chart's probe gives up after two minutes)."""
    port = free_port()
    nowhere = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    app = BillingApp(billing_settings(nats_url=nowhere, health_port=port, health_host="127.0.0.1"))

    async def run() -> None:
        async with app.running():
            raise AssertionError("billing started without NATS")

    starting = asyncio.create_task(run())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    live = await http.get("/healthz")
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the health port never answered")
            ready = await http.get("/readyz")
        assert live.status_code == 200
        assert ready.status_code == 503
        body = ready.json()
        assert body["phase"] == "starting" and body["checks"]["nats"] is False
        assert not starting.done()  # still waiting for NATS, as it should
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    with contextlib.suppress(OSError):  # the port is closed again
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        raise AssertionError("the health port is still open after the start was given up")
