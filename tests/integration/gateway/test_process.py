"""``python -m gateway`` as a process: it serves, and SIGTERM drains it to a clean exit — not ready at
once, still serving for its accept grace, then closed to new connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator

import httpx
import nats
import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def gateway_process(
    nats_url: str, namespace: str, port: int, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m gateway`` on ``port``, once uvicorn says it listens (its start-up line, not a fixed
    time); killed afterwards should it still run."""
    environ = {
        **os.environ,
        "NATS_URL": nats_url,
        "SWITCHBOARD_NAMESPACE": namespace,
        "GATEWAY_PORT": str(port),
        "LOG_LEVEL": "INFO",
        **env,
    }
    environ.pop("REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=environ, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while b"Uvicorn running" not in await proc.stderr.readline():
                pass
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def exit_code(proc: asyncio.subprocess.Process) -> int:
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        await proc.stderr.read()
        return await proc.wait()


async def test_python_m_gateway_serves_and_exits_zero_on_sigterm(
    nats_url: str, namespace: str, nats_client: nats.NATS
) -> None:
    port = free_port()
    async with gateway_process(nats_url, namespace, port) as proc:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "checks": {"nats": True}, "optional": {}, "phase": "serving"}
            unauthorized = await http.get("/v1/models")
        assert unauthorized.status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert await exit_code(proc) == 0


async def test_sigterm_makes_it_not_ready_at_once_while_it_still_serves_for_its_accept_grace(
    nats_url: str, namespace: str, nats_client: nats.NATS
) -> None:
    port, grace_s = free_port(), 3.0
    async with gateway_process(nats_url, namespace, port, GATEWAY_ACCEPT_GRACE_S=str(grace_s)) as proc:
        # A new connection for every request, as a load balancer's probe makes.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=fresh, timeout=5) as http:
            assert (await http.get("/readyz")).status_code == 200
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            async with asyncio.timeout(grace_s):
                while (ready := await http.get("/readyz")).status_code == 200:
                    await asyncio.sleep(0.02)
            assert ready.status_code == 503
            assert ready.json()["phase"] == "draining" and ready.json()["status"] == "not ready"
            # Still serving what is routed here meanwhile (liveness, and the API itself).
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/v1/models")).status_code == 401
            async with asyncio.timeout(grace_s + 10):
                while True:
                    try:
                        await http.get("/healthz")
                    except httpx.TransportError:
                        break
                    await asyncio.sleep(0.05)
            assert time.monotonic() - signalled >= grace_s - 0.1
        assert await exit_code(proc) == 0
