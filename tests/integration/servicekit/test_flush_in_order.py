"""``flush_in_order``: the server reads what a connection sent before the flush's PING.

A recording NATS server on loopback shows the order of commands on the wire; nats-py's own
``flush()`` puts its PING ahead of a SUB still queued, which is why the helper exists.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest

from servicekit.natsio import flush_in_order

pytestmark = pytest.mark.integration

INFO = {"server_id": "recorder", "version": "2.9.10", "proto": 1, "max_payload": 1048576, "headers": True}


class Recorder:
    """A NATS server that answers PING with PONG and records each command's verb, in order."""

    def __init__(self) -> None:
        self.verbs: list[str] = []
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO " + json.dumps(INFO).encode() + b"\r\n")
        await writer.drain()
        while line := await reader.readline():
            parts = line.split()
            verb = parts[0].decode().upper() if parts else ""
            self.verbs.append(verb)
            if verb in ("PUB", "HPUB"):
                await reader.readexactly(int(parts[-1]) + 2)  # the payload and its CRLF
            elif verb == "PING":
                writer.write(b"PONG\r\n")
                await writer.drain()
        writer.close()

    def after_connect(self) -> list[str]:
        """The commands since the connection's own CONNECT and PING."""
        return self.verbs[2:]


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    rec.server = await asyncio.start_server(rec.serve, "127.0.0.1", 0)
    port = rec.server.sockets[0].getsockname()[1]
    async with rec.server:
        yield rec, f"nats://127.0.0.1:{port}"


async def test_a_subscription_and_a_publish_reach_the_server_before_the_ping(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        await nc.subscribe("events.a")
        await nc.publish("events.b", b"x")
        await flush_in_order(nc)
        assert rec.after_connect() == ["SUB", "PUB", "PING"]
    finally:
        await nc.close()


async def test_nats_py_flush_alone_sends_its_ping_ahead_of_a_queued_subscription(
    recorder: tuple[Recorder, str],
) -> None:
    """Why the helper exists. Should nats-py queue its PING behind pending commands one day, this
    fails, and ``flush_in_order`` can become a plain ``flush``."""
    rec, url = recorder
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        await nc.subscribe("events.a")
        await nc.flush()
        await asyncio.sleep(0.05)  # the flusher task writes the SUB after the PING
        assert rec.after_connect() == ["PING", "SUB"]
    finally:
        await nc.close()
