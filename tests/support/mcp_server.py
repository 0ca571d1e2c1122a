"""A real MCP server for the tests and the demo: the ``mcp`` SDK's server side (``MCPServer``) over
streamable HTTP, served by uvicorn on a thread of its own (its own event loop, so a client under test
shares nothing with it but the socket).

Its tools cover what an MCP client must handle:

- ``add`` — adds two numbers (text content and structured content);
- ``fail`` — always answers an ``isError`` result;
- ``sleep`` — sleeps ``seconds`` (past a client's timeout); counts the calls it saw cancelled;
- a tool whose name is long enough that ``<tool>_mcp_<server>`` must be shortened, with a dot in it
  (a character MCP allows and OpenAI function names do not);
- ``echo_header`` — answers the value of one request header (shows ``{{user_id}}``/``${VAR}``).

``McpTestServer().start()`` returns it running on a free port of 127.0.0.1 (``url`` is its endpoint);
``stop()`` ends it. ``python -m tests.support.mcp_server --port 8765`` runs it in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

#: A name MCP allows (dots, 60 characters) that no OpenAI function name can be once ``_mcp_<server>`` is added.
LONG_TOOL_NAME = "lookup.customer_record_by_external_reference_identifier_v2"


@dataclass
class Observed:
    """What the server saw, for tests to assert on (written from the server's thread)."""

    sessions: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    sleeps_cancelled: int = 0
    sleeps_started: int = 0


def build_server(observed: Observed) -> MCPServer:
    server = MCPServer("switchboard-test-tools", instructions="Tools for Switchboard's tests.", log_level="WARNING")

    def seen(ctx: Context, tool: str) -> None:
        observed.calls.append(tool)
        headers = ctx.headers or {}
        session = headers.get("mcp-session-id")
        if session:
            observed.sessions.add(session)

    @server.tool(description="Add two numbers and return their sum.")
    def add(a: float, b: float, ctx: Context) -> dict[str, float]:
        seen(ctx, "add")
        total = a + b
        return {"sum": int(total) if total.is_integer() else total}

    @server.tool(description="Always fails: answers an error result.")
    def fail(reason: str, ctx: Context) -> str:
        seen(ctx, "fail")
        raise ToolError(f"refused on purpose: {reason}")

    @server.tool(description="Sleep for a number of seconds, then say so.")
    async def sleep(seconds: float, ctx: Context) -> str:
        seen(ctx, "sleep")
        observed.sleeps_started += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            observed.sleeps_cancelled += 1
            raise
        return f"slept {seconds} s"

    @server.tool(name=LONG_TOOL_NAME, description="Find a customer record by its external reference.")
    def lookup(reference: str, ctx: Context) -> str:
        seen(ctx, LONG_TOOL_NAME)
        return f"customer {reference}: Ada Lovelace"

    @server.tool(description="Answer the value of one HTTP request header this call carried.")
    def echo_header(name: str, ctx: Context) -> str:
        seen(ctx, "echo_header")
        return (ctx.headers or {}).get(name.lower(), "<absent>")

    return server


class McpTestServer:
    """The test MCP server on a thread: ``start()``, ``url``, ``observed``, ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.observed = Observed()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        app = build_server(self.observed).streamable_http_app(streamable_http_path="/mcp", host=host)
        # Open streams (a session's GET) would hold a shutdown: a restart in a test must be quick.
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def start(self, timeout_s: float = 10.0) -> McpTestServer:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), name="mcp-test-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        # uvicorn says it is listening through this flag only; the socket is bound already.
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with McpTestServer(args.host, args.port) as server:
        print(f"MCP test server at {server.url} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
