"""Server-side tools: a registry of built-ins and, when MCP servers are configured, their tools
(:mod:`runner.tools.mcp`), looked up by the names an agent lists."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from contracts.mcp import looks_like_mcp

from .base import Tool, ToolError
from .calculator import Calculator
from .current_time import CurrentTime
from .mcp import McpToolbox

log = logging.getLogger(__name__)


@dataclass
class ResolvedTools:
    """An agent's tools for one run, and notes for the model about tools it cannot have now (an MCP
    server that is down)."""

    tools: list[Tool] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ToolRegistry:
    def __init__(self, tools: list[Tool], mcp: McpToolbox | None = None) -> None:
        self._tools = {t.name: t for t in tools}
        self.mcp = mcp

    def names(self) -> list[str]:
        """The built-in tools' names, sorted (announced in every heartbeat; MCP servers are announced apart)."""
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def resolve(self, names: Iterable[str]) -> list[Tool]:
        """The agent's built-in tools; names this runner does not know are skipped with a warning
        (MCP entries are left to :meth:`resolve_for_run`)."""
        found: list[Tool] = []
        for name in dict.fromkeys(names):
            tool = self._tools.get(name)
            if tool is not None:
                found.append(tool)
            elif not self._is_mcp(name):
                log.warning("agent lists unknown tool %r; ignored", name)
        return found

    def _is_mcp(self, name: str) -> bool:
        if self.mcp is not None and self.mcp.entries([name]):
            return True
        if looks_like_mcp(name):
            log.warning("agent lists MCP tools %r of a server this runner does not have; ignored", name)
            return True
        return False

    async def resolve_for_run(self, names: list[str], user_id: str) -> ResolvedTools:
        """The agent's built-in tools and the MCP tools it names, for a run of ``user_id`` (the MCP
        servers are listed now, or their cached lists reused)."""
        out = ResolvedTools(self.resolve(names))
        if self.mcp is not None and self.mcp.entries(names):
            mcp = await self.mcp.resolve(names, user_id)
            taken = {t.name for t in out.tools}
            out.tools.extend(t for t in mcp.tools if t.name not in taken)
            out.notes.extend(mcp.notes)
        return out


def builtin_registry(mcp: McpToolbox | None = None) -> ToolRegistry:
    return ToolRegistry([Calculator(), CurrentTime()], mcp)


__all__ = ["ResolvedTools", "Tool", "ToolError", "ToolRegistry", "builtin_registry"]
