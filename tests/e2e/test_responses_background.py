"""Background responses and resumed streams: a background run answers at once and is stored when it
ends; cancel stops it (billing what it consumed); its stream is read again after the first client left,
on another gateway process, from any sequence number. And a non-background stream a client leaves is
cancelled and billed for what was consumed, as on chat."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.checks import run_ledger
from tests.e2e.conftest import StackHandle
from tests.e2e.fake import eventually
from tests.e2e.responses_checks import check_response, check_stream, raw_event

pytestmark = pytest.mark.e2e

LONG_TEXT = " ".join(f"word{i}" for i in range(400))
SHORT_TEXT = " ".join(f"w{i}" for i in range(30))


@pytest.fixture(scope="module")
def second_gateway(e2e: StackHandle) -> str:
    return e2e.stack.add_gateway()


async def test_background_response_is_stored_when_done(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": SHORT_TEXT, "tokens_per_s": 60}])
    created = await client.responses.create(model=agent.id, input="Go", background=True)
    assert created.status in ("queued", "in_progress") and created.background is True
    assert created.output == []

    done = await eventually(
        lambda: client.responses.retrieve(created.id), lambda r: r.status == "completed", timeout=20
    )
    check_response(done.to_dict(mode="json"))
    assert done.id == created.id and done.output_text == SHORT_TEXT
    assert done.usage is not None and done.usage.output_tokens > 0


async def test_background_cancel_stops_the_run_and_bills_what_was_consumed(
    e2e: StackHandle, client: openai.AsyncOpenAI
) -> None:
    agent = e2e.agent()
    await e2e.fake.script(
        agent.model, [{"text": LONG_TEXT, "tokens_per_s": 40, "usage": {"prompt_tokens": 20, "output_tokens": 400}}]
    )
    created = await client.responses.create(model=agent.id, input="Talk", background=True)
    # Some output is produced before the cancel.
    await eventually(
        lambda: client.responses.retrieve(created.id),
        lambda r: r.status == "in_progress" and bool(r.output_text),
        timeout=15,
    )
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert all(item.status != "in_progress" for item in cancelled.output)  # type: ignore[union-attr]
    assert await e2e.fake.wait(agent.model, "disconnected", timeout=10)

    again = await client.responses.retrieve(created.id)
    assert again.status == "cancelled"
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, created.id, calls=1, timeout=15)
    assert len(entries) == 1 and 0 < entries[0]["output_tokens"] < 400

    # Cancelling what is over changes nothing.
    assert (await client.responses.cancel(created.id)).status == "cancelled"


async def test_background_stream_resumes_on_another_gateway(
    e2e: StackHandle, client: openai.AsyncOpenAI, second_gateway: str
) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"reasoning": "Plan it.", "text": SHORT_TEXT, "tokens_per_s": 40}])
    first_part: list[dict[str, Any]] = []
    stream = await client.responses.create(model=agent.id, input="Go", background=True, stream=True)
    async for event in stream:
        first_part.append(raw_event(event))
        if event.type == "response.output_text.delta" and len(first_part) > 8:
            break
    await stream.close()  # the first client leaves; the run goes on
    response_id = first_part[0]["response"]["id"]
    cut = first_part[-1]["sequence_number"]

    other = openai.AsyncOpenAI(base_url=f"{second_gateway}/v1", api_key=e2e.seeded.api_key, max_retries=0, timeout=30)
    async with other:
        resumed = [
            raw_event(e) async for e in await other.responses.retrieve(response_id, stream=True, starting_after=cut)
        ]
        check_stream(resumed, first_seq=cut + 1)
        whole = [raw_event(e) async for e in await other.responses.retrieve(response_id, stream=True)]
    raw = check_stream(whole)
    # The same events, the same numbers, wherever rendered.
    assert [e for e in whole if e["sequence_number"] <= cut] == first_part
    assert whole[cut + 1 :] == resumed
    text = "".join(e["delta"] for e in first_part + resumed if e["type"] == "response.output_text.delta")
    assert text == SHORT_TEXT
    assert raw[-1]["type"] == "response.completed" and raw[-1]["response"]["id"] == response_id
    stored = await eventually(
        lambda: client.responses.retrieve(response_id), lambda r: r.status == "completed", timeout=10
    )
    assert stored.output_text == SHORT_TEXT


async def test_only_background_responses_stream_again_or_cancel(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": "Plain."}])
    plain = await client.responses.create(model=agent.id, input="x")
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(plain.id)
    with pytest.raises(openai.BadRequestError):
        async for _ in await client.responses.retrieve(plain.id, stream=True):
            pass


async def test_stream_disconnect_cancels_and_bills_partial_usage(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent()
    await e2e.fake.script(
        agent.model, [{"text": LONG_TEXT, "tokens_per_s": 50, "usage": {"prompt_tokens": 25, "output_tokens": 400}}]
    )
    stream = await client.responses.create(model=agent.id, input="Talk for a long time.", stream=True)
    response_id = None
    words = 0
    async for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            words += 1
            if words >= 3:
                break
    await stream.close()
    assert response_id is not None
    assert await e2e.fake.wait(agent.model, "disconnected", timeout=10)
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, response_id, calls=1, timeout=15)
    assert len(entries) == 1 and entries[0]["estimated"] is True
    assert 0 < entries[0]["output_tokens"] < 400
    # A stream cut short is not stored (the store write happens only before a terminal event).
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response_id)


async def test_rate_limit_applies_to_responses(e2e: StackHandle) -> None:
    user = e2e.admin.create_user("responses-limit")
    key = e2e.admin.create_api_key(user["id"], "k", rate_limit_per_minute=1)["key"]
    e2e.admin.add_credits(user["id"], 10_000_000)
    agent = e2e.agent(owner_id=user["id"])
    await e2e.fake.script(agent.model, [{"text": "ok"}])
    async with e2e.client(key) as limited:
        await limited.responses.create(model=agent.id, input="one")
        with pytest.raises(openai.RateLimitError) as err:
            await limited.responses.create(model=agent.id, input="two")
    assert err.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]


async def test_a_response_whose_gateway_died_is_finished_by_another(e2e: StackHandle) -> None:
    before = set(e2e.stack.processes)
    doomed_url = e2e.stack.add_gateway()
    (doomed,) = set(e2e.stack.processes) - before
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": SHORT_TEXT, "tokens_per_s": 30}])
    async with openai.AsyncOpenAI(
        base_url=f"{doomed_url}/v1", api_key=e2e.seeded.api_key, max_retries=0, timeout=30
    ) as on_doomed:
        created = await on_doomed.responses.create(model=agent.id, input="Go", background=True)
    e2e.stack.kill(doomed)  # the gateway carrying it dies mid-run; the runner goes on

    async with e2e.client() as survivor:
        done = await eventually(
            lambda: survivor.responses.retrieve(created.id), lambda r: r.status == "completed", timeout=20
        )
        assert done.output_text == SHORT_TEXT
        # Finished once, stored: the next read is the stored response itself.
        assert (await survivor.responses.retrieve(created.id)).to_dict() == done.to_dict()
