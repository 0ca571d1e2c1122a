"""The OpenAI-compatible adapter against a bare HTTP stub: streams that end badly without an HTTP error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from contracts import ChatMessage
from runner.connections import Connection
from runner.errors import StreamBroken
from runner.providers import CallSpec, FinishChunk, ResponseInfo, TextChunk, UsageChunk
from runner.providers.openai_provider import OpenAIProvider

pytestmark = pytest.mark.integration


def _sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def _chunk(**delta: object) -> dict[str, object]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


@pytest.fixture
async def stub() -> AsyncIterator[Callable[[bytes], str]]:
    """A one-route HTTP server answering every POST with the body set by the test (then closing)."""
    body: list[bytes] = [b""]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            + f"content-length: {len(body[0])}\r\nconnection: close\r\n\r\n".encode()
            + body[0]
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def serve(data: bytes) -> str:
        body[0] = data
        return f"http://127.0.0.1:{port}/v1"

    yield serve
    server.close()
    await server.wait_closed()


async def _collect(url: str) -> tuple[list[object], Exception | None]:
    provider = OpenAIProvider(Connection("x", "openai", url, "sk-stub-key-0000"), 10.0)
    got: list[object] = []
    try:
        async for c in provider.stream(CallSpec(model="m", messages=[ChatMessage(role="user", content="hi")])):
            got.append(c)
    except StreamBroken as exc:
        return got, exc
    finally:
        await provider.close()
    return got, None


async def test_a_stream_cut_short_without_an_error_is_broken(stub: Callable[[bytes], str]) -> None:
    got, error = await _collect(stub(_sse(_chunk(content="Hel"), _chunk(content="lo"))))
    assert got == [ResponseInfo(id="c", model=None), TextChunk("Hel"), TextChunk("lo")]
    assert isinstance(error, StreamBroken)


async def test_a_complete_stream_passes(stub: Callable[[bytes], str]) -> None:
    done = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    got, error = await _collect(stub(_sse(_chunk(content="Hi"), done, usage, b"[DONE]")))
    assert error is None
    assert got[:3] == [ResponseInfo(id="c", model=None), TextChunk("Hi"), FinishChunk("stop")]
    assert isinstance(got[3], UsageChunk) and got[3].usage.input_tokens == 3


async def test_the_response_id_and_model_come_once_from_the_first_chunk(stub: Callable[[bytes], str]) -> None:
    first = {**_chunk(content="Hi"), "id": "chatcmpl-42", "model": "gpt-x-2025"}
    done = {"id": "chatcmpl-42", "model": "gpt-x-2025", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    got, error = await _collect(stub(_sse(first, done, b"[DONE]")))
    assert error is None
    assert got == [ResponseInfo(id="chatcmpl-42", model="gpt-x-2025"), TextChunk("Hi"), FinishChunk("stop")]


async def test_an_error_event_or_garbage_is_broken(stub: Callable[[bytes], str]) -> None:
    _, error = await _collect(stub(_sse(_chunk(content="a"), {"error": {"message": "overloaded"}})))
    assert isinstance(error, StreamBroken) and "overloaded" in str(error)
    _, error = await _collect(stub(_sse(_chunk(content="a"), [1, 2])))
    assert isinstance(error, StreamBroken)
