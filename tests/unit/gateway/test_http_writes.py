"""A response's status line and headers go out in the same socket write as the start of its body.

Driven through the gateway's real protocol class (uvicorn's httptools protocol, as ``gateway.__main__``
configures it) over a transport that records each write: every write is a send on the real socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.httpguard import guarded_protocol

pytestmark = pytest.mark.asyncio

GET = b"GET / HTTP/1.1\r\nhost: gateway\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(app: Any) -> tuple[Any, RecordingTransport]:
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws="none", http=guarded_protocol(65536, 10.0))
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def whole(scope: Any, receive: Any, send: Any) -> None:
    """A whole response: its start, then its body."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def is_whole(write: bytes) -> bool:
    return write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"\r\n\r\nok")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_whole_response_is_one_write() -> None:
    protocol, transport = connect(whole)
    protocol.data_received(GET)
    await settle()
    assert len(transport.writes) == 1 and is_whole(transport.writes[0])
    protocol.connection_lost(None)


async def test_a_streams_headers_go_with_its_first_events_and_later_writes_pass_through() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    protocol, transport = connect(app)
    protocol.data_received(GET)
    await asyncio.sleep(0.05)
    first, second, last = transport.writes
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert second == b"9\r\ndata: 2\n\n\r\n"
    assert last == b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    protocol.connection_lost(None)


async def test_headers_whose_body_is_not_ready_go_out_on_the_loops_next_turn() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: 1\n\n"})

    protocol, transport = connect(app)
    protocol.data_received(GET)
    await settle()
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    release.set()
    await settle()
    assert transport.writes[1] == b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"
    protocol.connection_lost(None)


async def test_each_request_on_a_kept_alive_connection_gets_one_write() -> None:
    protocol, transport = connect(whole)
    protocol.data_received(GET)
    await settle()
    protocol.data_received(GET)
    await settle()
    assert [is_whole(w) for w in transport.writes] == [True, True]
    protocol.connection_lost(None)


async def test_headers_held_for_a_connection_that_closes_are_not_written_after_it() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        transport.close()  # the client went away while the headers were held

    protocol, transport = connect(app)
    protocol.data_received(GET)
    await settle()
    assert transport.writes == []
    protocol.connection_lost(None)


async def test_a_response_that_closes_the_connection_sends_its_headers_first() -> None:
    protocol, transport = connect(whole)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
    await settle()
    assert len(transport.writes) == 1 and is_whole(transport.writes[0]) and transport.closed


async def test_a_100_continue_goes_out_before_the_client_sends_its_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    protocol, transport = connect(app)
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: gateway\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
    await settle()
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # the client waits for it to send the body
    protocol.data_received(b"ok")
    await settle()
    assert len(transport.writes) == 2 and is_whole(transport.writes[1])
    protocol.connection_lost(None)


async def test_once_the_head_is_out_the_response_writes_to_the_transport_itself() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        seen.append(protocol.cycle.transport)
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        seen.append(protocol.cycle.transport)  # every later event of the stream pays for no wrapper
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    protocol, transport = connect(app)
    protocol.data_received(GET)
    await settle()
    assert seen[0] is not transport and seen[1] is transport and len(transport.writes) == 2
    protocol.connection_lost(None)
