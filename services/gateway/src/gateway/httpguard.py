"""uvicorn's httptools protocol with limits on what comes before a request's body.

uvicorn bounds neither the size of a request's line and headers nor the time a client may take to
send them: a 50 MB header is buffered whole, and a connection that sends half a request stays open.
:class:`GuardedHttpToolsProtocol` answers ``431`` once the line and headers pass ``max_header_bytes``
and ``408`` when they are not complete ``header_timeout_s`` after their first byte (or after the
connection opened), both in the OpenAI error envelope with an ``x-request-id`` like every other answer
(a new id: the client's headers were never read), and closes the connection. A request the HTTP parser
cannot read (a control character in a header value, a malformed request line) is a ``400`` in the same
envelope, not uvicorn's plain-text one.

A response's status line and headers go out in one write with the start of its body
(:class:`HeadWithBody`): uvicorn writes each ASGI message as it comes, so every response cost a send
for its headers alone.

Pass it as ``uvicorn.Config(http=guarded_protocol(settings))``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from servicekit.requestid import HEADER, new_request_id

#: How long a refused connection is read (and dropped) before it is closed.
LINGER_S = 1.0

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _error(status: int, message: str, code: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"%s: %s\r\n" % (HEADER.encode(), new_request_id().encode()),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


#: What uvicorn writes when a request's ``Expect: 100-continue`` is read: not the response's head.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HeadWithBody:
    """The transport a response's cycle writes to until its head is out: the first write (uvicorn's
    status line and headers) is held until the next one, which carries it along, or until the event
    loop's next turn, whichever comes first. A streamed response's headers and first events, or a whole
    response's headers and body, are one send instead of two. Then the cycle is given the transport
    itself back, so the writes of the rest (every token of a stream) pay for no wrapper."""

    __slots__ = ("_cycle", "_head", "_loop", "_transport")

    def __init__(self, cycle: Any, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._cycle = cycle
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is None:
            if data == CONTINUE:  # an interim 100 goes out at once: the client waits for it to send the body
                self._transport.write(data)
            else:
                self._head = data
                self._loop.call_soon(self._release)
            return
        head, self._head = self._head, None
        self._cycle.transport = self._transport
        self._transport.write(head + data)

    def _release(self) -> None:
        head, self._head = self._head, None
        if head is None:  # gone with the body already
            return
        self._cycle.transport = self._transport
        if not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


#: What the request line adds to its URL (method, spaces, version, CRLF), and a header line to its
#: name and value (": ", CRLF), counted against ``max_header_bytes``.
_REQUEST_LINE_BYTES = 16
_HEADER_LINE_BYTES = 4


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop the parser (httptools reports it as a parser error)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """The httptools protocol, with a size and a time limit on each request's line and headers."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._head_parsed = 0  # bytes of the request line and headers the parser has handed over
        self._head_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: what the client still sends is read and dropped
        if self._in_head or self._head_timer is not None:
            self._in_head = True
            self._head_bytes += len(data)
        # Fed first, checked after: one read (at most a few hundred KiB) may end the headers and
        # carry the start of the body, which is not the headers' size. Headers that end within the
        # read are counted as the parser hands them over (on_url, on_header).
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._refuse_too_large()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url) + _REQUEST_LINE_BYTES)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + _HEADER_LINE_BYTES)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.max_header_bytes:
            # Stops the parser: uvicorn answers through send_400_response, which answers 431 instead.
            self._head_too_large = True
            raise _HeadTooLarge

    def on_message_begin(self) -> None:
        self._head_parsed = 0
        super().on_message_begin()
        if not self._in_head:
            # A pipelined or keep-alive request: count and time it from here.
            self._in_head = True
            self._head_bytes = 0
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # not for an upgrade, which made none
            cycle.transport = HeadWithBody(cycle, self.transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own allowance

    def send_400_response(self, msg: str) -> None:
        """What uvicorn answers a request its parser refused, in the envelope (then it stops reading)."""
        if self._head_too_large:
            self._refuse_too_large()
            return
        self._refuse(400, "The HTTP request is malformed and could not be read.", "invalid_http_request")

    def _refuse_too_large(self) -> None:
        self._refuse(
            431,
            f"The request line and headers are larger than {self.max_header_bytes} bytes.",
            "request_header_fields_too_large",
        )

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(
                408,
                f"The request's headers did not arrive within {self.header_timeout_s:g} s.",
                "request_timeout",
            )
        else:  # an idle connection that never began a request
            self.transport.close()

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer, end our side, and close a moment later. Closing at once with the client's bytes
        still unread would reset the connection, and a client would lose the answer to the reset."""
        self._disarm()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.transport.write(_error(status, message, code))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def guarded_protocol(max_header_bytes: int, header_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """A protocol class with these limits, for ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
