"""Whole-body chat completions, and every error answer: the OpenAI envelope with the right status."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from contracts import (
    CacheInvalidated,
    ErrorInfo,
    RunCompleted,
    RunFailed,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
)
from gateway.auth import hash_key
from tests.support.openapi_schema import validate

from .conftest import BROKE_KEY, KEY, NO_USE_KEY, RunContext, Stack
from .test_chat_stream import USAGE, call_tools, fail_midway, say_hello, stream_forever, think_then_answer

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hi"}]


async def never_starts(run: RunContext) -> None:
    await asyncio.Event().wait()


async def only_tools(run: RunContext) -> None:
    await run.start()
    await run.emit(ToolCallStarted, index=0, call_id="call_x", name="lookup", client=True)
    await run.emit(ToolCallArgumentsDelta, index=0, delta='{"q":1}')
    await run.emit(RunCompleted, finish_reason="tool_calls", usage=USAGE)


async def post(stack: Stack, body: Any, key: str | None = KEY, **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with stack.http() as http:
        if isinstance(body, bytes):
            resp = await http.post("/v1/chat/completions", content=body, headers=headers, **kwargs)
        else:
            resp = await http.post("/v1/chat/completions", json=body, headers=headers, **kwargs)
    return resp.status_code, resp.json(), resp.headers


def assert_error(status: int, body: Any, want_status: int, code: str | None = None, param: str | None = None) -> None:
    assert status == want_status, body
    validate("ErrorResponse", body)
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param


async def test_non_stream_completion_is_spec_valid(stack: Stack) -> None:
    stack.fakes.agent("agent_think", think_then_answer)
    status, body, _ = await post(stack, {"model": "agent_think", "messages": HI, "max_tokens": 50})
    assert status == 200
    validate("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "42", "refusal": None, "reasoning": "Let me think."}
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["logprobs"] is None
    assert body["usage"]["prompt_tokens"] == 18 and body["usage"]["total_tokens"] == 25
    assert stack.fakes.run_requests[-1].options.stream is False
    assert stack.fakes.admit_requests[-1].max_output_tokens == 50


async def test_non_stream_tool_calls_have_null_content(stack: Stack) -> None:
    stack.fakes.agent("agent_only_tools", only_tools)
    async with stack.client() as client:
        completion = await client.chat.completions.create(model="agent_only_tools", messages=HI)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [
        ("call_x", "lookup", '{"q":1}')
    ]


async def test_non_stream_tool_calls_with_text(stack: Stack) -> None:
    stack.fakes.agent("agent_tools", call_tools)
    status, body, _ = await post(stack, {"model": "agent_tools", "messages": HI})
    assert status == 200
    validate("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message and body["choices"][0]["finish_reason"] == "stop"
    assert [c["id"] for c in message["agent_tool_calls"]] == ["call_a", "call_b"]


async def test_disable_streaming_answers_one_body_even_when_asked_to_stream(stack: Stack) -> None:
    stack.fakes.agent("agent_whole", say_hello, disableStreaming=True, max_tokens=77)
    status, body, headers = await post(stack, {"model": "agent_whole", "messages": HI, "stream": True})
    assert status == 200 and headers["content-type"].startswith("application/json")
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == "Hello world"
    assert stack.fakes.admit_requests[-1].max_output_tokens == 77


async def test_run_failure_before_completion_uses_its_status(stack: Stack) -> None:
    stack.fakes.agent("agent_fail", fail_midway)
    status, body, _ = await post(stack, {"model": "agent_fail", "messages": HI})
    assert_error(status, body, 502, "provider_error")


async def provider_busy(run: RunContext) -> None:
    await run.start()
    busy = ErrorInfo(
        status=429,
        type="rate_limit_exceeded",
        message="The provider answered 429: slow down",
        code="rate_limit_exceeded",
    )
    await run.emit(RunFailed, error=busy.model_copy(update={"retry_after_s": 7}))


async def test_a_run_that_says_how_long_to_wait_gets_retry_after(stack: Stack) -> None:
    """A provider's 429 reaches the client as a 429 its SDK backs off from, for as long as it said."""
    stack.fakes.agent("agent_busy", provider_busy)
    status, body, headers = await post(stack, {"model": "agent_busy", "messages": HI})
    assert_error(status, body, 429, "rate_limit_exceeded")
    assert headers["retry-after"] == "7"
    assert "retry_after_s" not in body["error"]  # the envelope is OpenAI's, nothing more


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"model": "agent_hello"}, "messages"),
        ({"model": "agent_hello", "messages": []}, "messages"),
        ({"messages": HI}, "model"),
        ({"model": "agent_hello", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "agent_hello", "messages": HI, "stream": "yes"}, "stream"),
        ({"model": "agent_hello", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": "agent_hello", "messages": [HI[0], {"role": "user"}]}, "messages[1].content"),
        ({"model": "agent_hello", "messages": HI, "max_tokens": "ten"}, "max_tokens"),
        ({"model": "agent_hello", "messages": HI, "temperature": 5}, "temperature"),
    ],
)
async def test_bad_bodies_are_400_naming_the_param(stack: Stack, body: Any, param: str | None) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    status, got, _ = await post(stack, body)
    assert_error(status, got, 400)
    assert got["error"]["type"] == "invalid_request_error" and got["error"]["param"] == param
    assert not stack.fakes.run_requests


