"""Every error answer before a stream starts: status, the OpenAI error envelope, and what the SDK raises."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import StackHandle
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello"}]


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    validate("ErrorResponse", body)
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def agent_id(e2e: StackHandle) -> str:
    return e2e.agent("openai").id


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({}, "messages", id="missing-messages"),
        pytest.param({"messages": []}, "messages", id="empty-messages"),
        pytest.param({"messages": "hello"}, "messages", id="ill-typed-messages"),
        pytest.param({"messages": [{"role": "wizard", "content": "hi"}]}, "messages", id="bad-role"),
        pytest.param({"messages": HELLO, "stream": "yes"}, "stream", id="ill-typed-stream"),
    ],
)
async def test_invalid_body_is_400(http: httpx.AsyncClient, agent_id: str, body: dict[str, Any], param: str) -> None:
    r = await http.post("/v1/chat/completions", json={"model": agent_id, **body})
    error = _error(r, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)


async def test_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/chat/completions", content=b'{"model": "x", "messages": [', headers={"Content-Type": "application/json"}
    )
    assert _error(r, 400)["type"] == "invalid_request_error"


async def test_missing_key_is_401(e2e: StackHandle, agent_id: str) -> None:
    async with httpx.AsyncClient(base_url=e2e.stack.gateway_url) as anonymous:
        r = await anonymous.post("/v1/chat/completions", json={"model": agent_id, "messages": HELLO})
    assert _error(r, 401)["type"] in ("authentication_error", "invalid_request_error")


async def test_invalid_key_is_401(e2e: StackHandle, agent_id: str) -> None:
    async with e2e.client(api_key="sk-" + "0" * 64) as c:
        with pytest.raises(openai.AuthenticationError) as caught:
            await c.chat.completions.create(model=agent_id, messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.status_code == 401
    validate("ErrorResponse", caught.value.response.json())


async def test_no_grant_is_the_404_of_a_missing_agent(e2e: StackHandle, agent_id: str) -> None:
    async with e2e.client(api_key=e2e.seeded.outsider_key) as c:
        with pytest.raises(openai.NotFoundError) as caught:
            await c.chat.completions.create(model=agent_id, messages=HELLO)  # type: ignore[arg-type]
    validate("ErrorResponse", caught.value.response.json())
    assert caught.value.code == "model_not_found"


async def test_unknown_agent_is_404(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="agent_does_not_exist", messages=HELLO)
    body = caught.value.response.json()
    validate("ErrorResponse", body)
    assert body["error"]["code"] == "model_not_found"


async def test_grant_lets_the_outsider_in(e2e: StackHandle) -> None:
    """The 404 above is about the grant: with a viewer grant the same key may run the agent."""
    agent = e2e.agent("openai")
    e2e.admin.grant(
        agent.id,
        resource_type="remote_agent",
        principal_type="user",
        principal_id=e2e.seeded.outsider_id,
        role="viewer",
    )
    await e2e.fake.script(agent.model, [{"text": "Welcome."}])
    async with e2e.client(api_key=e2e.seeded.outsider_key) as c:
        completion = await c.chat.completions.create(model=agent.id, messages=HELLO)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Welcome."


async def test_balance_too_low_is_402(e2e: StackHandle) -> None:
    agent = e2e.agent("openai", owner_id=e2e.seeded.poor_id)
    async with e2e.client(api_key=e2e.seeded.poor_key) as c:
        with pytest.raises(openai.APIStatusError) as caught:
            await c.chat.completions.create(model=agent.id, messages=HELLO, stream=True)  # type: ignore[arg-type]
    assert caught.value.status_code == 402
    body = caught.value.response.json()
    validate("ErrorResponse", body)
    assert body["error"]["code"] == "insufficient_quota"
    # Nothing ran: the provider never saw a request.
    assert await e2e.fake.requests(agent.model) == []


@pytest.mark.parametrize(
    ("scripted", "raised", "status"),
    [
        ({"status": 429, "message": "Slow down.", "retry_after": 7}, openai.RateLimitError, 429),
        (
            {"status": 400, "message": "Bad tool schema.", "code": "invalid_function_parameters"},
            openai.BadRequestError,
            400,
        ),
    ],
)
async def test_a_stream_that_fails_before_its_first_token_is_an_http_error(
    e2e: StackHandle, provider: str, scripted: dict[str, Any], raised: type[Exception], status: int
) -> None:
    """A provider's refusal before any output reaches a streaming client as its HTTP status (with
    Retry-After), on both APIs: SDKs type it and retry a 429. After a 200 it could only be an
    untyped error in the stream."""
    agent = e2e.agent(provider)
    await e2e.fake.script(agent.model, [{"error": scripted}])
    async with e2e.client() as client:
        with pytest.raises(raised) as chat:
            async for _ in await client.chat.completions.create(model=agent.id, messages=HELLO, stream=True):
                pass
        with pytest.raises(raised) as responses:
            async for _ in await client.responses.create(model=agent.id, input="Hello", stream=True):
                pass
    for caught in (chat.value, responses.value):
        assert isinstance(caught, openai.APIStatusError) and caught.status_code == status
        validate("ErrorResponse", caught.response.json())
        if status == 429:
            assert caught.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/responses"])
async def test_a_model_slow_to_start_gets_its_head_at_the_first_heartbeat(
    e2e: StackHandle, http: httpx.AsyncClient, route: str
) -> None:
    """The head waits for the first output only while nothing is known: a model slow to start (2 s
    here, heartbeats every 0.5 s) has its head and first bytes sent long before its first token, so
    that proxies and clients with read timeouts see a live stream."""
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": "Late but here.", "ttft_ms": 2000}])
    body: dict[str, Any] = {"model": agent.id, "stream": True}
    body |= {"messages": HELLO} if route.endswith("completions") else {"input": "Hello"}
    started = asyncio.get_running_loop().time()
    async with http.stream("POST", route, json=body) as r:
        head_after = asyncio.get_running_loop().time() - started
        chunks = [chunk async for chunk in r.aiter_bytes()]
    assert r.status_code == 200 and head_after < 1.5, head_after
    assert b"Late" in b"".join(chunks)
