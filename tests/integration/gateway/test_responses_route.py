"""``/v1/responses`` through a real gateway and NATS with scripted runs: failures mid-stream, client
functions beside agent tools, a tool error, a cut-off answer, and the permission and balance errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from contracts import (
    RunCompleted,
    RunFailed,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    ToolResult,
)
from contracts.errors import ErrorInfo
from gateway.responses.service import response_id_of
from tests.e2e.responses_checks import check_response, check_stream
from tests.support.openapi_schema import validate

from .conftest import BROKE_KEY, KEY, NO_USE_KEY, RunContext, Stack
from .test_chat_stream import USAGE, fail_midway

pytestmark = pytest.mark.integration


async def tools_of_both_kinds(run: RunContext) -> None:
    await run.start()
    await run.emit(ToolCallStarted, index=0, call_id="call_a", name="lookup", server_label="docs")
    await run.emit(ToolCallArgumentsDelta, index=0, delta='{"q":1}')
    await run.emit(ToolResult, index=0, call_id="call_a", name="lookup", output="no such page", is_error=True)
    await run.emit(TextDelta, delta="Let me ask you.")
    await run.emit(ToolCallStarted, index=1, call_id="call_b", name="get_weather", client=True)
    await run.emit(ToolCallArgumentsDelta, index=1, delta='{"city":"Paris"}')
    await run.emit(RunCompleted, finish_reason="tool_calls", usage=USAGE)


async def cut_off(run: RunContext) -> None:
    await run.start()
    await run.emit(TextDelta, delta="and so")
    await run.emit(RunCompleted, finish_reason="length", usage=USAGE)


async def sse_events(stack: Stack, body: dict[str, Any], key: str = KEY) -> list[dict[str, Any]]:
    """The stream's events as sent, with each ``event:`` line checked against the data's ``type``."""
    events: list[dict[str, Any]] = []
    async with (
        stack.http() as http,
        http.stream(
            "POST", "/v1/responses", json={**body, "stream": True}, headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        kind = None
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                assert data["type"] == kind
                events.append(data)
    return events


async def test_failure_mid_stream_is_an_error_event_then_failed(stack: Stack) -> None:
    stack.fakes.agent("agent_fail", fail_midway)
    events = await sse_events(stack, {"model": "agent_fail", "input": "hi"})
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "The provider failed."
    check_stream(events)
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"
    # The SDK raises on the error event.
    async with stack.client() as client:
        with pytest.raises(openai.APIError, match="The provider failed"):
            async for _ in await client.responses.create(model="agent_fail", input="hi", stream=True):
                pass
        # Not streamed: the run's error status.
        with pytest.raises(openai.APIStatusError) as err:
            await client.responses.create(model="agent_fail", input="hi")
    assert err.value.status_code == 502


async def test_client_function_and_failed_agent_tool(stack: Stack) -> None:
    stack.fakes.agent("agent_tools", tools_of_both_kinds)
    events = await sse_events(
        stack,
        {
            "model": "agent_tools",
            "input": "weather?",
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        },
    )
    check_stream(events)
    kinds = [e["type"] for e in events]
    assert "response.mcp_call.failed" in kinds and "response.function_call_arguments.done" in kinds
    output = events[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["mcp_call", "message", "function_call"]
    mcp, call = output[0], output[2]
    assert mcp["server_label"] == "docs" and mcp["status"] == "failed" and mcp["output"] is None
    assert mcp["error"]["content"][0]["text"] == "no such page"
    assert call == {
        "id": call["id"],
        "type": "function_call",
        "call_id": "call_b",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
        "status": "completed",
    }
    request = stack.fakes.run_requests[-1]
    assert request.api == "responses" and response_id_of(request.run_id) == events[0]["response"]["id"]
    assert request.options.tools is not None and request.options.tools[0].function.name == "get_weather"


async def test_cut_off_answer_is_incomplete(stack: Stack) -> None:
    stack.fakes.agent("agent_cut", cut_off)
    events = await sse_events(stack, {"model": "agent_cut", "input": "go", "max_output_tokens": 2})
    check_stream(events)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    async with stack.client() as client:
        response = await client.responses.create(model="agent_cut", input="go")
    check_response(response.to_dict(mode="json"))
    assert response.status == "incomplete"


@pytest.mark.parametrize(("key", "status", "code"), [(NO_USE_KEY, 403, "access_denied"), (BROKE_KEY, 402, None)])
async def test_permission_and_balance(stack: Stack, key: str, status: int, code: str | None) -> None:
    stack.fakes.agent("agent_x", cut_off)
    async with stack.http() as http:
        r = await http.post(
            "/v1/responses", json={"model": "agent_x", "input": "x"}, headers={"Authorization": f"Bearer {key}"}
        )
    assert r.status_code == status, r.text
    validate("ErrorResponse", r.json())
    if code is not None:
        assert r.json()["error"]["code"] == code
    if key == NO_USE_KEY:  # refused before anything was queued
        assert not any(req.agent.id == "agent_x" for req in stack.fakes.run_requests)


async def test_unauthenticated_routes(stack: Stack) -> None:
    async with stack.http() as http:
        for method, path in (
            ("POST", "/v1/responses"),
            ("GET", "/v1/responses/resp_x"),
            ("DELETE", "/v1/responses/resp_x"),
            ("GET", "/v1/responses/resp_x/input_items"),
            ("POST", "/v1/responses/resp_x/cancel"),
        ):
            r = await http.request(method, path)
            assert r.status_code == 401, (method, path, r.text)
        for response_id in ("resp_missing", "bad%20id", "x" * 300):
            r = await http.get(f"/v1/responses/{response_id}", headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error", r.text


async def test_run_failed_before_stream_keeps_http_status(stack: Stack) -> None:
    async def refuse(run: RunContext) -> None:
        err = ErrorInfo(status=429, type="rate_limit_exceeded", message="Provider busy.", code="rate_limited")
        await run.emit(RunFailed, error=err)

    stack.fakes.agent("agent_busy", refuse)
    async with stack.client() as client:
        with pytest.raises(openai.RateLimitError):
            await client.responses.create(model="agent_busy", input="x", stream=True)


async def test_background_stream_after_its_events_expired(stack: Stack) -> None:
    from tests.e2e.fake import eventually

    async def quick(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="done")
        await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)

    stack.fakes.agent("agent_quick", quick)
    async with stack.client() as client:
        created = await client.responses.create(model="agent_quick", input="x", background=True)
        done = await eventually(lambda: client.responses.retrieve(created.id), lambda r: r.status == "completed")
        assert done.output_text == "done"
        # RUN_EVENTS no longer holds the run (its window passed): a clear 400, the response itself still there.
        await stack.nc.jetstream().purge_stream(
            stack.subjects.run_events_stream, subject=stack.subjects.run_events(created.id)
        )
        with pytest.raises(openai.BadRequestError) as err:
            async for _ in await client.responses.retrieve(created.id, stream=True):
                pass
        assert err.value.body["code"] == "stream_expired"  # type: ignore[index]
        assert (await client.responses.retrieve(created.id)).output_text == "done"


async def test_a_conversation_larger_than_a_run_message_is_413(stack: Stack) -> None:
    stack.fakes.agent("agent_big", cut_off)
    big = "word " * 300_000  # 1.5 MB: under the body limit, over a NATS message
    async with stack.http() as http:
        r = await http.post(
            "/v1/responses", json={"model": "agent_big", "input": big}, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["param"] == "input" and r.json()["error"]["code"] == "request_too_large"
    assert not any(req.agent.id == "agent_big" for req in stack.fakes.run_requests)


async def test_store_unavailable(stack: Stack) -> None:
    """Without its store, a background response is a 503 and its run is cancelled (nothing half
    exists); an ordinary response is still answered."""

    async def slow(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="ok")
        await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)

    stack.fakes.agent("agent_nostore", slow)
    await stack.nc.jetstream().delete_object_store(stack.subjects.responses_bucket)
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError) as err:
            await client.responses.create(model="agent_nostore", input="x", background=True)
        assert err.value.status_code == 503
        background_run = stack.fakes.run_requests[-1].run_id
        await asyncio.wait_for(stack.fakes.cancelled.wait(), 5)
        assert [c.run_id for c in stack.fakes.cancels] == [background_run]
        answered = await client.responses.create(model="agent_nostore", input="x")
        assert answered.output_text == "ok"


async def test_unstored_response_leaves_a_marker_the_store_reads(stack: Stack) -> None:
    """A ``store: false`` response's marker (written in one chunk, without ``put``'s read of an earlier
    version) is an object like any other: the object store reads it, and continuing it is a clear 400."""

    async def short(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="ok")
        await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)

    stack.fakes.agent("agent_unstored", short)
    events = await sse_events(stack, {"model": "agent_unstored", "input": "x", "store": False})
    response_id = events[-1]["response"]["id"]
    store = stack.app.state.responses.store
    async with asyncio.timeout(5):  # written as the run ends, off the answer's path
        while (marker := await store.get(response_id)) is None:
            await asyncio.sleep(0.02)
    assert marker.stored is False and marker.owner == "u_alice" and marker.response == {}
    objects = await stack.nc.jetstream().object_store(stack.subjects.responses_bucket)
    info = await objects.get_info(response_id)
    assert info.chunks == 1 and info.size == len((await objects.get(response_id)).data or b"")
    async with stack.client() as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.responses.create(model="agent_unstored", input="y", previous_response_id=response_id)
    assert err.value.body["code"] == "previous_response_not_stored"  # type: ignore[index]


@pytest.mark.parametrize("settings_overrides", [{"preadmit_runs": 2}])
async def test_a_response_starts_on_a_run_admitted_ahead(stack: Stack) -> None:
    """As a chat completion does: no admission round trip. The response's id is ``resp_`` and the
    random part of the run's; everything it names (items, lookups, its stored run) follows."""

    async def short(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="ok")
        await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)

    stack.fakes.agent("agent_ahead", short)
    stack.fakes.grant_ahead = True
    async with stack.client() as client:
        await client.responses.create(model="agent_ahead", input="first")
        async with asyncio.timeout(5):  # the first request's admission asked for runs ahead
            while sum(len(r) for r in stack.app.state.ctx.preadmitted._ready.values()) < 2:
                await asyncio.sleep(0.01)
        events = await sse_events(stack, {"model": "agent_ahead", "input": [{"role": "user", "content": "hi"}]})
        taken = stack.fakes.run_requests[-1]
        assert len(stack.fakes.admit_requests) == 1  # the second response asked billing nothing
        assert taken.run_id in stack.fakes.prefetch_requests[0].run_ids and not taken.await_admission
        response_id = events[0]["response"]["id"]
        assert response_id == "resp_" + taken.run_id.rpartition("-")[2] != taken.run_id
        check_stream(events)
        assert events[-1]["response"]["output"][0]["id"] == f"msg_{response_id[5:]}_0"
        stored = await client.responses.retrieve(response_id)
        assert stored.status == "completed" and stored.output_text == "ok"
        record = await stack.app.state.responses.store.get(response_id)
        assert record is not None and record.run_id == taken.run_id
        items = await client.responses.input_items.list(response_id)
        assert [item.id for item in items.data] == [f"msg_{response_id[5:]}_in0"]


