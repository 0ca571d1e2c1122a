"""A request body that stalls is answered 408 and its connection closed: it does not hold its place
among the requests in flight (shared by every tenant) for as long as the client likes."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from .conftest import KEY, Stack
from .test_chat_stream import say_hello

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "a-test-admin-token-0123456789"
TIMEOUT_S = 0.5


async def _stalled_body(url: str, path: str, token: str) -> tuple[bytes, float]:
    """Headers announcing 100 bytes, then one byte and nothing more: what the gateway answers, read until
    it closes the connection, and how long that took."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        writer.write(head.encode() + b"{")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        return answer, time.monotonic() - started
    finally:
        writer.close()


@pytest.mark.parametrize("settings_overrides", [{"body_timeout_s": TIMEOUT_S, "admin_token": ADMIN_TOKEN}])
@pytest.mark.parametrize(
    ("path", "token"),
    [("/v1/chat/completions", KEY), ("/v1/responses", KEY), ("/admin/v1/users", ADMIN_TOKEN)],
)
async def test_a_stalled_body_is_a_408_and_the_connection_is_closed(stack: Stack, path: str, token: str) -> None:
    answer, took = await _stalled_body(stack.url, path, token)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert re.search(rb"\r\nconnection: close(\r\n|$)", head, re.IGNORECASE), head
    assert re.search(rb"\r\nx-request-id: req_[0-9a-f]{24}(\r\n|$)", head), head
    assert json.loads(body) == {
        "error": {
            "message": f"The request body did not arrive within {TIMEOUT_S:g} s.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_timeout",
        }
    }
    assert TIMEOUT_S <= took < 5
    assert stack.app.state.ctx.metrics.in_flight._value.get() == 0
    assert stack.fakes.admit_requests == []


@pytest.mark.parametrize("settings_overrides", [{"body_timeout_s": TIMEOUT_S}])
async def test_stalled_bodies_do_not_keep_the_in_flight_limit_taken(stack: Stack) -> None:
    """Twenty stalled bodies hold twenty places only until the body timeout; then the gateway serves."""
    stack.fakes.agent("agent_hello", say_hello)
    answers = await asyncio.gather(*(_stalled_body(stack.url, "/v1/chat/completions", KEY) for _ in range(20)))
    assert all(answer.startswith(b"HTTP/1.1 408") for answer, _ in answers)
    assert stack.app.state.ctx.metrics.in_flight._value.get() == 0
    async with stack.http() as http:
        resp = await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "agent_hello", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert resp.status_code == 200, resp.text
