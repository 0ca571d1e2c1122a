"""The OpenAI-compatible adapter against a bare HTTP stub: streams that end badly without an HTTP error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from contracts import ChatMessage
from runner.connections import Connection
from runner.errors import StreamBroken
from runner.providers import PAUSE, CallSpec, FinishChunk, ResponseInfo, TextChunk, UsageChunk
from runner.providers.openai_provider import OpenAIProvider

pytestmark = pytest.mark.integration


def _sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def _chunk(**delta: object) -> dict[str, object]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


@pytest.fixture
async def stub() -> AsyncIterator[Callable[..., str]]:
    """A one-route HTTP server answering every POST with the body set by the test (then closing); a
    body given in parts is written part by part, 50 ms apart."""
    body: list[bytes] = [b""]
    parts: list[list[bytes]] = [[]]

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
        )
        for i, part in enumerate(parts[0] or [body[0]]):
            if i:
                await asyncio.sleep(0.05)
            writer.write(part)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def serve(data: bytes, *more: bytes) -> str:
        body[0] = data + b"".join(more)
        parts[0] = [data, *more] if more else []
        return f"http://127.0.0.1:{port}/v1"

    yield serve
    server.close()
    await server.wait_closed()


async def _collect(url: str, pauses: bool = False) -> tuple[list[object], Exception | None]:
    """What the adapter yields (without its pauses unless asked), and the error it ended with."""
    provider = OpenAIProvider(Connection("x", "openai", url, "sk-stub-key-0000"), 10.0)
    got: list[object] = []
    try:
        async for c in provider.stream(CallSpec(model="m", messages=[ChatMessage(role="user", content="hi")])):
            if pauses or c is not PAUSE:
                got.append(c)
    except StreamBroken as exc:
        return got, exc
    finally:
        await provider.close()
    return got, None


async def test_a_stream_cut_short_without_an_error_is_broken(stub: Callable[..., str]) -> None:
    got, error = await _collect(stub(_sse(_chunk(content="Hel"), _chunk(content="lo"))))
    assert got == [ResponseInfo(id="c", model=None), TextChunk("Hel"), TextChunk("lo")]
    assert isinstance(error, StreamBroken)


async def test_a_complete_stream_passes(stub: Callable[..., str]) -> None:
    done = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    got, error = await _collect(stub(_sse(_chunk(content="Hi"), done, usage, b"[DONE]")))
    assert error is None
    assert got[:3] == [ResponseInfo(id="c", model=None), TextChunk("Hi"), FinishChunk("stop")]
    assert isinstance(got[3], UsageChunk) and got[3].usage.input_tokens == 3


async def test_the_response_id_and_model_come_once_from_the_first_chunk(stub: Callable[..., str]) -> None:
    first = {**_chunk(content="Hi"), "id": "chatcmpl-42", "model": "gpt-x-2025"}
    done = {"id": "chatcmpl-42", "model": "gpt-x-2025", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    got, error = await _collect(stub(_sse(first, done, b"[DONE]")))
    assert error is None
    assert got == [ResponseInfo(id="chatcmpl-42", model="gpt-x-2025"), TextChunk("Hi"), FinishChunk("stop")]


async def test_an_error_event_or_garbage_is_broken(stub: Callable[..., str]) -> None:
    _, error = await _collect(stub(_sse(_chunk(content="a"), {"error": {"message": "overloaded"}})))
    assert isinstance(error, StreamBroken) and "overloaded" in str(error)
    _, error = await _collect(stub(_sse(_chunk(content="a"), [1, 2])))
    assert isinstance(error, StreamBroken)


async def test_each_read_ends_with_a_pause(stub: Callable[..., str]) -> None:
    """The chunks one read brings are followed by a pause: the agent loop joins their deltas into one
    event (``runner.emitter.DeltaBatch``) and holds nothing across the wait for the next read."""
    done = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    url = stub(_sse(_chunk(content="a"), _chunk(content="b")), _sse(_chunk(content="c"), done, b"[DONE]"))
    got, error = await _collect(url, pauses=True)
    assert error is None
    assert got == [
        ResponseInfo(id="c", model=None),
        TextChunk("a"),
        TextChunk("b"),
        PAUSE,
        TextChunk("c"),
        FinishChunk("stop"),
        PAUSE,
    ]
