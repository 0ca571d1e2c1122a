"""Resumable chat streams and Idempotency-Key on the whole stack: a stream cut mid-way is resumed on a
second gateway process with ``Last-Event-ID``, byte for byte; retries with the official SDK get the same
answer and one charge; a refused request keeps nothing; a client that never comes back has its run
cancelled after the resume window, billed for what it consumed."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.checks import run_ledger
from tests.e2e.conftest import StackHandle, own_stack

pytestmark = pytest.mark.e2e

WORDS = " ".join(f"word{i}" for i in range(40))
#: Paced so the client can leave mid-way, fast enough that the runner sends no heartbeat (a 2 s gap).
TURN = {"text": WORDS, "tokens_per_s": 40, "usage": {"prompt_tokens": 12, "output_tokens": 40}}


@pytest.fixture(scope="module")
def second_gateway(e2e: StackHandle) -> str:
    return e2e.stack.add_gateway()


def _headers(e2e: StackHandle, key: str | None, last_event_id: int | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {e2e.seeded.api_key}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


def _body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Count."}], "stream": True}


def _frames(raw: bytes) -> list[bytes]:
    return [f + b"\n\n" for f in raw.split(b"\n\n") if f]


def _last_id(frames: list[bytes]) -> int:
    ids = [int(m.group(1)) for f in frames if (m := re.search(rb"^id: (\d+)$", f, re.M))]
    return ids[-1]


async def _read_then_leave(url: str, headers: dict[str, str], body: dict[str, Any], frames: int) -> list[bytes]:
    """Stream until ``frames`` whole frames came, then drop the connection (a flaky network)."""
    got = b""
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        async for chunk in resp.aiter_raw():
            got += chunk
            if got.count(b"\n\n") >= frames:
                break
    return _frames(got)[:frames]


def _normalised(raw: bytes, run_id: str) -> bytes:
    return re.sub(rb'"created":\d+', b'"created":0', raw.replace(run_id.encode(), b"RUN"))


async def test_cut_stream_resumes_on_a_second_gateway_byte_for_byte(e2e: StackHandle, second_gateway: str) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [TURN])
    key = f"resume-{secrets.token_hex(4)}"
    head = await _read_then_leave(e2e.stack.gateway_url, _headers(e2e, key), _body(agent.id), 6)
    after = _last_id(head)
    async with httpx.AsyncClient(timeout=30) as http:
        rest = await http.post(
            f"{second_gateway}/v1/chat/completions", json=_body(agent.id), headers=_headers(e2e, key, after)
        )
        assert rest.status_code == 200, rest.text
        # Replayed from its first frame, once the run is over, on the first gateway.
        whole = await http.post(
            f"{e2e.stack.gateway_url}/v1/chat/completions", json=_body(agent.id), headers=_headers(e2e, key)
        )
        # One uninterrupted stream of the same scripted model, without a key.
        plain = await http.post(
            f"{e2e.stack.gateway_url}/v1/chat/completions", json=_body(agent.id), headers=_headers(e2e, None)
        )
    assert b"".join(head) + rest.content == whole.content
    assert _last_id(_frames(rest.content)) > after and whole.content.endswith(b"data: [DONE]\n\n")
    run_id = re.search(rb'"id":"([^"]+)"', whole.content).group(1).decode()  # type: ignore[union-attr]
    plain_id = re.search(rb'"id":"([^"]+)"', plain.content).group(1).decode()  # type: ignore[union-attr]
    assert _normalised(whole.content, run_id) == _normalised(plain.content, plain_id)
    assert "word39" in whole.text
    # The keyed run went on to its end (not cancelled) and was charged once.
    await e2e.fake.wait(agent.model, "completed", timeout=10)
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, run_id, calls=1, timeout=15)
    assert len(entries) == 1 and entries[0]["output_tokens"] == 40
    assert len(await e2e.fake.requests(agent.model)) == 2  # the keyed run and the plain one


async def test_sdk_retry_after_completion_gets_the_same_completion_and_one_charge(e2e: StackHandle) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": "Hello there.", "usage": {"prompt_tokens": 9, "output_tokens": 3}}])
    key = {"Idempotency-Key": f"sdk-{secrets.token_hex(4)}"}
    messages = [{"role": "user", "content": "hi"}]
    async with e2e.client() as client:
        first = await client.chat.completions.create(model=agent.id, messages=messages, extra_headers=key)  # type: ignore[arg-type]
        again = await client.chat.completions.create(model=agent.id, messages=messages, extra_headers=key)  # type: ignore[arg-type]
        with pytest.raises(openai.UnprocessableEntityError) as clash:
            await client.chat.completions.create(
                model=agent.id,
                messages=[{"role": "user", "content": "something else"}],
                extra_headers=key,
            )
        streamed = await client.chat.completions.create(
            model=agent.id,
            messages=messages,
            stream=True,
            extra_headers={"Idempotency-Key": f"sdk-stream-{secrets.token_hex(4)}"},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in streamed if c.choices])
    assert again.model_dump() == first.model_dump()
    assert first.choices[0].message.content == "Hello there." == text
    assert clash.value.status_code == 422
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, first.id, calls=1)
    assert len(entries) == 1
    assert len(await e2e.fake.requests(agent.model)) == 2  # the keyed whole run and the keyed stream


async def test_sdk_responses_retry_gets_the_same_response(e2e: StackHandle) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": "Once.", "usage": {"prompt_tokens": 5, "output_tokens": 2}}])
    key = {"Idempotency-Key": f"resp-{secrets.token_hex(4)}"}
    async with e2e.client() as client:
        first = await client.responses.create(model=agent.id, input="hi", extra_headers=key)
        again = await client.responses.create(model=agent.id, input="hi", extra_headers=key)
    assert again.id == first.id and again.output_text == first.output_text == "Once."
    assert len(await e2e.fake.requests(agent.model)) == 1


async def test_refused_request_keeps_nothing(e2e: StackHandle) -> None:
    user = e2e.admin.create_user(f"resume-broke-{secrets.token_hex(3)}")
    api_key = e2e.admin.create_api_key(user["id"], "k")["key"]
    agent = e2e.agent()
    e2e.admin.grant(
        agent.id, resource_type="remote_agent", principal_type="user", principal_id=user["id"], role="viewer"
    )
    await e2e.fake.script(agent.model, [{"text": "Paid.", "usage": {"prompt_tokens": 5, "output_tokens": 2}}])
    headers = {"Idempotency-Key": "refused-once"}
    body = {"model": agent.id, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(
        base_url=e2e.stack.gateway_url, timeout=30, headers={"Authorization": f"Bearer {api_key}"}
    ) as http:
        refused = await http.post("/v1/chat/completions", json=body, headers=headers)
        assert refused.status_code == 402, refused.text
        e2e.admin.add_credits(user["id"], 10_000_000)
        # The same key again: nothing was kept, so this one runs.
        paid = await http.post("/v1/chat/completions", json=body, headers=headers)
    assert paid.status_code == 200, paid.text
    assert paid.json()["choices"][0]["message"]["content"] == "Paid."


def test_nobody_comes_back_cancels_after_the_window_and_bills_what_was_consumed(
    tmp_path: Path, nats_url: str, postgres_url: str, redis_url: str
) -> None:
    env = {"GATEWAY_RESUME_WINDOW_S": "1.5"}
    with own_stack(tmp_path / "stack", nats_url, postgres_url, redis_url, env=env) as e2e:
        asyncio.run(_nobody_comes_back(e2e))


async def _nobody_comes_back(e2e: StackHandle) -> None:
    agent = e2e.agent()
    long_text = " ".join(f"word{i}" for i in range(400))
    turn = {"text": long_text, "tokens_per_s": 50, "usage": {"prompt_tokens": 25, "output_tokens": 400}}
    await e2e.fake.script(agent.model, [turn])
    loop = asyncio.get_running_loop()
    head = await _read_then_leave(e2e.stack.gateway_url, _headers(e2e, "gone-1"), _body(agent.id), 4)
    left = loop.time()
    record = await e2e.fake.wait(agent.model, "disconnected", timeout=15)
    waited = loop.time() - left
    assert record and waited >= 1.2, waited  # the run went on through the window, then was cancelled
    run_id = re.search(rb'"id":"([^"]+)"', b"".join(head)).group(1).decode()  # type: ignore[union-attr]
    (entry,) = await run_ledger(e2e.admin, e2e.seeded.user_id, run_id, calls=1, timeout=15)
    assert entry["estimated"] is True
    # More than the client saw (the window's worth), far from the whole answer.
    assert 4 < entry["output_tokens"] < 400


async def test_retries_racing_on_two_gateways_start_one_run(e2e: StackHandle, second_gateway: str) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": "Just one.", "usage": {"prompt_tokens": 5, "output_tokens": 3}}])
    key = {"Idempotency-Key": f"race-{secrets.token_hex(4)}"}
    messages = [{"role": "user", "content": "hi"}]
    clients = [
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=e2e.seeded.api_key, max_retries=0, timeout=30)
        for url in (e2e.stack.gateway_url, second_gateway)
    ]
    try:
        answers = await asyncio.gather(
            *(c.chat.completions.create(model=agent.id, messages=messages, extra_headers=key) for c in clients * 2)  # type: ignore[arg-type]
        )
    finally:
        for c in clients:
            await c.close()
    assert len({a.id for a in answers}) == 1
    assert {a.choices[0].message.content for a in answers} == {"Just one."}
    assert len(await e2e.fake.requests(agent.model)) == 1