async def test_mcp_call_items_are_checked_before_they_are_stored(stack: Stack) -> None:
    """An ``mcp_call`` item was stored as sent: an ``error`` holding an integer past 64 bits made the
    response's ``input_items`` a 500 for good. Now it is a 400 naming the field, and a well-formed
    one is stored and read back."""

    async def short(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="ok")
        await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)

    stack.fakes.agent("agent_mcp_items", short)
    call = {"type": "mcp_call", "id": "mcp_1", "name": "calc", "arguments": "{}", "output": "3"}
    said = {"type": "message", "role": "user", "content": "ok"}
    auth = {"Authorization": f"Bearer {KEY}"}
    async with stack.http() as http:
        bad = {"model": "agent_mcp_items", "input": [call | {"error": {"x": 10**29}}, said]}
        resp = await http.post("/v1/responses", headers=auth, content=json.dumps(bad))
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == "input[0].error.type"
        assert stack.fakes.admit_requests == []
        resp = await http.post("/v1/responses", headers=auth, json={"model": "agent_mcp_items", "input": [call, said]})
        assert resp.status_code == 200, resp.text
        response_id = resp.json()["id"]
        listed = await http.get(f"/v1/responses/{response_id}/input_items", headers=auth, params={"order": "asc"})
    assert listed.status_code == 200, listed.text
    first = listed.json()["data"][0]
    assert first == call | {"server_label": "switchboard", "error": None, "status": "completed"}
    validate("MCPToolCall", first)


