"""Images cannot overdraw a balance: concurrent vision requests, billed as a vision model bills them."""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal

import openai
import pytest

from contracts.estimate import image_tokens
from tests.e2e.conftest import StackHandle, set_price
from tests.e2e.fake import eventually

pytestmark = pytest.mark.e2e

START = 200_000  # credits; TEST_PRICE bills a prompt token 1 credit and an output token 2
IMAGES = 100
REPORTED_PROMPT = 25_000  # what a vision model reports for 100 images (250 each)


async def test_concurrent_image_requests_never_overdraw(e2e: StackHandle) -> None:
    user = e2e.admin.create_user(f"e2e-vision-{secrets.token_hex(3)}")
    key = e2e.admin.create_api_key(user["id"], "k")["key"]
    e2e.admin.add_credits(user["id"], START)
    model = f"gpt-4o-e2e-{secrets.token_hex(4)}"  # a gpt-4o: at most 1,445 tokens an image
    set_price(e2e.admin, "openai", model)
    agent = e2e.admin.create_agent(name=f"vision {model}", provider="openai", model=model, owner_id=user["id"])
    await e2e.fake.script(model, [{"text": "A cat.", "usage": {"prompt_tokens": REPORTED_PROMPT}}] * 20)

    image = {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
    content = [{"type": "text", "text": "What is in these?"}, *[image] * IMAGES]

    async def ask(client: openai.AsyncOpenAI) -> str:
        try:
            await client.chat.completions.create(
                model=agent["id"],
                messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
                max_tokens=16,
            )
        except openai.APIStatusError as exc:
            assert exc.status_code == 402, exc.response.text
            return "refused"
        return "answered"

    async with e2e.client(api_key=key) as client:
        outcomes = await asyncio.gather(*(ask(client) for _ in range(10)))

    # Each request is admitted only for its worst case (100 × 1,445 prompt tokens): at most one of
    # these fits in 200,000 credits at a time, where characters ÷ 4 let all ten run.
    assert "answered" in outcomes and "refused" in outcomes
    assert IMAGES * image_tokens(model) > START // 2
    answered = outcomes.count("answered")
    spent = answered * (REPORTED_PROMPT + 2 * 16)  # 16 output tokens at most, 2 credits each

    def settled(b: dict[str, str]) -> bool:
        return Decimal(b["reserved"]) == 0 and Decimal(b["balance"]) <= START - answered * REPORTED_PROMPT

    balance = await eventually(lambda: _balance(e2e, user["id"]), settled, timeout=15)
    assert Decimal(balance["balance"]) >= 0
    assert Decimal(balance["balance"]) >= START - spent


async def _balance(e2e: StackHandle, user_id: str) -> dict[str, str]:
    return await asyncio.to_thread(e2e.admin.balance, user_id)
