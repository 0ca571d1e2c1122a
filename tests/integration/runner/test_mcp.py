"""The runner's MCP client against a real MCP server (the SDK's server side over streamable HTTP, on a
thread of its own): listing, calling, isError, a server that is down, a timeout, long names, header
substitution, session reuse and re-establishment, cancellation — then whole runs through the agent loop."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import RUN_EVENT, CancelRun, Subjects
from contracts.events import TERMINAL_EVENT_TYPES
from contracts.mcp import FUNCTION_NAME_PATTERN, function_name
from runner.app import create_app
from runner.settings import RunnerSettings
from runner.tools import ToolError
from runner.tools.mcp import McpServerConfig, McpTimeout, McpTool, McpToolbox, McpUnavailable, load_mcp_servers
from runner.tools.mcp import session as mcp_session
from servicekit.natsio import flush_in_order
from tests.integration.runner.conftest import Harness, make_request
from tests.support.mcp_server import LONG_TOOL_NAME, McpTestServer

pytestmark = pytest.mark.integration

SERVER = "tools"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4737"


@pytest.fixture
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toolbox_for(url: str, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None, **kw: Any) -> McpToolbox:
    config = McpServerConfig(name=SERVER, url=url, headers=headers or {}, timeout_s=timeout_s)
    return McpToolbox({SERVER: config}, **kw)


@pytest.fixture
async def toolbox(mcp_server: McpTestServer) -> AsyncIterator[McpToolbox]:
    box = toolbox_for(mcp_server.url)
    yield box
    await box.close()


async def eventually(probe: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def by_name(tools: list[Any]) -> dict[str, McpTool]:
    return {t.name: t for t in tools}


async def test_every_tool_of_a_server_is_listed_under_its_model_name(toolbox: McpToolbox) -> None:
    resolved = await toolbox.resolve([f"mcp:{SERVER}"], "u1")
    assert resolved.notes == []
    tools = by_name(resolved.tools)
    long_name = function_name(LONG_TOOL_NAME, SERVER)
    assert set(tools) == {"add_mcp_tools", "fail_mcp_tools", "sleep_mcp_tools", "echo_header_mcp_tools", long_name}
    for name, tool in tools.items():
        assert FUNCTION_NAME_PATTERN.match(name), name
        assert tool.server_label == SERVER
        assert tool.parameters["type"] == "object"
    add = tools["add_mcp_tools"]
    assert add.description == "Add two numbers and return their sum."
    assert set(add.parameters["properties"]) == {"a", "b"}
    # Shortened with a stable hash, the server's suffix kept.
    assert len(long_name) == 64 and long_name.endswith("_mcp_tools") and long_name.startswith("lookup_customer")


async def test_one_tool_is_selected_by_its_mcp_name_or_its_model_name(toolbox: McpToolbox) -> None:
    long_name = function_name(LONG_TOOL_NAME, SERVER)
    resolved = await toolbox.resolve(["add_mcp_tools", f"{LONG_TOOL_NAME}_mcp_tools", "calculator"], "u1")
    assert sorted(t.name for t in resolved.tools) == sorted(["add_mcp_tools", long_name])
    resolved = await toolbox.resolve([long_name], "u1")
    assert [t.name for t in resolved.tools] == [long_name]
    assert "Ada Lovelace" in await resolved.tools[0].call({"reference": "X-1"})


async def test_a_call_returns_the_servers_text_and_structured_content(toolbox: McpToolbox) -> None:
    add = by_name((await toolbox.resolve([f"mcp:{SERVER}"], "u1")).tools)["add_mcp_tools"]
    out = await add.call({"a": 2, "b": 3.5})
    assert json.loads(out) == {"sum": 5.5}


async def test_an_is_error_result_is_a_tool_error(toolbox: McpToolbox) -> None:
    fail = by_name((await toolbox.resolve(["fail_mcp_tools"], "u1")).tools)["fail_mcp_tools"]
    with pytest.raises(ToolError, match="refused on purpose: because"):
        await fail.call({"reason": "because"})


async def test_a_server_that_is_down_gives_a_note_and_no_tools() -> None:
    box = toolbox_for(f"http://127.0.0.1:{free_port()}/mcp", timeout_s=3)
    try:
        started = time.monotonic()
        resolved = await box.resolve([f"mcp:{SERVER}", "add_mcp_tools"], "u1")
        assert resolved.tools == []
        assert len(resolved.notes) == 1
        assert "MCP server 'tools' cannot be reached" in resolved.notes[0]
        assert "unavailable" in resolved.notes[0]
        # Remembered for a few seconds: the next run hears it at once.
        resolved = await box.resolve([f"mcp:{SERVER}"], "u2")
        assert resolved.notes and time.monotonic() - started < 3
        assert box.announce() == {SERVER: None}
    finally:
        await box.close()


async def test_a_slow_tool_hits_the_servers_timeout_and_is_cancelled_there(mcp_server: McpTestServer) -> None:
    box = toolbox_for(mcp_server.url, timeout_s=0.5)
    try:
        sleep = by_name((await box.resolve(["sleep_mcp_tools"], "u1")).tools)["sleep_mcp_tools"]
        started = time.monotonic()
        with pytest.raises(McpTimeout, match=r"did not answer within 0\.5 s"):
            await sleep.call({"seconds": 10})
        assert time.monotonic() - started < 3
        await eventually(lambda: mcp_server.observed.sleeps_cancelled == 1)
        # The session is still good for the next call.
        add = by_name((await box.resolve(["add_mcp_tools"], "u1")).tools)["add_mcp_tools"]
        assert json.loads(await add.call({"a": 1, "b": 1})) == {"sum": 2}
        assert box.pool.opened == 1
    finally:
        await box.close()


async def test_cancelling_the_caller_cancels_the_call_at_the_server(
    toolbox: McpToolbox, mcp_server: McpTestServer
) -> None:
    sleep = by_name((await toolbox.resolve(["sleep_mcp_tools"], "u1")).tools)["sleep_mcp_tools"]
    task = asyncio.create_task(sleep.call({"seconds": 30}))
    await eventually(lambda: mcp_server.observed.sleeps_started == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: mcp_server.observed.sleeps_cancelled == 1)


async def test_headers_carry_the_user_id_and_environment_variables(mcp_server: McpTestServer) -> None:
    spec = json.dumps(
        {SERVER: {"url": mcp_server.url, "headers": {"X-User": "user-{{user_id}}", "X-Key": "Bearer ${MCP_KEY}"}}}
    )
    box = McpToolbox(load_mcp_servers(spec, "", {"MCP_KEY": "s3cret"}))
    try:
        for user in ("alice", "bob"):
            echo = by_name((await box.resolve(["echo_header_mcp_tools"], user)).tools)["echo_header_mcp_tools"]
            assert await echo.call({"name": "X-User"}) == f"user-{user}"
            assert await echo.call({"name": "X-Key"}) == "Bearer s3cret"
        # Headers naming the user: a session (and a tool list) per user; not announced.
        assert box.pool.opened == 2
        assert box.announce() == {SERVER: None}
    finally:
        await box.close()


async def test_sessions_and_tool_lists_are_reused_across_runs(toolbox: McpToolbox, mcp_server: McpTestServer) -> None:
    for _ in range(3):
        add = by_name((await toolbox.resolve([f"mcp:{SERVER}"], "u1")).tools)["add_mcp_tools"]
        await add.call({"a": 1, "b": 2})
    assert toolbox.pool.opened == 1
    assert mcp_server.observed.calls == ["add", "add", "add"]
    assert toolbox.announce() == {SERVER: sorted(["add", "fail", "sleep", "echo_header", LONG_TOOL_NAME])}


async def test_a_lost_session_is_reestablished_for_the_next_call() -> None:
    port = free_port()
    server = McpTestServer(port=port).start()
    box = toolbox_for(server.url, timeout_s=3, tools_ttl_s=0.05)
    try:
        add = by_name((await box.resolve(["add_mcp_tools"], "u1")).tools)["add_mcp_tools"]
        assert json.loads(await add.call({"a": 1, "b": 2})) == {"sum": 3}
        server.stop()
        with pytest.raises(McpUnavailable):
            await add.call({"a": 1, "b": 2})
        server = McpTestServer(port=port).start()
        await asyncio.sleep(0.06)  # past the tool list's TTL (0.05 s), so the next run lists again
        add = by_name((await box.resolve(["add_mcp_tools"], "u1")).tools)["add_mcp_tools"]
        assert json.loads(await add.call({"a": 2, "b": 2})) == {"sum": 4}
        assert box.pool.opened == 2
    finally:
        await box.close()
        server.stop()


# --- whole runs through the agent loop --------------------------------------------------------------
@pytest.fixture
def runner_settings(nats_url: str, namespace: str, mcp_server: McpTestServer) -> RunnerSettings:
    down = f"http://127.0.0.1:{free_port()}/mcp"
    servers = {SERVER: {"url": mcp_server.url, "timeout_s": 2}, "down": {"url": down, "timeout_s": 2}}
    return RunnerSettings(
        nats_url=nats_url,
        nats_namespace=namespace,
        health_port=0,
        heartbeat_s=0.3,
        drain_s=2.0,
        concurrency=8,
        mcp_servers=json.dumps(servers),
    )


async def test_an_agent_uses_an_mcp_tool_in_a_run(harness: Harness) -> None:
    await harness.script(
        "m-mcp",
        [
            {"tool_calls": [{"name": "add_mcp_tools", "arguments": json.dumps({"a": 17, "b": 25})}]},
            {"text": "17 + 25 = 42."},
        ],
    )
    got = await harness.run(make_request("m-mcp", "add 17 and 25", tools=[f"mcp:{SERVER}", "calculator"]))
    assert got.types[-1] == "completed"
    [started] = got.of("tool_call_started")
    assert (started.name, started.server_label) == ("add_mcp_tools", SERVER)
    [result] = got.of("tool_result")
    assert not result.is_error and json.loads(result.output) == {"sum": 42}
    first, second = await harness.requests("m-mcp")
    offered = {t["function"]["name"] for t in first["params"]["tools"]}
    assert {"add_mcp_tools", "calculator", function_name(LONG_TOOL_NAME, SERVER)} <= offered
    assert any(m.get("role") == "tool" and '"sum"' in str(m.get("content")) for m in second["messages"])


async def test_a_server_that_is_down_is_a_note_to_the_model_and_the_rest_works(harness: Harness) -> None:
    await harness.script(
        "m-down",
        [
            {"tool_calls": [{"name": "fail_mcp_tools", "arguments": json.dumps({"reason": "test"})}]},
            {"text": "It failed."},
        ],
    )
    got = await harness.run(make_request("m-down", "go", tools=["mcp:down", "fail_mcp_tools"]))
    assert got.types[-1] == "completed"
    [result] = got.of("tool_result")
    assert result.is_error and "refused on purpose: test" in result.output
    first = (await harness.requests("m-down"))[0]
    system = first["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.")
    assert "MCP server 'down' cannot be reached" in system["content"]
    assert [t["function"]["name"] for t in first["params"]["tools"]] == ["fail_mcp_tools"]


async def test_an_mcp_call_is_an_execute_tool_span_of_the_runs_trace(
    nats_client: Any, namespace: str, runner_settings: RunnerSettings, runner_env: dict[str, str], fake_llm: Any
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with create_app(runner_settings, env=runner_env, tracer_provider=provider) as app:
        h = Harness(nc=nats_client, subjects=Subjects(namespace), fake=fake_llm, app=app)
        await h.script(
            "m-mcp-trace",
            [{"tool_calls": [{"name": "add_mcp_tools", "arguments": '{"a": 1, "b": 2}'}]}, {"text": "3."}],
        )
        req = make_request("m-mcp-trace", "1+2", tools=[f"mcp:{SERVER}"])
        done = asyncio.Event()

        async def on_event(msg: Any) -> None:
            if RUN_EVENT.validate_json(msg.data).type in TERMINAL_EVENT_TYPES:
                done.set()

        sub = await h.nc.subscribe(h.subjects.run_events(req.run_id), cb=on_event)
        await flush_in_order(h.nc)
        # As the gateway sends it: the request's trace context in the headers.
        await h.nc.jetstream().publish(
            h.subjects.run_request,
            req.model_dump_json().encode(),
            headers={"Nats-Msg-Id": req.run_id, "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        await asyncio.wait_for(done.wait(), 10)
        await sub.unsubscribe()
        await eventually(lambda: any(s.name.startswith("invoke_agent") for s in exporter.get_finished_spans()))
    provider.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)}
    assert {"invoke_agent Helper", "resolve_tools", "execute_tool add_mcp_tools"} <= set(spans)
    tool = spans["execute_tool add_mcp_tools"]
    attributes = dict(tool.attributes or {})
    assert attributes["gen_ai.tool.name"] == "add_mcp_tools"
    assert attributes["gen_ai.tool.type"] == "extension"
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["mcp.server.name"] == SERVER
    assert attributes["server.address"] == "127.0.0.1"


async def test_cancelling_a_run_cancels_its_mcp_call_at_the_server(harness: Harness, mcp_server: McpTestServer) -> None:
    await harness.script(
        "m-mcp-cancel", [{"tool_calls": [{"name": "sleep_mcp_tools", "arguments": '{"seconds": 30}'}]}, {"text": "-"}]
    )
    req = make_request("m-mcp-cancel", "sleep", tools=["sleep_mcp_tools"])
    got, done, (subs, closed) = await harness.start(req)
    await eventually(lambda: mcp_server.observed.sleeps_started == 1)
    await harness.nc.publish(
        harness.subjects.run_cancel(req.run_id), CancelRun(run_id=req.run_id).model_dump_json().encode()
    )
    await asyncio.wait_for(done.wait(), 10)
    assert (got.events[-1].type, got.events[-1].error.status) == ("failed", 499)
    # The server heard the cancel well before the server's timeout (2 s) would have ended the call.
    await eventually(lambda: mcp_server.observed.sleeps_cancelled == 1, timeout=1.5)
    await asyncio.wait_for(closed.wait(), 10)
    assert got.closed[0].status == "cancelled"
    for s in subs:
        await s.unsubscribe()


async def test_a_session_the_server_forgot_is_replaced_and_the_call_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Servers before protocol 2026-07-28 keep sessions: after a restart they answer 404 for the old one.
    monkeypatch.setattr(mcp_session, "CONNECT_MODE", "legacy")
    port = free_port()
    server = McpTestServer(port=port).start()
    box = toolbox_for(server.url, timeout_s=3)
    try:
        add = by_name((await box.resolve(["add_mcp_tools"], "u1")).tools)["add_mcp_tools"]
        assert json.loads(await add.call({"a": 1, "b": 2})) == {"sum": 3}
        server.stop()
        server = McpTestServer(port=port).start()
        assert json.loads(await add.call({"a": 2, "b": 2})) == {"sum": 4}  # no error: sent again
        assert box.pool.opened == 2
        assert server.observed.calls == ["add"]  # the restarted server ran it once
    finally:
        await box.close()
        server.stop()


async def test_per_user_sessions_are_capped_the_least_recently_used_closed(mcp_server: McpTestServer) -> None:
    config = McpServerConfig(name=SERVER, url=mcp_server.url, headers={"X-User": "{{user_id}}"}, timeout_s=5)
    box = McpToolbox({SERVER: config})
    box.pool._max_user_sessions = 2
    try:
        for user in ("u1", "u2", "u1", "u3"):
            echo = by_name((await box.resolve(["echo_header_mcp_tools"], user)).tools)["echo_header_mcp_tools"]
            assert await echo.call({"name": "X-User"}) == user
        assert box.pool.opened == 3
        kept = sorted(k[1] for k in box.pool._sessions)
        assert kept == ["u1", "u3"]  # u2 was used least recently
        assert sorted(k[1] for k in box.pool._listings) == ["u1", "u3"]
    finally:
        await box.close()
