"""servicekit's health port and NATS check against real sockets and a real (and a stalled) nats-server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn

from devstack.embedded import EmbeddedNats
from devstack.procs import free_port
from servicekit.health import Health, HealthServer, nats_answers, serving_health
from servicekit.runtime import serving_uvicorn

pytestmark = pytest.mark.integration


async def test_the_health_server_serves_its_port_and_gives_it_back(nats_client: Any) -> None:
    health = Health({"nats": lambda: nats_answers(nats_client)}, metrics=lambda: b"demo_total 1.0\n")
    async with HealthServer(health, "127.0.0.1", 0) as server:
        port = server.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).json()["phase"] == "starting"
            health.phase = "serving"
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "checks": {"nats": True}, "optional": {}, "phase": "serving"}
            assert (await http.get("/metrics")).text == "demo_total 1.0\n"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # released


async def test_port_zero_in_settings_means_no_health_server() -> None:
    async with serving_health(Health({}, metrics=lambda: b""), "127.0.0.1", 0) as server:
        assert server is None


async def test_serving_uvicorn_enters_once_it_listens_and_drains_on_exit() -> None:
    arrived = asyncio.Event()
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                events.append("startup")
                await send({"type": "lifespan.startup.complete"})
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        arrived.set()
        await asyncio.sleep(0.2)  # a slow answer, still in flight when the server is told to stop
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async with serving_uvicorn(config):
            assert events == ["startup"]
            pending = asyncio.create_task(http.get("/"))
            await asyncio.wait_for(arrived.wait(), 5)
        # Leaving the block was uvicorn's graceful shutdown: the request in flight was answered first.
        assert (await pending).text == "done"
    assert events == ["startup", "shutdown"]


async def _stopped(pid: int) -> None:
    """Until the kernel has stopped ``pid`` (a signal is delivered when the process is next scheduled)."""
    async with asyncio.timeout(5):
        while "T (stopped)" not in Path(f"/proc/{pid}/status").read_text():
            await asyncio.sleep(0.01)  # polling the kernel's state: there is no event to wait on


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of this test's own, to stall."""
    server = EmbeddedNats(tmp_path / "store", tmp_path / "nats.log")
    server.start()
    try:
        yield server
    finally:
        pid = server.process.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        server.stop()


async def test_a_stalled_nats_is_not_ready_at_once_and_the_client_survives_it(own_nats: EmbeddedNats) -> None:
    nc = await nats.connect(own_nats.url)
    try:
        got = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            got.set()

        await nc.subscribe("after.stall", cb=on_msg)
        assert await nats_answers(nc)
        pid = own_nats.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await _stopped(pid)
            async with asyncio.timeout(2):  # bounded: the probe never hangs with the server
                assert not await nats_answers(nc, timeout_s=0.3)
        finally:
            os.kill(pid, signal.SIGCONT)
        # The late answer to the abandoned probe does not break the client (a timed-out flush would).
        assert await nats_answers(nc)
        await nc.publish("after.stall", b"")
        await asyncio.wait_for(got.wait(), 5)
    finally:
        await nc.close()
    assert not await nats_answers(nc)


async def test_a_client_listening_on_everything_does_not_make_nats_look_down(own_nats: EmbeddedNats) -> None:
    """An operator's ``nats sub '>'`` takes every message, the probe's own included: the probe's
    answer must come from the server itself."""
    nc, listener = await nats.connect(own_nats.url), await nats.connect(own_nats.url)
    try:
        await listener.subscribe(">")
        await listener.subscribe("_INBOX.>")
        await listener.flush()
        async with asyncio.timeout(2):
            assert await nats_answers(nc, timeout_s=1.0)
    finally:
        await nc.close()
        await listener.close()
