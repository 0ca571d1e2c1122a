"""Reading a request body defensively: at most ``limit`` bytes (413), within ``timeout_s`` (408), and
only a JSON one (415).

All answers are the OpenAI envelope (:class:`~gateway.errors.GatewayError`). The size is checked
against ``Content-Length`` before anything is read and again while the body streams in, so a client
that lies about the length, or sends it chunked, still stops at the limit. The time is the whole
body's, not a pause's: a client that announces 100 bytes and sends one, or sends a byte a second,
would otherwise hold its request (and its place among the gateway's requests in flight) for as long
as it likes. The 408 closes the connection: the rest of that body will never be read.

A body without a ``Content-Type`` is read as JSON (scripts often leave it out); any other media type
than ``application/json`` (parameters such as ``charset=utf-8`` allowed) or a ``+json`` one is refused.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from .errors import INVALID_REQUEST, GatewayError

#: How much of an unsupported Content-Type an error message repeats.
_ECHO = 100


def too_large(limit: int) -> GatewayError:
    """The 413 answer for a body over ``limit`` bytes."""
    return GatewayError.of(413, f"The request body is larger than {limit} bytes.", INVALID_REQUEST, "request_too_large")


def body_timeout(timeout_s: float) -> GatewayError:
    """The 408 answer for a body not received whole within ``timeout_s``; it closes the connection."""
    return GatewayError.of(
        408,
        f"The request body did not arrive within {timeout_s:g} s.",
        INVALID_REQUEST,
        "request_timeout",
        headers={"Connection": "close"},
    )


def unsupported_media_type(content_type: str) -> GatewayError:
    """The 415 answer for a body that is not JSON."""
    shown = content_type if len(content_type) <= _ECHO else content_type[:_ECHO] + "…"
    return GatewayError.of(
        415,
        f"Unsupported Content-Type '{shown}': send the request body as application/json.",
        INVALID_REQUEST,
        "unsupported_media_type",
    )


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header value announces JSON (a missing or empty one counts as JSON)."""
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in ("", "application/json"):
        return True
    return media_type.startswith("application/") and media_type.endswith("+json")


def check_declared_length(request: Request, limit: int) -> None:
    """413 when the request's ``Content-Length`` announces more than ``limit`` bytes (reads nothing)."""
    declared = (request.headers.get("content-length") or "").strip()
    # Only ASCII digits, and no int() of a huge string: twenty digits are more than any limit.
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise too_large(limit)


def check_json_content_type(request: Request) -> None:
    """415 unless the request's ``Content-Type`` is JSON (see :func:`is_json_media_type`)."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        raise unsupported_media_type(content_type or "")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes whether or not ``Content-Length`` says so,
    and (408) a body not received whole within ``timeout_s`` of starting to read it."""
    check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise body_timeout(timeout_s) from None
    return b"".join(chunks)


async def read_json_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """:func:`check_json_content_type`, then :func:`read_body`: the raw bytes of a JSON body of at most
    ``limit`` bytes received within ``timeout_s`` (parsing them is the caller's)."""
    check_json_content_type(request)
    return await read_body(request, limit, timeout_s)
