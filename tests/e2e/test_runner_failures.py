"""Failures of the runner fleet, on a stack of its own: a runner killed mid-stream, and no runner at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import StackHandle, own_stack

pytestmark = pytest.mark.e2e

#: GATEWAY_IDLE_TIMEOUT_S and GATEWAY_QUEUE_TIMEOUT_S of the test stack, plus slack for a loaded machine.
BOUND_S = 3 + 5
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def broken(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str, redis_url: str
) -> Iterator[StackHandle]:
    run_dir: Path = tmp_path_factory.mktemp("broken-stack")
    with own_stack(run_dir, nats_url, postgres_url, redis_url) as handle:
        yield handle


def _ensure_runner(handle: StackHandle) -> None:
    if not all(handle.stack.processes[n].running for n in handle.stack.runner_names):
        handle.stack.restart("runner")


async def test_runner_killed_mid_stream_ends_the_stream_with_an_error(broken: StackHandle) -> None:
    _ensure_runner(broken)
    agent = broken.agent("openai")
    long_text = " ".join(f"w{i}" for i in range(500))
    await broken.fake.script(agent.model, [{"text": long_text, "tokens_per_s": 50}])

    async with broken.client() as client:
        stream = await client.chat.completions.create(model=agent.id, messages=HELLO, stream=True)  # type: ignore[arg-type]
        got_text = asyncio.Event()

        async def consume() -> None:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got_text.set()

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(got_text.wait(), timeout=10)
        broken.stack.kill("runner")
        killed_at = time.monotonic()
        with pytest.raises(openai.APIError):
            await asyncio.wait_for(consumer, timeout=BOUND_S)
        assert time.monotonic() - killed_at < BOUND_S


async def test_no_runner_is_503_within_the_queue_timeout(broken: StackHandle) -> None:
    agent = broken.agent("openai")
    broken.stack.stop_service("runner")
    try:
        async with broken.client() as client:
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model=agent.id, messages=HELLO, stream=True)  # type: ignore[arg-type]
            assert caught.value.status_code == 503
            assert time.monotonic() - started < BOUND_S
        assert await broken.fake.requests(agent.model) == []
    finally:
        broken.stack.restart("runner")

    # A runner is back: the same agent answers again.
    await broken.fake.script(agent.model, [{"text": "Back again."}])
    async with broken.client() as client:
        completion = await client.chat.completions.create(model=agent.id, messages=HELLO)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Back again."
