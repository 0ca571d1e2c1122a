"""A request within the body limit whose run is larger than one NATS message: on the whole stack, chat and
Responses answer a clear 413 in the OpenAI envelope — no 500, no hang — hold no credit, start no run, and
an ``Idempotency-Key`` sent with it keeps nothing (the same key then runs a smaller request)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest

from tests.e2e.conftest import AgentRef, StackHandle

pytestmark = pytest.mark.e2e

#: The gateway's body limit (GATEWAY_MAX_BODY_BYTES' default): the requests here stay within it.
BODY_LIMIT = 4 * 1024 * 1024


@pytest.fixture
async def max_payload(nats_url: str) -> int:
    """The NATS server's largest message (1 MiB by default)."""
    nc = await nats.connect(nats_url)
    try:
        return int(nc.max_payload)
    finally:
        await nc.close()


@pytest.fixture
async def user(e2e: StackHandle) -> AsyncIterator[tuple[str, httpx.AsyncClient, AgentRef]]:
    """A user of their own (so their balance and holds are this test's alone), a key, and an agent."""
    created = e2e.admin.create_user(f"large-{secrets.token_hex(3)}")
    api_key = e2e.admin.create_api_key(created["id"], "k")["key"]
    e2e.admin.add_credits(created["id"], 100_000_000)
    agent = e2e.agent()
    e2e.admin.grant(
        agent.id, resource_type="remote_agent", principal_type="user", principal_id=created["id"], role="viewer"
    )
    await e2e.fake.script(agent.model, [{"text": "Small is fine.", "usage": {"prompt_tokens": 5, "output_tokens": 3}}])
    async with httpx.AsyncClient(
        base_url=e2e.stack.gateway_url, timeout=30, headers={"Authorization": f"Bearer {api_key}"}
    ) as http:
        yield created["id"], http, agent


def _holdings(e2e: StackHandle, user_id: str) -> tuple[Any, Any, list[str]]:
    balance = e2e.admin.balance(user_id)
    kinds = sorted(entry["kind"] for entry in e2e.admin.ledger(user_id))
    return balance["balance"], balance["reserved"], kinds


def _assert_too_large(resp: httpx.Response, param: str) -> None:
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert error["param"] == param
    assert "too large" in error["message"]


@pytest.mark.parametrize(
    ("path", "param", "make_body"),
    [
        (
            "/v1/chat/completions",
            "messages",
            lambda model, text: {"model": model, "messages": [{"role": "user", "content": text}]},
        ),
        ("/v1/responses", "input", lambda model, text: {"model": model, "input": text}),
    ],
    ids=["chat", "responses"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_message_larger_than_nats_carries_is_a_clear_413_that_holds_and_keeps_nothing(
    e2e: StackHandle,
    user: tuple[str, httpx.AsyncClient, AgentRef],
    max_payload: int,
    path: str,
    param: str,
    make_body: Any,
    stream: bool,
) -> None:
    user_id, http, agent = user
    big = dict(make_body(agent.id, "a" * (max_payload * 3 // 2)), stream=stream)
    size = len(httpx.Request("POST", "http://x", json=big).content)
    assert max_payload < size < BODY_LIMIT, size  # within the body limit, larger than one NATS message
    before = _holdings(e2e, user_id)
    key = {"Idempotency-Key": f"large-{secrets.token_hex(4)}"}
    _assert_too_large(await http.post(path, json=big), param)
    _assert_too_large(await http.post(path, json=big, headers=key), param)
    # Refused before anything was held or queued: no hold, no ledger entry, no model call.
    assert _holdings(e2e, user_id) == before
    assert await e2e.fake.requests(agent.model) == []
    # The key kept nothing: a smaller request under the same key runs (it would be a 422 otherwise).
    small = make_body(agent.id, "hi")
    ok = await http.post(path, json=small, headers=key)
    assert ok.status_code == 200, ok.text
    assert len(await e2e.fake.requests(agent.model)) == 1
