"""A client that leaves while its request body is still being sent is no server error."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

import pytest

from .conftest import KEY, Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
async def test_a_body_cut_short_is_counted_as_499_and_logs_no_error(
    stack: Stack, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = urlparse(stack.url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    with caplog.at_level(logging.INFO, logger="gateway"):
        writer.write(head.encode() + b'{"model": "a", "messages": [')  # and then no more
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        await writer.wait_closed()
        async with stack.http() as http:
            for _ in range(50):  # the gateway notices the close on its next read
                metrics = (await http.get("/metrics")).text
                if f'route="{path}",status="499"' in metrics:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"no 499 counted for {path}")
            assert (await http.get("/healthz")).status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("before its request was read" in r.getMessage() for r in caplog.records)
