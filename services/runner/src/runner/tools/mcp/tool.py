"""An MCP server's tool as a runner :class:`~runner.tools.base.Tool`: the model sees it under
``<tool>_mcp_<server>`` (:func:`contracts.mcp.function_name`) with the server's description and
input schema; a call goes to the server with the model's arguments, for the user the run is for.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import mcp_types
from opentelemetry import trace

from contracts.mcp import function_name

from ..base import ToolError
from .pool import McpPool
from .session import McpSessionLost

#: What the model is told a tool does when the server gives no description.
_NO_DESCRIPTION = "A tool of the MCP server {server}."


def render_result(result: mcp_types.CallToolResult, max_chars: int) -> str:
    """The text the model sees: the text of every content block, then the structured content as JSON
    (unless a text block already says the same: the SDK's servers send a tool's return value both
    ways, a plain value wrapped as ``{"result": …}``), cut to ``max_chars``."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource) and isinstance(
            block.resource, mcp_types.TextResourceContents
        ):
            parts.append(block.resource.text)
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{block.type} content omitted]")
    structured = result.structured_content
    if structured is not None and not _repeats(parts, structured):
        parts.append(json.dumps(structured, ensure_ascii=False, separators=(",", ":")))
    text = "\n".join(parts)
    if len(text) > max_chars:
        text = f"{text[:max_chars]}\n[truncated: {len(text) - max_chars} more characters]"
    return text


def _repeats(parts: list[str], structured: Any) -> bool:
    if any(_same_json(p, structured) for p in parts):
        return True
    if isinstance(structured, dict) and len(structured) == 1:
        (value,) = structured.values()
        return any(p == value or _same_json(p, value) for p in parts)
    return False


def _same_json(text: str, value: Any) -> bool:
    if not text.lstrip().startswith(("{", "[")):
        return False
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False


class McpTool:
    """One MCP tool of one server, bound to the user a run is for (their id fills ``{{user_id}}``)."""

    def __init__(self, pool: McpPool, server: str, spec: mcp_types.Tool, user_id: str, max_result_chars: int) -> None:
        self.name = function_name(spec.name, server)
        self.description = spec.description or _NO_DESCRIPTION.format(server=server)
        self.parameters: dict[str, Any] = spec.input_schema or {"type": "object", "properties": {}}
        self.server_label = server
        self.mcp_name = spec.name
        self._pool = pool
        self._user_id = user_id
        self._max_chars = max_result_chars

    async def call(self, arguments: dict[str, Any]) -> str:
        # The span is the agent loop's ``execute_tool <name>``: say where the tool runs.
        span = trace.get_current_span()
        config = self._pool.servers[self.server_label]
        url = urlsplit(config.url)
        span.set_attributes(
            {
                "gen_ai.tool.type": "extension",
                "mcp.method.name": "tools/call",
                "mcp.server.name": self.server_label,
                "server.address": url.hostname or "",
                "server.port": url.port or (443 if url.scheme == "https" else 80),
            }
        )
        result = await self._call(arguments)
        text = render_result(result, self._max_chars)
        if result.is_error:
            raise ToolError(f"the MCP tool {self.mcp_name!r} of server {self.server_label!r} failed: {text}")
        return text

    async def _call(self, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        try:
            session = await self._pool.session(self.server_label, self._user_id)
            return await session.call_tool(self.mcp_name, arguments)
        except McpSessionLost:
            # The server never ran it (it forgot the session, a restart): once more on a new session.
            # A connection lost mid-call is not retried: the tool may have run.
            session = await self._pool.session(self.server_label, self._user_id)
            return await session.call_tool(self.mcp_name, arguments)
