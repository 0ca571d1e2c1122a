"""Server-side tools: a registry of built-ins, looked up by the names an agent lists."""

from __future__ import annotations

import logging

from .base import Tool, ToolError
from .calculator import Calculator
from .current_time import CurrentTime

log = logging.getLogger(__name__)


class ToolRegistry:
    def __init__(self, tools: list[Tool]) -> None:
        self._tools = {t.name: t for t in tools}

    def names(self) -> list[str]:
        """The tools' names, sorted (announced in every heartbeat)."""
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def resolve(self, names: list[str]) -> list[Tool]:
        """The agent's tools; names this runner does not know are skipped with a warning."""
        found: list[Tool] = []
        for name in dict.fromkeys(names):
            tool = self._tools.get(name)
            if tool is None:
                log.warning("agent lists unknown tool %r; ignored", name)
            else:
                found.append(tool)
        return found


def builtin_registry() -> ToolRegistry:
    return ToolRegistry([Calculator(), CurrentTime()])


__all__ = ["Tool", "ToolError", "ToolRegistry", "builtin_registry"]
