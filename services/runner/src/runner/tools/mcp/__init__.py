"""Tools served by MCP servers, for the agents that name them (:mod:`contracts.mcp`).

:class:`McpToolbox` is the runner's one entry point: :meth:`~McpToolbox.resolve` turns an agent's MCP
entries into tools for one run (listing the servers' tools, cached), with a note for the model about
any server that is unavailable; :meth:`~McpToolbox.announce` is what the fleet heartbeat says the
runner has; :meth:`~McpToolbox.start` lists every server's tools in the background (and again every
TTL) so that the announcement knows them; :meth:`~McpToolbox.close` ends every session.

Modules: ``config`` (``RUNNER_MCP_SERVERS``), ``session`` (one SDK session, owned by a task of its
own), ``pool`` (sessions and tool lists shared by runs), ``tool`` (an MCP tool as a runner tool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from contracts.fleet import McpServers
from contracts.mcp import McpEntry, parse_entry

from ..base import Tool
from .config import McpServerConfig, load_mcp_servers
from .pool import McpPool
from .session import McpTimeout, McpUnavailable
from .tool import McpTool, render_result

log = logging.getLogger(__name__)

#: The tool names announced in one heartbeat, in characters at most; servers past it say "unknown".
ANNOUNCE_BUDGET_CHARS = 4096


@dataclass
class ResolvedMcpTools:
    """An agent's MCP tools for one run, and what the model should be told about those it cannot have."""

    tools: list[Tool] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class McpToolbox:
    """The runner's MCP servers (from configuration) and their tools."""

    def __init__(
        self, servers: dict[str, McpServerConfig], *, tools_ttl_s: float = 60.0, max_result_chars: int = 100_000
    ) -> None:
        self.servers = servers
        self.pool = McpPool(servers, tools_ttl_s=tools_ttl_s)
        if servers:
            # The SDK's HTTP client logs every request's URL at INFO; a URL may carry a credential.
            httpx_log = logging.getLogger("httpx2")
            httpx_log.setLevel(max(httpx_log.getEffectiveLevel(), logging.WARNING))
        self._ttl = tools_ttl_s
        self._max_chars = max_result_chars
        self._refresher: asyncio.Task[None] | None = None

    def entries(self, names: Iterable[str]) -> bool:
        """Whether any of an agent's ``names`` is an MCP entry this runner can resolve."""
        return any(parse_entry(n, self.servers) is not None for n in names)

    async def resolve(self, names: Iterable[str], user_id: str) -> ResolvedMcpTools:
        """The MCP tools ``names`` select for a run of ``user_id``; servers are listed in parallel. A
        server that cannot be listed gives a note instead of tools, and a one-tool entry the server
        does not list is skipped with a warning."""
        wanted: dict[str, list[McpEntry]] = {}
        for name in dict.fromkeys(names):
            entry = parse_entry(name, self.servers)
            if entry is not None:
                wanted.setdefault(entry.server, []).append(entry)
        out = ResolvedMcpTools()
        servers = list(wanted)
        listings = await asyncio.gather(*(self.pool.tools(s, user_id) for s in servers), return_exceptions=True)
        for server, listing in zip(servers, listings, strict=True):
            if isinstance(listing, McpUnavailable | McpTimeout):
                # Every run it affects says so in its log (the record names the request).
                log.warning("run goes on without the tools of MCP server %s: %s", server, listing)
                out.notes.append(f"{listing}. Answer without them, and say so if the user asked for them.")
                continue
            if isinstance(listing, BaseException):
                raise listing
            selected: dict[str, McpTool] = {}
            for tool in listing:
                if any(e.matches(tool.name) for e in wanted[server]):
                    made = McpTool(self.pool, server, tool, user_id, self._max_chars)
                    # Two tools whose names only differ in replaced characters: the first listed keeps it.
                    selected.setdefault(made.name, made)
            for e in wanted[server]:
                if e.tool is not None and not any(e.matches(t.name) for t in listing):
                    log.warning("agent lists MCP tool %r, which server %s does not list; ignored", e.tool, server)
            out.tools.extend(selected.values())
        return out

    def announce(self) -> McpServers:
        """Server names with their tools' MCP names where known, within :data:`ANNOUNCE_BUDGET_CHARS`."""
        out: McpServers = {}
        budget = ANNOUNCE_BUDGET_CHARS
        for server in sorted(self.servers):
            tools = self.pool.known_tools(server)
            cost = sum(len(t) + 3 for t in tools or ())
            if tools is not None and cost <= budget:
                out[server] = sorted(tools)
                budget -= cost
            else:
                out[server] = None
        return out

    def start(self) -> None:
        """List every server's tools now and every TTL, in the background (failures are logged)."""
        if self.servers and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(), name="mcp-tools-refresh")

    async def _refresh(self) -> None:
        shared = [s for s, c in self.servers.items() if not c.per_user]
        while True:
            await asyncio.gather(*(self.pool.tools(s, "") for s in shared), return_exceptions=True)
            await asyncio.sleep(self._ttl)

    async def close(self) -> None:
        """Stop listing and end every session."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self.pool.close()


__all__ = [
    "McpServerConfig",
    "McpTimeout",
    "McpTool",
    "McpToolbox",
    "McpUnavailable",
    "ResolvedMcpTools",
    "load_mcp_servers",
    "render_result",
]
