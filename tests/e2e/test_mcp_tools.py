"""Agents using the tools of MCP servers, through the whole stack, with the official openai SDK.

The runner of this module's stack is configured (``RUNNER_MCP_SERVERS``) with the repository's own MCP
server (:mod:`tests.support.mcp_server`, real, over streamable HTTP) under two names — ``tools``, and
``slow`` with a one-second timeout — and with ``down``, where nothing listens.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.mcp import function_name
from devstack.errors import SeedError
from devstack.seed import AdminClient
from tests.e2e.conftest import StackHandle, own_stack
from tests.support.mcp_server import LONG_TOOL_NAME, McpTestServer

pytestmark = pytest.mark.e2e


def agent_activity(delta_or_message: Any) -> list[dict[str, Any]]:
    """The agent's own tool activity in a streamed delta or a message — where the chat route puts it
    (the ``agent_tool_calls`` extension field; ``tool_calls`` is only for the client's functions)."""
    return list((delta_or_message.model_extra or {}).get("agent_tool_calls") or [])


def streamed_activity(chunks: list[Any]) -> list[dict[str, Any]]:
    """The agent's tool calls of a stream, each fragment merged into its call (by ``index``)."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for fragment in agent_activity(choice.delta):
                call = calls.setdefault(fragment["index"], {"arguments": ""})
                for key, value in fragment.items():
                    call[key] = call[key] + value if key == "arguments" else value
    return [calls[i] for i in sorted(calls)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def mcp_stack(
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    postgres_url: str,
    redis_url: str,
    mcp_server: McpTestServer,
) -> Iterator[StackHandle]:
    servers = {
        "tools": {"url": mcp_server.url, "headers": {"X-Caller": "{{user_id}}"}, "timeout_s": 10},
        "slow": {"url": mcp_server.url, "timeout_s": 1},
        "down": {"url": f"http://127.0.0.1:{free_port()}/mcp", "timeout_s": 2},
    }
    runner_env = {"RUNNER_MCP_SERVERS": json.dumps(servers)}
    stack_dir = tmp_path_factory.mktemp("mcp-stack")
    with own_stack(stack_dir, nats_url, postgres_url, redis_url, service_env={"runner": runner_env}) as handle:
        yield handle


def make_agent(stack: StackHandle, tools: list[str]) -> Any:
    """An OpenAI-provider agent with ``tools``, on a fake model name of its own."""
    return stack.agent("openai", tools=tools)


def tool_turns(name: str, arguments: dict[str, Any], answer: str) -> list[dict[str, Any]]:
    return [
        {
            "tool_calls": [{"name": name, "arguments": json.dumps(arguments)}],
            "usage": {"prompt_tokens": 40, "output_tokens": 8},
        },
        {"text": answer, "usage": {"prompt_tokens": 60, "output_tokens": 6}},
    ]


async def test_an_agent_answers_with_an_mcp_tool_streamed(mcp_stack: StackHandle, mcp_server: McpTestServer) -> None:
    agent = make_agent(mcp_stack, ["mcp:tools"])
    await mcp_stack.fake.script(agent.model, tool_turns("add_mcp_tools", {"a": 17, "b": 25}, "17 + 25 = 42."))
    async with mcp_stack.client() as client:
        stream = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "What is 17 + 25?"}], stream=True
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("17 + 25 = 42.")
    assert all(not c.choices or not c.choices[0].delta.tool_calls for c in chunks)  # nothing for the client to run
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    [call] = streamed_activity(chunks)
    assert (call["name"], call["server_label"]) == ("add_mcp_tools", "tools")
    assert json.loads(call["arguments"]) == {"a": 17, "b": 25}
    assert json.loads(call["output"]) == {"sum": 42} and call["is_error"] is False
    # The model's second call carried the MCP server's answer.
    requests = await mcp_stack.fake.requests(agent.model)
    assert '\\"sum\\"' in json.dumps(requests[1]["messages"]) or '"sum"' in json.dumps(requests[1]["messages"])


async def test_an_agent_answers_with_an_mcp_tool_whole(mcp_stack: StackHandle) -> None:
    agent = make_agent(mcp_stack, ["echo_header_mcp_tools"])
    await mcp_stack.fake.script(agent.model, tool_turns("echo_header_mcp_tools", {"name": "X-Caller"}, "Done."))
    async with mcp_stack.client() as client:
        completion = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "Who am I?"}]
        )
    message = completion.choices[0].message
    assert message.content is not None and message.content.endswith("Done.")
    assert message.tool_calls is None and completion.choices[0].finish_reason == "stop"
    [call] = agent_activity(message)
    assert (call["name"], call["server_label"]) == ("echo_header_mcp_tools", "tools")
    # The server got the caller's id in the header the configuration names with {{user_id}}.
    assert call["output"] == mcp_stack.seeded.user_id and call["is_error"] is False


async def test_a_long_tool_name_is_shortened_for_the_model(mcp_stack: StackHandle) -> None:
    short = function_name(LONG_TOOL_NAME, "tools")
    agent = make_agent(mcp_stack, [f"{LONG_TOOL_NAME}_mcp_tools"])
    await mcp_stack.fake.script(agent.model, tool_turns(short, {"reference": "R-7"}, "Found."))
    async with mcp_stack.client() as client:
        completion = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "R-7?"}]
        )
    [call] = agent_activity(completion.choices[0].message)
    assert call["name"] == short and len(short) <= 64
    assert call["output"] == "customer R-7: Ada Lovelace"
    offered = (await mcp_stack.fake.requests(agent.model))[0]["params"]["tools"]
    assert [t["function"]["name"] for t in offered] == [short]


async def test_an_is_error_result_goes_back_to_the_model(mcp_stack: StackHandle) -> None:
    agent = make_agent(mcp_stack, ["fail_mcp_tools"])
    await mcp_stack.fake.script(agent.model, tool_turns("fail_mcp_tools", {"reason": "e2e"}, "The tool failed."))
    async with mcp_stack.client() as client:
        completion = await client.chat.completions.create(model=agent.id, messages=[{"role": "user", "content": "go"}])
    assert completion.choices[0].message.content.endswith("The tool failed.")  # type: ignore[union-attr]
    [call] = agent_activity(completion.choices[0].message)
    assert call["is_error"] is True and "refused on purpose: e2e" in call["output"]
    second = (await mcp_stack.fake.requests(agent.model))[1]
    assert "refused on purpose: e2e" in json.dumps(second["messages"])


async def test_a_slow_tool_hits_its_timeout_and_the_run_goes_on(
    mcp_stack: StackHandle, mcp_server: McpTestServer
) -> None:
    agent = make_agent(mcp_stack, ["mcp:slow"])
    await mcp_stack.fake.script(agent.model, tool_turns("sleep_mcp_slow", {"seconds": 30}, "Too slow."))
    started = time.monotonic()
    async with mcp_stack.client() as client:
        stream = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "sleep"}], stream=True
        )
        chunks = [c async for c in stream]
    assert time.monotonic() - started < 15
    [call] = streamed_activity(chunks)
    assert call["server_label"] == "slow" and call["is_error"] is True
    assert "did not answer within 1 s" in call["output"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith("Too slow.")


async def test_a_server_that_is_down_leaves_the_rest_of_the_agent_working(mcp_stack: StackHandle) -> None:
    agent = make_agent(mcp_stack, ["mcp:down", "add_mcp_tools"])
    await mcp_stack.fake.script(agent.model, tool_turns("add_mcp_tools", {"a": 1, "b": 2}, "1 + 2 = 3."))
    async with mcp_stack.client() as client:
        completion = await client.chat.completions.create(model=agent.id, messages=[{"role": "user", "content": "1+2"}])
    assert completion.choices[0].message.content.endswith("1 + 2 = 3.")  # type: ignore[union-attr]
    [call] = agent_activity(completion.choices[0].message)
    assert call["name"] == "add_mcp_tools" and call["is_error"] is False
    first = (await mcp_stack.fake.requests(agent.model))[0]
    system = first["messages"][0]
    assert system["role"] == "system" and "MCP server 'down' cannot be reached" in system["content"]
    assert [t["function"]["name"] for t in first["params"]["tools"]] == ["add_mcp_tools"]


def refused(admin: AdminClient, body: dict[str, Any], expect: str, within_s: float = 15.0) -> str:
    """The 400 creating ``body`` gets once it names ``expect``. Until the catalog has heard the runner it
    checks nothing (and a server's tools only once the runner has listed them): accepted meanwhile."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            admin.create_agent(**body)
        except SeedError as exc:
            if expect in str(exc):
                return str(exc)
        assert time.monotonic() < deadline, f"never refused with {expect!r}"
        time.sleep(0.5)


def test_the_catalog_refuses_an_unknown_mcp_server_or_tool(mcp_stack: StackHandle) -> None:
    body = {
        "name": f"agent {secrets.token_hex(3)}",
        "provider": "openai",
        "model": "m",
        "owner_id": mcp_stack.seeded.user_id,
        "tools": ["mcp:tools", "mcp:gihtub", "nope_mcp_slow", "add_mcp_slow"],
    }
    message = refused(mcp_stack.admin, body, "unknown tool 'nope_mcp_slow'")
    assert "→ 400" in message
    assert "tools[1]: unknown MCP server 'gihtub' (known: down, slow, tools)" in message
    assert "tools[2]: unknown tool 'nope_mcp_slow' of MCP server 'slow' (known: add_mcp_slow, " in message
    assert "tools[0]" not in message and "tools[3]" not in message
    assert json.loads(message.split("→ 400: ", 1)[1])["error"]["param"] == "tools[1]"
