"""The client's functions in a run: what the model is offered, which choice it gets, and what is refused.

A client may send its own function tools with a chat request. They are offered to the model beside
the agent's own tools; when the model calls one, the run ends after that model call with
``finish_reason: "tool_calls"`` and the client runs it (the runner never executes a client function).

``auto``, ``required`` and a named function are the client's word about *its* functions — the
agent's own tools are not the client's to choose — and ``none`` means no tool at all:

=================  =====================================================  =======================
client sends       tools offered to the model                             choice sent to the model
=================  =====================================================  =======================
(none), ``auto``   the agent's and the client's                           (provider default)/auto
``none``           the agent's and the client's                           ``none``
``required``       the client's only                                      ``required``
a named function   the client's only                                      that function
=================  =====================================================  =======================

``required`` and a named function leave out the agent's tools so that the model's answer *is* the
client's call, in one model call, rather than a loop of the agent's tools that ``required`` would
keep forcing. ``none`` keeps every tool in the request, so a replayed history holding calls to them
stays valid for providers that want the tools of the calls they see (Anthropic), and tells the model
to call none. ``parallel_tool_calls`` passes to the provider as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contracts import ErrorInfo, RunOptions
from contracts.runs import NamedToolChoice

from .providers import ForcedTool, ToolChoice, ToolSpec
from .tools import Tool

#: The schema of a client function sent without ``parameters``: it takes no arguments.
NO_PARAMETERS: dict[str, object] = {"type": "object", "properties": {}}
#: Where an agent's built-in tools run (MCP tools name their server).
BUILTIN_LABEL = "switchboard"


@dataclass(frozen=True)
class ToolPlan:
    """The tools of every model call of a run and the choice among them."""

    specs: list[ToolSpec]
    client_names: frozenset[str]
    choice: ToolChoice | None = None
    parallel: bool | None = None


def agent_spec(tool: Tool) -> ToolSpec:
    return ToolSpec(tool.name, tool.description, tool.parameters)


def client_specs(options: RunOptions) -> list[ToolSpec]:
    return [
        ToolSpec(
            t.function.name,
            t.function.description or "",
            t.function.parameters if t.function.parameters is not None else dict(NO_PARAMETERS),
            t.function.strict,
        )
        for t in options.tools or ()
    ]


def plan_tools(agent_tools: Sequence[Tool], options: RunOptions) -> ToolPlan:
    """What each model call of the run is offered (see the module docstring for the rules)."""
    own = [agent_spec(t) for t in agent_tools]
    client = client_specs(options)
    names = frozenset(s.name for s in client)
    choice = options.tool_choice
    parallel = options.parallel_tool_calls
    if choice == "none":
        # No tool at all, the agent's included: the client asked for an answer (a client that sees
        # the agent's tool activity may take it for a call it did not allow). Every tool stays offered,
        # so that a replayed history of calls to them stays valid where the provider wants the tools
        # of the calls it sees (Anthropic).
        return ToolPlan(own + client, names, "none", parallel)
    if not client:
        # Nothing of the client's to choose among: the agent's tools as always.
        return ToolPlan(own, names, None, parallel)
    if isinstance(choice, NamedToolChoice):
        return ToolPlan(client, names, ForcedTool(choice.function.name), parallel)
    if choice == "required":
        return ToolPlan(client, names, "required", parallel)
    return ToolPlan(own + client, names, choice, parallel)


def collision(agent_tools: Sequence[Tool], options: RunOptions, api: str = "chat.completions") -> ErrorInfo | None:
    """A client function named like one of the agent's own tools (the gateway checks the names it
    knows; a runner may know more, such as every tool of an MCP server): a 400 naming it, where the
    request's API has the name (chat: ``tools[i].function.name``; Responses: ``tools[i].name``)."""
    own = {t.name for t in agent_tools}
    field = "name" if api == "responses" else "function.name"
    for i, tool in enumerate(options.tools or ()):
        if tool.function.name in own:
            return ErrorInfo(
                status=400,
                type="invalid_request_error",
                code="tool_name_conflict",
                param=f"tools[{i}].{field}",
                message=f"The function name {tool.function.name!r} is one of the agent's own tools; "
                "rename your function.",
            )
    return None


def server_label(tool: Tool | None) -> str:
    """Where an agent tool runs, as clients are told: a tool's own ``server_label`` (MCP tools name
    their server), else the built-ins' label."""
    label = getattr(tool, "server_label", None)
    return label if isinstance(label, str) and label else BUILTIN_LABEL
