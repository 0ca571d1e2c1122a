"""One live session with one MCP server (one set of headers), through the official SDK's streamable
HTTP client (``mcp.Client`` over ``streamable_http_client`` with an ``httpx2.AsyncClient`` holding the
headers).

The SDK's client is an async context manager whose transport runs in a task group: entered in a
run's task, a transport failure would cancel that run. So each session is entered by a task of its
own (:meth:`McpSession.open`), which holds it open until :meth:`McpSession.close`; runs call through
it from their own tasks. A call that fails because the connection is gone marks the session broken
(:attr:`McpSession.broken`): the pool replaces it for the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from ..base import ToolError
from .config import McpServerConfig

log = logging.getLogger(__name__)

#: Tool listings longer than this many pages are cut (a server that pages forever cannot hang a run).
MAX_LIST_PAGES = 20
#: How long the server may hold a stream open without sending anything (the SDK's own default).
STREAM_READ_TIMEOUT_S = 300.0
CLIENT_INFO = mcp_types.Implementation(name="switchboard-runner", version="1")
#: How the protocol version is agreed: the SDK probes for the newest and falls back to the handshake.
CONNECT_MODE = "auto"

_T = TypeVar("_T")


class McpUnavailable(ToolError):
    """The MCP server cannot be reached, or the connection to it was lost."""


class McpSessionLost(McpUnavailable):
    """The server no longer knows the session (it restarted, or expired it): the request was not run,
    so it may be sent again on a new session."""


class McpTimeout(ToolError):
    """The MCP server did not answer within its ``timeout_s``."""


def describe(exc: BaseException) -> str:
    """A short, credential-free cause: the innermost exception's type (messages may hold the URL)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"{exc.error.message} (code {exc.error.code})"
    return type(exc).__name__


class McpSession:
    """A session with ``config``'s server carrying ``headers``; :meth:`open` before use."""

    def __init__(self, config: McpServerConfig, headers: Mapping[str, str]) -> None:
        self.config = config
        self._headers = dict(headers)
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.broken = False

    @property
    def alive(self) -> bool:
        return self._client is not None and not self.broken and not self._closing.is_set()

    async def open(self) -> None:
        """Connect and negotiate within the server's timeout, or :class:`McpUnavailable`."""
        name = self.config.name
        self._task = asyncio.create_task(self._own(), name=f"mcp-session-{name}")
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await self._ready.wait()
        except TimeoutError:
            await self.close()
            raise McpUnavailable(
                f"MCP server {name!r} did not answer within {self.config.timeout_s:g} s; its tools are unavailable"
            ) from None
        if self._client is None:
            cause = describe(self._error) if self._error is not None else "closed"
            log.warning("MCP server %s cannot be reached: %s", name, cause)
            await self.close()
            raise McpUnavailable(f"MCP server {name!r} cannot be reached ({cause}); its tools are unavailable")

    async def _own(self) -> None:
        timeout = self.config.timeout_s
        http = httpx2.AsyncClient(
            headers=self._headers,
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0), read=max(timeout, STREAM_READ_TIMEOUT_S)),
        )
        transport = streamable_http_client(self.config.url, http_client=http)
        try:
            # cache=None: the pool caches tool lists with its own TTL; one rule, not two.
            client = Client(
                transport, cache=None, read_timeout_seconds=timeout, client_info=CLIENT_INFO, mode=CONNECT_MODE
            )
            async with http, client as c:
                self._client = c
                self._ready.set()
                await self._closing.wait()
        except Exception as exc:
            self._error = exc
            if self._client is not None:
                log.info("MCP session with %s ended: %s", self.config.name, describe(exc))
        finally:
            self._client = None
            self._ready.set()

    async def close(self) -> None:
        """End the session (the SDK tells the server); idempotent."""
        self._closing.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _live(self) -> Client:
        if self._client is None or self.broken:
            raise McpUnavailable(f"the connection to MCP server {self.config.name!r} was lost")
        return self._client

    async def list_tools(self) -> list[mcp_types.Tool]:
        """Every tool the server lists (page after page, at most :data:`MAX_LIST_PAGES`)."""
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):

            def page_of(client: Client, after: str | None = cursor) -> Awaitable[mcp_types.ListToolsResult]:
                return client.list_tools(cursor=after)

            page = await self._request(page_of, "listing its tools")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """One ``tools/call``, bounded by the server's timeout; cancelling the caller cancels it at the
        server too (the SDK sends ``notifications/cancelled``)."""
        timeout = self.config.timeout_s
        return await self._request(
            lambda c: c.call_tool(name, arguments, read_timeout_seconds=timeout), f"calling {name!r}"
        )

    async def _request(self, send: Callable[[Client], Awaitable[_T]], doing: str) -> _T:
        server, timeout = self.config.name, self.config.timeout_s
        client = self._live()
        try:
            async with asyncio.timeout(timeout):
                return await send(client)
        except TimeoutError:
            raise McpTimeout(f"MCP server {server!r} did not answer within {timeout:g} s ({doing})") from None
        except MCPError as exc:
            if exc.error.code == mcp_types.CONNECTION_CLOSED:
                self.broken = True
                raise McpUnavailable(f"the connection to MCP server {server!r} was lost ({doing})") from None
            if exc.error.code == mcp_types.INVALID_REQUEST and "session" in exc.error.message.lower():
                # A server with sessions (before protocol 2026-07-28) answers 404 for one it forgot.
                self.broken = True
                raise McpSessionLost(f"MCP server {server!r} no longer knows this session ({doing})") from None
            if exc.error.code == mcp_types.REQUEST_TIMEOUT:
                raise McpTimeout(f"MCP server {server!r} did not answer within {timeout:g} s ({doing})") from None
            raise ToolError(f"MCP server {server!r} refused {doing}: {exc.error.message[:500]}") from None
        except (httpx2.HTTPError, OSError) as exc:
            self.broken = True
            raise McpUnavailable(f"MCP server {server!r} failed while {doing} ({describe(exc)})") from None