async def test_a_streamed_response_that_failed_is_stored_and_not_continued(stack: Stack) -> None:
    """A stored response is kept with everything about it (docs/responses.md), a failed one too: the
    client saw its id. A background one that failed already was; a streamed one was a 404. Neither is
    continued: there is no answer to go on from."""
    from tests.e2e.fake import eventually

    stack.fakes.agent("agent_breaks", fail_midway)
    events = await sse_events(stack, {"model": "agent_breaks", "input": "hi", "metadata": {"k": "v"}})
    response_id = events[0]["response"]["id"]
    failed = events[-1]["response"]
    assert events[-1]["type"] == "response.failed" and failed["id"] == response_id
    async with stack.client() as client:
        stored = await client.responses.retrieve(response_id)
        assert stored.status == "failed" and stored.error is not None
        assert stored.model_dump(mode="json", exclude_unset=True) == failed  # everything the stream ended with
        validate("Response", stored.model_dump(mode="json", exclude_unset=True))
        items = await client.responses.input_items.list(response_id)
        assert [i.type for i in items.data] == ["message"]

        background = await client.responses.create(model="agent_breaks", input="x", background=True)
        await eventually(lambda: client.responses.retrieve(background.id), lambda r: r.status == "failed")

        for parent in (response_id, background.id):
            with pytest.raises(openai.BadRequestError) as err:
                await client.responses.create(model="agent_breaks", input="go on", previous_response_id=parent)
            assert err.value.body["code"] == "previous_response_failed"  # type: ignore[index]
            assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
        assert len(stack.fakes.run_requests) == 2  # the refused continuations started no run

        await client.responses.delete(response_id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response_id)
