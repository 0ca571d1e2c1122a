"""The tool interface: a name, a description, a JSON schema, and an async ``call``.

A tool receives the parsed arguments and returns text for the model. Raising :class:`ToolError`
(or anything else) makes the result an error the model sees; it never fails the run. MCP-backed tools
(:mod:`runner.tools.mcp`) implement the same protocol; they are made for one run, bound to the user
it is for, so ``call`` needs nothing more than the arguments.
"""

from __future__ import annotations

from typing import Any, Protocol


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]
    #: Where the tool runs, as clients are told (``ToolCallStarted.server_label``): ``switchboard`` for
    #: built-ins, the MCP server's name for its tools.
    server_label: str

    async def call(self, arguments: dict[str, Any]) -> str: ...
