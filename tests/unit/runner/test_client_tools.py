"""Client functions in the agent loop and the adapters: offered, chosen, ended on, mapped, refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import AgentSnapshot, Caller, ChatMessage, RunOptions, RunRequest, TokenUsage
from contracts.runs import ClientTool, FunctionCall, FunctionDefinition, NamedToolChoice
from runner.agent import SKIPPED, AgentRun, RunConfig
from runner.clienttools import collision, plan_tools
from runner.connections import Connection
from runner.providers import CallSpec, FinishChunk, ForcedTool, TextChunk, ToolCallChunk, ToolSpec, UsageChunk
from runner.providers.anthropic_provider import (
    response_format_problem,
    to_anthropic_output_config,
    to_anthropic_tool_choice,
    to_anthropic_tools,
)
from runner.providers.openai_provider import OpenAIProvider
from runner.tools import builtin_registry
from tests.unit.runner.test_agent_loop import MemoryPorts, ScriptedProvider

pytestmark = pytest.mark.unit

WEATHER = ClientTool(
    function=FunctionDefinition(
        name="get_weather",
        description="Weather of a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        strict=True,
    )
)
USAGE = TokenUsage(input_tokens=5, output_tokens=3)


def _request(options: RunOptions, tools: list[str]) -> RunRequest:
    return RunRequest(
        run_id="run1",
        caller=Caller(user_id="u"),
        agent=AgentSnapshot(id="a", name="A", provider="openai", model="m", tools=tools),
        messages=[ChatMessage(role="user", content="hi")],
        options=options,
        deadline=datetime.now(UTC) + timedelta(minutes=1),
    )


def _run(
    provider: ScriptedProvider, ports: MemoryPorts, options: RunOptions, tools: list[str], kind: str = "openai"
) -> AgentRun:
    return AgentRun(
        _request(options, tools),
        connection=Connection(kind, kind, None, "k"),
        provider=provider,
        tools=builtin_registry().resolve(tools),
        ports=ports,
        config=RunConfig(heartbeat_s=60),
    )


async def test_a_client_call_ends_the_run_after_that_model_call() -> None:
    provider = ScriptedProvider(
        [
            [
                ToolCallChunk(0, '{"city":"Paris"}', id="c1", name="get_weather"),
                FinishChunk("tool_calls"),
                UsageChunk(USAGE),
            ]
        ]
    )
    ports = MemoryPorts()
    run = _run(provider, ports, RunOptions(tools=[WEATHER]), ["calculator"])
    assert await run.execute() == "completed"
    assert [e.type for e in ports.events] == [  # type: ignore[attr-defined]
        "started",
        "tool_call_started",
        "tool_call_arguments_delta",
        "usage",
        "completed",
    ]
    started = ports.events[1]
    assert started.client is True and started.name == "get_weather"  # type: ignore[attr-defined]
    assert ports.events[-1].finish_reason == "tool_calls"  # type: ignore[attr-defined]
    assert len(provider.calls) == 1 and len(ports.usage) == 1
    # Offered beside the agent's own tool, with the client's strict flag.
    offered = provider.calls[0].tools
    assert [t.name for t in offered] == ["calculator", "get_weather"]
    assert offered[1].strict is True


async def test_an_agent_tool_in_the_same_turn_as_a_client_call_is_not_run() -> None:
    provider = ScriptedProvider(
        [
            [
                ToolCallChunk(0, '{"expression":"2+2"}', id="a1", name="calculator"),
                ToolCallChunk(1, "{}", id="c1", name="get_weather"),
                FinishChunk("tool_calls"),
                UsageChunk(USAGE),
            ]
        ]
    )
    ports = MemoryPorts()
    assert await _run(provider, ports, RunOptions(tools=[WEATHER]), ["calculator"]).execute() == "completed"
    starts = [e for e in ports.events if e.type == "tool_call_started"]  # type: ignore[attr-defined]
    assert [(s.index, s.name, s.client, s.server_label) for s in starts] == [  # type: ignore[attr-defined]
        (0, "calculator", False, "switchboard"),
        (1, "get_weather", True, "switchboard"),
    ]
    (result,) = [e for e in ports.events if e.type == "tool_result"]  # type: ignore[attr-defined]
    assert result.index == 0 and result.is_error and result.output == SKIPPED  # type: ignore[attr-defined]
    assert ports.events[-1].finish_reason == "tool_calls"  # type: ignore[attr-defined]
    assert len(provider.calls) == 1


async def test_the_client_replays_its_call_and_result_and_the_run_goes_on() -> None:
    provider = ScriptedProvider([[TextChunk("Sunny in Paris."), FinishChunk("stop"), UsageChunk(USAGE)]])
    ports = MemoryPorts()
    request = _request(RunOptions(tools=[WEATHER]), [])
    request = request.model_copy(
        update={
            "messages": [
                ChatMessage(role="user", content="Weather in Paris?"),
                ChatMessage(
                    role="assistant",
                    tool_calls=[{"id": "c1", "function": FunctionCall(name="get_weather", arguments="{}")}],  # type: ignore[list-item]
                ),
                ChatMessage(role="tool", tool_call_id="c1", content="sunny"),
            ]
        }
    )
    run = AgentRun(
        request,
        connection=Connection("openai", "openai", None, "k"),
        provider=provider,
        tools=[],
        ports=ports,
        config=RunConfig(heartbeat_s=60),
    )
    assert await run.execute() == "completed"
    assert ports.events[-1].finish_reason == "stop"  # type: ignore[attr-defined]
    assert [m.role for m in provider.calls[0].messages] == ["user", "assistant", "tool"]


async def test_a_client_function_named_like_an_agent_tool_is_refused_before_the_run_starts() -> None:
    clash = ClientTool(function=FunctionDefinition(name="calculator"))
    provider = ScriptedProvider([])
    ports = MemoryPorts()
    assert await _run(provider, ports, RunOptions(tools=[WEATHER, clash]), ["calculator"]).execute() == "failed"
    assert [e.type for e in ports.events] == ["failed"]  # type: ignore[attr-defined]
    error = ports.events[0].error  # type: ignore[attr-defined]
    assert error.status == 400 and error.param == "tools[1].function.name"
    assert provider.calls == [] and ports.closed[0].calls == 0


async def test_json_object_on_anthropic_is_refused_with_param() -> None:
    ports = MemoryPorts()
    run = _run(ScriptedProvider([]), ports, RunOptions(response_format={"type": "json_object"}), [], "anthropic")
    assert await run.execute() == "failed"
    error = ports.events[0].error  # type: ignore[attr-defined]
    assert error.status == 400 and error.param == "response_format"


@pytest.mark.parametrize(
    ("choice", "agent_tools", "offered", "sent"),
    [
        (None, ["calculator"], ["calculator", "get_weather"], None),
        ("auto", ["calculator"], ["calculator", "get_weather"], "auto"),
        ("none", ["calculator"], ["calculator", "get_weather"], "none"),
        ("none", [], ["get_weather"], "none"),
        ("required", ["calculator"], ["get_weather"], "required"),
        (
            NamedToolChoice(function=FunctionCall(name="get_weather")),
            ["calculator"],
            ["get_weather"],
            ForcedTool("get_weather"),
        ),
    ],
)
def test_tool_choice_is_about_the_clients_functions(
    choice: Any, agent_tools: list[str], offered: list[str], sent: Any
) -> None:
    plan = plan_tools(builtin_registry().resolve(agent_tools), RunOptions(tools=[WEATHER], tool_choice=choice))
    assert [s.name for s in plan.specs] == offered
    assert plan.choice == sent
    assert plan.client_names == {"get_weather"}


def test_no_client_functions_offers_the_agents_tools_as_always() -> None:
    plan = plan_tools(builtin_registry().resolve(["calculator"]), RunOptions())
    assert [s.name for s in plan.specs] == ["calculator"] and plan.choice is None


def _call(**kw: Any) -> CallSpec:
    tools = [ToolSpec("get_weather", "", {"type": "object"}, True), ToolSpec("calculator", "Maths", {"type": "object"})]
    return CallSpec(model="m", messages=[ChatMessage(role="user", content="q")], tools=tools, **kw)


def test_openai_body_carries_the_choice_parallel_flag_and_response_format() -> None:
    provider = OpenAIProvider(Connection("openai", "openai", "http://127.0.0.1:1/v1", "k"), 5)
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}}
    body = provider.request_body(
        _call(tool_choice=ForcedTool("get_weather"), parallel_tool_calls=False, response_format=rf)
    )
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": True},
    }
    assert body["tools"][1]["function"]["description"] == "Maths" and "strict" not in body["tools"][1]["function"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == rf
    # Without tools, neither tool_choice nor parallel_tool_calls is sent (OpenAI refuses them).
    bare = provider.request_body(CallSpec(model="m", messages=[], tool_choice="none", parallel_tool_calls=False))
    assert "tool_choice" not in bare and "parallel_tool_calls" not in bare


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (ForcedTool("f"), None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_anthropic_tool_choice(choice: Any, parallel: bool | None, expected: Any) -> None:
    assert to_anthropic_tool_choice(choice, parallel) == expected


def test_anthropic_tools_and_structured_output() -> None:
    assert to_anthropic_tools(_call()) == [
        {"name": "get_weather", "input_schema": {"type": "object"}},
        {"name": "calculator", "description": "Maths", "input_schema": {"type": "object"}},
    ]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert to_anthropic_output_config(rf) == {"format": {"type": "json_schema", "schema": schema}}
    assert to_anthropic_output_config({"type": "text"}) is None
    assert response_format_problem(rf) is None
    assert response_format_problem({"type": "json_object"}) is not None


@pytest.mark.parametrize(
    ("api", "param"), [("chat.completions", "tools[1].function.name"), ("responses", "tools[1].name")]
)
def test_a_client_function_named_like_an_agent_tool_is_refused_where_the_api_names_it(api: str, param: str) -> None:
    """The runner knows names the gateway cannot (every tool of an MCP server): its 400 names the
    field as the request's own API spells it."""
    clash = ClientTool(function=FunctionDefinition(name="add_mcp_tst", parameters={"type": "object"}))
    options = RunOptions(tools=[WEATHER, clash])
    found = collision([_Named("add_mcp_tst")], options, api)  # type: ignore[list-item]
    assert found is not None
    assert (found.status, found.code, found.param) == (400, "tool_name_conflict", param)
    assert collision([_Named("other")], options, api) is None  # type: ignore[list-item]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_none_without_client_functions_lets_the_agent_call_no_tool_either() -> None:
    """A client's ``tool_choice: "none"`` asks for an answer: clients (the Vercel AI SDK) take the
    agent's tool activity for a call they did not allow."""
    plan = plan_tools(builtin_registry().resolve(["calculator"]), RunOptions(tool_choice="none"))
    assert [s.name for s in plan.specs] == ["calculator"] and plan.choice == "none"
