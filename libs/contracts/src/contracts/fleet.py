"""The runner fleet's liveness: every runner says, about once a second, that it is alive and how far
each of its runs has got (:class:`RunnerHeartbeat` on :attr:`~contracts.subjects.Subjects.runner_heartbeat`,
core NATS, the runner's id also in the :data:`RUNNER_ID_HEADER` header so a listener that needs only
the id does not decode the body).

Who listens, and why:

- **billing** keeps the last heartbeat of every runner. A runner silent for ``lost_after_s`` is dead:
  for each run it was executing, billing records the model call in flight from the last progress it
  saw (``UsageRecorded`` marked ``estimated``, context ``incomplete``, under the call's own message id
  ``run_id:call_index``, so a record the runner did publish wins and nothing is billed twice) and
  closes the run (``RunClosed``, status ``failed``), which releases its reservation at once.
- **gateways** fail the streams of a runner that fell silent (an error chunk within seconds, not
  after the idle timeout).
- **the catalog** keeps what live runners announce they can serve (``connections``, ``tools``,
  ``mcp_servers``), so an agent naming a provider connection, a tool or an MCP server no runner has
  (``opneai``, ``web_serch``, ``mcp:gihtub``) is refused when it is created or updated
  (:func:`capability_problems`), not when it first runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import Field

from ._base import Event, Message
from .mcp import function_name, looks_like_mcp, parse_entry, server_of
from .problems import Problem
from .usage import TokenUsage

#: The NATS header naming the runner of a heartbeat.
RUNNER_ID_HEADER = "Switchboard-Runner"

#: MCP servers by name, each with its tools' MCP names, or ``None`` where they are not known.
McpServers = dict[str, list[str] | None]


class RunProgress(Message):
    """One run as far as its runner has got: the model call in flight and what it has cost so far.

    ``usage`` is what the runner would record for the call if it stopped now (the prompt estimated,
    the output counted from the deltas received); ``call_index`` is ``None`` between model calls.
    """

    run_id: str
    user_id: str
    agent_id: str
    reservation_id: str | None = None
    conversation_id: str | None = None
    provider: str = Field(description="the connection's kind: openai or anthropic")
    connection: str = ""
    model: str
    call_index: int | None = Field(default=None, ge=0)
    calls_recorded: int = Field(default=0, ge=0, description="model calls whose usage the runner has published")
    usage: TokenUsage = Field(default_factory=TokenUsage)


class RunnerHeartbeat(Event):
    """A runner is alive; ``runs`` are the runs it is executing (maybe split over several messages:
    ``part`` of ``parts``, so no message outgrows NATS's limit)."""

    runner_id: str
    interval_s: float = Field(gt=0, description="the next heartbeat is due within this")
    runs: list[RunProgress] = Field(default_factory=list)
    part: int = Field(default=0, ge=0)
    parts: int = Field(default=1, ge=1)
    connections: list[str] | None = Field(
        default=None, description="the provider connections this runner serves (an agent's `provider`); every part"
    )
    tools: list[str] | None = Field(default=None, description="the tools this runner executes; every part")
    mcp_servers: McpServers | None = Field(
        default=None,
        description="the MCP servers this runner is configured with, each with the names of its tools as the "
        "server lists them (null while unknown: not listed yet, the server down, or tools that depend on the user); "
        "every part",
    )


class GatewayHeartbeat(Event):
    """A gateway process is alive (core NATS, about once a second): runners cancel the runs whose client
    waits on a gateway they no longer hear (``RunRequest.gateway_id``)."""

    gateway_id: str = Field(max_length=128)
    interval_s: float = Field(gt=0, description="the next heartbeat is due within this")


class Capabilities(Message):
    """What the live runners can serve, as the catalog knows it: the union of what each announced.
    ``None`` for a kind no live runner announced (none heard yet, or one too old to say): then it is
    not checked. The same for one MCP server's tools."""

    connections: list[str] | None = None
    tools: list[str] | None = None
    mcp_servers: McpServers | None = None
    runners: int = Field(default=0, ge=0, description="live runners heard")


#: How many known names a problem lists before it says "…".
_SHOWN = 20


def _known(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN]) + (", …" if len(names) > _SHOWN else "")
    return shown or "none"


def capability_problems(provider: object, tools: object, caps: Capabilities) -> list[Problem]:
    """``(param, problem)`` for an agent's ``provider`` and ``tools`` that no live runner serves, in
    field order: ``("provider", "unknown connection 'opneai' (known: anthropic, openai)")``,
    ``("tools[0]", "unknown tool 'web_serch' (known: calculator, current_time)")``,
    ``("tools[1]", "unknown MCP server 'gihtub' (known: github)")``. MCP entries
    (:mod:`contracts.mcp`) are checked against the servers announced, and a one-tool entry against
    the server's tools where they are known. Values that are not strings are left to the model's own
    validation."""
    out: list[Problem] = []
    if caps.connections is not None and isinstance(provider, str) and provider not in caps.connections:
        out.append(("provider", f"unknown connection {_quoted(provider)} (known: {_known(caps.connections)})"))
    if isinstance(tools, list):
        for i, name in enumerate(tools):
            problem = _tool_problem(name, caps) if isinstance(name, str) else None
            if problem is not None:
                out.append((f"tools[{i}]", problem))
    return out


def _tool_problem(name: str, caps: Capabilities) -> str | None:
    servers = caps.mcp_servers
    if servers is not None:
        entry = parse_entry(name, servers)
        if entry is not None:
            known = servers[entry.server]
            if entry.tool is None or known is None or any(entry.matches(t) for t in known):
                return None
            offered = sorted(function_name(t, entry.server) for t in known)
            return f"unknown tool {_quoted(name)} of MCP server {_quoted(entry.server)} (known: {_known(offered)})"
    if looks_like_mcp(name) and (caps.tools is None or name not in caps.tools):
        if servers is None:
            return None  # no live runner said which MCP servers it has: not checked
        return f"unknown MCP server {_quoted(server_of(name))} (known: {_known(sorted(servers))})"
    if caps.tools is not None and name not in caps.tools:
        return f"unknown tool {_quoted(name)} (known: {_known(caps.tools)})"
    return None


def _quoted(value: str) -> str:
    # An error repeats at most a column's width of what it was sent.
    return repr(value[:200])


def union_mcp(announced: Iterable[McpServers | None]) -> McpServers | None:
    """The union of the MCP servers each runner announced, ``None`` if any said nothing (or none did);
    a server's tools are the union of its announced lists, ``None`` if any runner did not know them."""
    merged: McpServers = {}
    seen = False
    for item in announced:
        if item is None:
            return None
        seen = True
        for server, tools in item.items():
            if server not in merged:
                merged[server] = None if tools is None else sorted(set(tools))
            else:
                have = merged[server]
                merged[server] = None if have is None or tools is None else sorted(set(have) | set(tools))
    return dict(sorted(merged.items())) if seen else None


def union(announced: Iterable[list[str] | None]) -> list[str] | None:
    """The sorted union of what each runner announced; ``None`` if any said nothing (or none did)."""
    names: set[str] = set()
    seen = False
    for item in announced:
        if item is None:
            return None
        seen = True
        names.update(item)
    return sorted(names) if seen else None