async def test_unknown_fields_are_ignored(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    status, body, _ = await post(stack, {"model": "agent_hello", "messages": HI, "n": 1, "seed": 3, "x_custom": {}})
    assert status == 200 and body["choices"][0]["message"]["content"] == "Hello world"


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 200}])
async def test_oversized_body_is_413(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    status, body, _ = await post(stack, {"model": "agent_hello", "messages": [{"role": "user", "content": "x" * 500}]})
    assert_error(status, body, 413)


async def test_missing_and_wrong_keys_are_401(stack: Stack) -> None:
    status, body, _ = await post(stack, {"model": "m", "messages": HI}, key=None)
    assert_error(status, body, 401, "invalid_api_key")
    async with stack.client(key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="m", messages=HI)
    assert caught.value.code == "invalid_api_key"
    async with stack.http() as http:
        resp = await http.get("/v1/models", headers={"Authorization": "Basic abc"})
    assert_error(resp.status_code, resp.json(), 401, "invalid_api_key")


async def test_role_without_remote_agents_use_is_403(stack: Stack) -> None:
    status, body, _ = await post(stack, {"model": "m", "messages": HI}, key=NO_USE_KEY)
    assert_error(status, body, 403, "access_denied")
    assert body["error"]["type"] == "permission_error"
    # Plain language, and what to do about it (no permission names).
    message = body["error"]["message"]
    assert "not allowed to use agents through the API" in message and "administrator" in message
    assert "REMOTE_AGENTS" not in message


async def test_unknown_and_forbidden_agents(stack: Stack) -> None:
    stack.fakes.agent("agent_secret", say_hello)
    stack.fakes.forbidden_agents.add("agent_secret")
    async with stack.client() as client:
        with pytest.raises(openai.NotFoundError) as not_found:
            await client.chat.completions.create(model="agent_nope", messages=HI)
        with pytest.raises(openai.NotFoundError) as denied:
            await client.chat.completions.create(model="agent_secret", messages=HI)
    assert not_found.value.code == "model_not_found" and not_found.value.param == "model"
    assert denied.value.code == "model_not_found"  # a private agent is not told apart from a missing one
    assert str(denied.value.body) == str(not_found.value.body).replace("agent_nope", "agent_secret")


async def test_insufficient_balance_is_402(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    status, body, _ = await post(stack, {"model": "agent_hello", "messages": HI}, key=BROKE_KEY)
    assert_error(status, body, 402, "insufficient_quota")
    # Queued while billing decided (the two overlap), then cancelled: it never got the go-ahead.
    await asyncio.wait_for(stack.fakes.cancelled.wait(), 5)
    cancel = stack.fakes.cancels[0]
    assert cancel.reason == "not_admitted" and cancel.run_id == stack.fakes.admit_requests[0].run_id
    if stack.fakes.run_requests:
        assert stack.fakes.run_requests[0].await_admission
        assert await asyncio.wait_for(stack.fakes.admissions[cancel.run_id], 5) is None


async def test_an_admitted_run_gets_its_go_ahead_with_the_reservation(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    status, _, _ = await post(stack, {"model": "agent_hello", "messages": HI})
    assert status == 200
    request = stack.fakes.run_requests[0]
    assert request.await_admission and request.reservation_id is None
    # Billing is asked to send the go-ahead itself, with its answer.
    assert stack.fakes.admit_requests[0].announce and stack.fakes.admit_requests[0].run_id == request.run_id
    go = stack.fakes.admissions[request.run_id].result()
    assert go is not None and go.reservation_id == f"res_{request.run_id}"


async def test_no_runner_in_time_is_503_and_the_run_is_cancelled(stack: Stack) -> None:
    stack.fakes.agent("agent_stuck", never_starts)
    status, body, _ = await post(stack, {"model": "agent_stuck", "messages": HI, "stream": True})
    assert_error(status, body, 503, "no_capacity")
    await asyncio.wait_for(stack.fakes.cancelled.wait(), 5)
    assert stack.fakes.cancels[0].run_id == stack.fakes.run_requests[0].run_id


async def test_non_stream_client_disconnect_cancels(stack: Stack) -> None:
    stack.fakes.agent("agent_forever", stream_forever)
    async with stack.http() as http:
        request = asyncio.create_task(
            http.post(
                "/v1/chat/completions",
                json={"model": "agent_forever", "messages": HI},
                headers={"Authorization": f"Bearer {KEY}"},
            )
        )
        # Wait until the runner has the run, then drop the connection.
        await asyncio.wait_for(stack.fakes.run_received.wait(), 5)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await asyncio.wait_for(stack.fakes.cancelled.wait(), 5)
    assert stack.fakes.cancels[0].reason == "client_disconnected"


async def test_every_other_error_is_an_envelope(stack: Stack) -> None:
    async with stack.http() as http:
        not_found = await http.get("/nope")
        wrong_method = await http.get("/v1/chat/completions")
    assert_error(not_found.status_code, not_found.json(), 404)
    assert_error(wrong_method.status_code, wrong_method.json(), 405)


@pytest.mark.parametrize("path", ["/v1/responses/input_tokens", "/v1/responses/compact", "/v1/responses/resp_1"])
async def test_an_endpoint_not_served_under_a_routes_parameter_is_an_unknown_url(stack: Stack, path: str) -> None:
    """``POST /v1/responses/input_tokens`` fits ``/v1/responses/{response_id}`` only through its
    parameter: the SDK's ``responses.input_tokens.count`` gets a 404 (NotFoundError), not a 405
    that reads as if another method would do."""
    async with stack.http() as http:
        got = await http.post(
            path, json={"model": "agent_1", "input": "hi"}, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert_error(got.status_code, got.json(), 404, "unknown_url")
    assert got.json()["error"]["message"] == f"Unknown request URL: POST {path}."
    assert "allow" not in got.headers


async def test_models_list_and_retrieve(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    stack.fakes.agent("agent_secret", say_hello)
    stack.fakes.forbidden_agents.add("agent_secret")
    headers = {"Authorization": f"Bearer {KEY}"}
    async with stack.http() as http:
        listed = await http.get("/v1/models", headers=headers)
        one = await http.get("/v1/models/agent_hello", headers=headers)
        missing = await http.get("/v1/models/agent_nope", headers=headers)
        denied = await http.get("/v1/models/agent_secret", headers=headers)
        anonymous = await http.get("/v1/models")
    validate("ListModelsResponse", listed.json())
    assert {m["id"] for m in listed.json()["data"]} == {"agent_hello", "agent_secret"}
    validate("Model", one.json())
    assert one.json()["id"] == "agent_hello" and one.json()["name"] == "Agent agent_hello"
    assert_error(missing.status_code, missing.json(), 404, "model_not_found")
    assert_error(denied.status_code, denied.json(), 404, "model_not_found")
    assert_error(anonymous.status_code, anonymous.json(), 401)
    async with stack.client() as client:
        page = await client.models.list()
    assert {m.id for m in page.data} == {"agent_hello", "agent_secret"}


async def test_key_revocation_takes_effect_at_once(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    status, _, _ = await post(stack, {"model": "agent_hello", "messages": HI})
    assert status == 200
    calls = stack.fakes.verify_calls
    status, _, _ = await post(stack, {"model": "agent_hello", "messages": HI})
    assert status == 200 and stack.fakes.verify_calls == calls  # served from the cache (TTL 60 s)
    stack.fakes.revoked.add(hash_key(KEY))
    ctx = stack.app.state.ctx
    invalidated = asyncio.Event()
    invalidate = ctx.auth.invalidate

    def spy(event: CacheInvalidated) -> None:
        invalidate(event)
        invalidated.set()

    ctx.auth.invalidate = spy
    await stack.nc.publish(
        stack.subjects.catalog_invalidated,
        CacheInvalidated(kind="api_key", key_hash=hash_key(KEY)).model_dump_json().encode(),
    )
    await asyncio.wait_for(invalidated.wait(), 5)
    assert ctx.auth.keys.get(hash_key(KEY)) is None
    status, body, _ = await post(stack, {"model": "agent_hello", "messages": HI})
    assert_error(status, body, 401, "invalid_api_key")


async def test_catalog_down_is_503(stack: Stack) -> None:
    # A namespace nobody answers in: same gateway code, no catalog.
    from contracts import Subjects

    ctx = stack.app.state.ctx
    ctx.auth._subjects = Subjects("nobody_home")
    status, body, _ = await post(stack, {"model": "agent_hello", "messages": HI})
    assert_error(status, body, 503, "service_unavailable")


async def test_text_delta_content_is_relayed_verbatim(stack: Stack) -> None:
    tricky = 'quote " backslash \\ newline \n unicode é 😀 </script>'

    async def echo(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta=tricky)
        await run.emit(RunCompleted)

    stack.fakes.agent("agent_echo", echo)
    async with stack.client() as client:
        stream = await client.chat.completions.create(model="agent_echo", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == tricky


@pytest.mark.parametrize("key", [KEY, None], ids=["with-key", "without-key"])
async def test_models_with_a_trailing_slash_is_an_unknown_url(stack: Stack, key: str | None) -> None:
    """docs/limits.md: a trailing slash is ``404 unknown_url``. ``GET /v1/models/`` was the lookup of a
    model named "" (``404 model_not_found``, and a 401 without a key)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with stack.http() as http:
        got = await http.get("/v1/models/", headers=headers)
    assert_error(got.status_code, got.json(), 404, "unknown_url")
    assert got.json()["error"]["message"] == "Unknown request URL: GET /v1/models/."
    assert stack.fakes.verify_calls == 0
