"""A provider connection that fails before any answer is tried once more; an answer is never sent twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from contracts import ChatMessage
from runner.connections import Connection
from runner.errors import ProviderError
from runner.providers import CallSpec, TextChunk
from runner.providers.openai_provider import CONNECTION_ATTEMPTS, OpenAIProvider

pytestmark = pytest.mark.integration

_DONE = (
    b"".join(
        b"data: " + json.dumps(e).encode() + b"\n\n"
        for e in (
            {"id": "c", "choices": [{"index": 0, "delta": {"content": "hello"}}]},
            {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        )
    )
    + b"data: [DONE]\n\n"
)


@dataclass
class Stub:
    """Answers the ``n``-th connection as ``plan[n]`` says: ``drop`` (close after the request's head,
    no answer), ``reset`` (close at once), a status code, or ``ok`` (a complete stream)."""

    plan: list[str]
    url: str = ""
    requests: int = 0
    seen: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        what = self.plan[min(self.requests, len(self.plan) - 1)]
        self.requests += 1
        self.seen.append(what)
        if what == "reset":
            writer.transport.abort()
            return
        await reader.readuntil(b"\r\n\r\n")
        if what == "drop":
            writer.transport.abort()
            return
        status, body = (200, _DONE) if what == "ok" else (int(what), b'{"error": {"message": "busy"}}')
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    s = Stub(plan=["ok"])
    server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    s.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    yield s
    server.close()
    await server.wait_closed()


async def _call(url: str) -> list[object]:
    provider = OpenAIProvider(Connection("x", "openai", url, "sk-stub-key-0000"), 10.0)
    try:
        spec = CallSpec(model="m", messages=[ChatMessage(role="user", content="hi")])
        return [c async for c in provider.stream(spec)]
    finally:
        await provider.close()


@pytest.mark.parametrize("first", ["drop", "reset"])
async def test_a_connection_lost_before_any_answer_is_tried_once_more(stub: Stub, first: str) -> None:
    stub.plan = [first, "ok"]
    got = await _call(stub.url)
    assert TextChunk("hello") in got
    assert stub.requests == 2


async def test_a_connection_that_keeps_failing_is_a_provider_error_after_the_last_attempt(stub: Stub) -> None:
    stub.plan = ["drop"]
    with pytest.raises(ProviderError, match="The provider call failed"):
        await _call(stub.url)
    assert stub.requests == CONNECTION_ATTEMPTS == 2


@pytest.mark.parametrize("status", ["500", "503", "429"])
async def test_an_answer_even_an_error_is_never_asked_for_twice(stub: Stub, status: str) -> None:
    stub.plan = [status, "ok"]
    with pytest.raises(ProviderError) as caught:
        await _call(stub.url)
    assert caught.value.status == int(status)
    assert stub.requests == 1


async def test_a_refused_connection_is_tried_once_more_then_fails() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # the port now refuses connections
    with pytest.raises(ProviderError, match="The provider call failed"):
        await _call(f"http://127.0.0.1:{port}/v1")
