"""Idempotency-Key on ``POST /v1/responses`` on the whole stack while the run is live: the official SDK's
retry attaches to the run and gets the same response, charged once; a stream cut mid-way is resumed on a
second gateway process after ``Last-Event-ID`` (a sequence number), byte for byte, and the response is
stored and billed whole although its first client left."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import httpx
import pytest

from tests.e2e.checks import run_ledger
from tests.e2e.conftest import StackHandle
from tests.e2e.fake import eventually

pytestmark = pytest.mark.e2e

WORDS = " ".join(f"word{i}" for i in range(40))
#: Paced so that a retry lands while the run is live, fast enough that the runner sends no heartbeat.
TURN = {"text": WORDS, "tokens_per_s": 20, "usage": {"prompt_tokens": 12, "output_tokens": 40}}


@pytest.fixture(scope="module")
def second_gateway(e2e: StackHandle) -> str:
    return e2e.stack.add_gateway()


def _headers(e2e: StackHandle, key: str, last_event_id: int | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {e2e.seeded.api_key}", "Idempotency-Key": key}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


async def _in_progress(e2e: StackHandle, model: str) -> None:
    await eventually(lambda: e2e.fake.requests(model), lambda found: len(found) >= 1, timeout=10)


async def test_sdk_retry_while_live_gets_the_same_response_and_one_charge(e2e: StackHandle) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [TURN])
    key = {"Idempotency-Key": f"resp-live-{secrets.token_hex(4)}"}
    async with e2e.client() as client:
        first = asyncio.ensure_future(client.responses.create(model=agent.id, input="Count.", extra_headers=key))
        await _in_progress(e2e, agent.model)
        again = await client.responses.create(model=agent.id, input="Count.", extra_headers=key)
        answer = await first
    assert again.model_dump() == answer.model_dump()
    assert answer.status == "completed" and answer.output_text == WORDS
    assert len(await e2e.fake.requests(agent.model)) == 1
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, answer.id, calls=1, timeout=15)
    assert len(entries) == 1 and entries[0]["output_tokens"] == 40


async def test_cut_stream_resumes_on_a_second_gateway_after_last_event_id(
    e2e: StackHandle, second_gateway: str
) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [TURN])
    key = f"resp-resume-{secrets.token_hex(4)}"
    body = {"model": agent.id, "input": "Count.", "stream": True}
    got = b""
    async with (
        httpx.AsyncClient(base_url=e2e.stack.gateway_url, timeout=30) as http,
        http.stream("POST", "/v1/responses", json=body, headers=_headers(e2e, key)) as resp,
    ):
        assert resp.status_code == 200
        async for chunk in resp.aiter_raw():
            got += chunk
            if got.count(b"\n\n") >= 8:
                break
    head = b"".join(frame + b"\n\n" for frame in got.split(b"\n\n")[:8])
    last = _events(head)[-1]["sequence_number"]
    async with httpx.AsyncClient(timeout=30) as http:
        rest = await http.post(
            f"{second_gateway}/v1/responses", json=body, headers=_headers(e2e, key, last_event_id=last)
        )
        assert rest.status_code == 200, rest.text
        whole = await http.post(f"{e2e.stack.gateway_url}/v1/responses", json=body, headers=_headers(e2e, key))
    assert head + rest.content == whole.content
    assert _events(rest.content)[0]["sequence_number"] == last + 1
    final = _events(whole.content)[-1]
    assert final["type"] == "response.completed" and final["response"]["output"][0]["content"][0]["text"] == WORDS
    # Not cancelled when the first client left: run to its end, stored, billed once for all of it.
    await e2e.fake.wait(agent.model, "completed", timeout=10)
    response_id = final["response"]["id"]
    async with e2e.client() as client:
        stored = await client.responses.retrieve(response_id)
    assert stored.status == "completed" and stored.output_text == WORDS
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, response_id, calls=1, timeout=15)
    assert len(entries) == 1 and entries[0]["output_tokens"] == 40
    assert len(await e2e.fake.requests(agent.model)) == 1
