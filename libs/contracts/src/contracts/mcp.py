"""How an agent names the tools of MCP servers, and how the model sees them (shared by the runner,
which resolves the names, and the catalog and gateway, which check them).

An agent's ``tools`` list holds, beside built-in tool names:

- ``"mcp:<server>"`` — every tool the MCP server ``<server>`` lists;
- ``"<tool>_mcp_<server>"`` — that one tool (``<tool>`` as the server names it, or the name the model
  sees, below).

The model sees each MCP tool as ``<tool>_mcp_<server>`` (LibreChat's convention), made to fit OpenAI's
``^[a-zA-Z0-9_-]{1,64}$``: characters outside it become ``_``; a name still longer than 64 characters
keeps the server suffix and the start of the tool's name, and ends the tool part with a stable hash
of the whole original name (:func:`function_name`).

Server names are ``[A-Za-z0-9_-]``, at most :data:`MAX_SERVER_NAME_LENGTH` characters
(:data:`SERVER_NAME_PATTERN`), so a server suffix always leaves room for the tool part.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: ``mcp:<server>``: every tool of the server.
ALL_TOOLS_PREFIX = "mcp:"
#: Between a tool's name and its server's in the name the model sees.
DELIMITER = "_mcp_"
MAX_SERVER_NAME_LENGTH = 32
SERVER_NAME_PATTERN = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_SERVER_NAME_LENGTH}}}$")
#: OpenAI's rule for a function's name (Anthropic's is the same).
FUNCTION_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_FUNCTION_NAME_LENGTH = 64
_HASH_CHARS = 8
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def function_name(tool: str, server: str) -> str:
    """The name the model sees for MCP tool ``tool`` of ``server``: ``<tool>_mcp_<server>``, its
    characters outside ``[a-zA-Z0-9_-]`` replaced by ``_``, and when longer than 64 characters,
    ``<start of tool>_<hash>_mcp_<server>`` (the hash: 8 hex digits of SHA-256 of the original
    ``<tool>_mcp_<server>``, so the same tool always gets the same name)."""
    suffix = DELIMITER + _UNSAFE.sub("_", server)
    head = _UNSAFE.sub("_", tool) or "_"
    if len(head) + len(suffix) <= MAX_FUNCTION_NAME_LENGTH:
        return head + suffix
    digest = hashlib.sha256(f"{tool}{DELIMITER}{server}".encode()).hexdigest()[:_HASH_CHARS]
    keep = max(1, MAX_FUNCTION_NAME_LENGTH - len(suffix) - _HASH_CHARS - 1)
    return f"{head[:keep]}_{digest}{suffix}"


@dataclass(frozen=True, slots=True)
class McpEntry:
    """An agent's ``tools`` entry that names MCP tools: all of ``server``'s (``tool`` is ``None``), or one."""

    server: str
    tool: str | None = None

    def matches(self, tool: str) -> bool:
        """Whether this entry selects the server's tool named ``tool`` (its MCP name)."""
        if self.tool is None or self.tool == tool:
            return True
        return f"{self.tool}{DELIMITER}{self.server}" == function_name(tool, self.server)


def parse_entry(entry: str, servers: Iterable[str]) -> McpEntry | None:
    """``entry`` read against the configured ``servers``: ``mcp:<server>`` or ``<tool>_mcp_<server>``
    for one of them (the longest server name that fits, when several do), else ``None`` (a built-in
    tool's name, or an unknown server: see :func:`looks_like_mcp`)."""
    if entry.startswith(ALL_TOOLS_PREFIX):
        server = entry[len(ALL_TOOLS_PREFIX) :]
        return McpEntry(server) if server in set(servers) else None
    best: str | None = None
    for server in servers:
        ending = DELIMITER + server
        if entry.endswith(ending) and len(entry) > len(ending) and (best is None or len(server) > len(best)):
            best = server
    if best is None:
        return None
    return McpEntry(best, entry[: -len(DELIMITER + best)])


def looks_like_mcp(entry: str) -> bool:
    """Whether ``entry`` has an MCP entry's shape, whatever the servers (to say "unknown MCP server"
    rather than "unknown tool")."""
    return entry.startswith(ALL_TOOLS_PREFIX) or DELIMITER in entry


def server_of(entry: str) -> str:
    """The server an MCP-shaped entry names when its server is unknown: what follows ``mcp:`` or the
    last ``_mcp_``."""
    if entry.startswith(ALL_TOOLS_PREFIX):
        return entry[len(ALL_TOOLS_PREFIX) :]
    return entry.rpartition(DELIMITER)[2]
