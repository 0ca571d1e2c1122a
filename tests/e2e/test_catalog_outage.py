"""A drill: the catalog stops. Callers the gateway has seen recently keep working (their answers are
served past the cache's expiry for a bounded stale window); a key it has never seen gets a 503."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import StackHandle, own_stack

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello"}]
CACHE_TTL_S = 0.5


@pytest.fixture
def handle(tmp_path: Path, nats_url: str, postgres_url: str, redis_url: str) -> Iterator[StackHandle]:
    env = {"gateway": {"GATEWAY_AUTH_CACHE_TTL_S": str(CACHE_TTL_S), "GATEWAY_AUTH_STALE_S": "120"}}
    with own_stack(tmp_path / "stack", nats_url, postgres_url, redis_url, service_env=env) as handle:
        yield handle


async def test_recent_callers_ride_out_a_catalog_outage(handle: StackHandle) -> None:
    agent = handle.agent("openai")
    stranger = handle.admin.create_user("stranger")
    stranger_key = handle.admin.create_api_key(stranger["id"], "k")["key"]
    async with handle.client() as client:
        await client.chat.completions.create(model=agent.id, messages=HELLO)  # type: ignore[arg-type]
        handle.stack.stop_service("catalog")
        await asyncio.sleep(4 * CACHE_TTL_S)  # the cached answers expire; the catalog is still gone
        answer = await client.chat.completions.create(model=agent.id, messages=HELLO)  # type: ignore[arg-type]
        assert answer.choices[0].message.content
    async with handle.client(api_key=stranger_key) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=agent.id, messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.status_code == 503
    handle.stack.restart("catalog")
