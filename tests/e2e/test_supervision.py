"""A supervised stack (what ``make run`` runs): a service that dies is started again and serves; one
stopped on purpose stays down. The tests' own stacks are not supervised (a killed service stays dead)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import openai
import pytest

from devstack.procs import tcp_accepts
from tests.e2e.conftest import StackHandle, own_stack

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def supervised(tmp_path: Path, nats_url: str, postgres_url: str, redis_url: str) -> Iterator[StackHandle]:
    with own_stack(tmp_path / "stack", nats_url, postgres_url, redis_url, supervise=True) as handle:
        yield handle


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _answer(handle: StackHandle, agent_id: str, timeout: float = 15) -> str | None:
    """The agent's answer, asking again while the stack recovers (a 503 while no runner is heard …)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with handle.client() as client:
                completion = await client.chat.completions.create(model=agent_id, messages=HELLO)  # type: ignore[arg-type]
            return completion.choices[0].message.content
        except (openai.APIStatusError, openai.APIConnectionError):
            assert time.monotonic() < deadline, "no answer after the restart"
            await asyncio.sleep(0.2)


async def test_a_killed_service_comes_back_and_a_stopped_one_stays_down(supervised: StackHandle) -> None:
    stack = supervised.stack
    reports: list[str] = []
    assert stack.supervisor is not None
    stack.supervisor._report = reports.append  # what make run prints, kept here
    agent = supervised.agent("openai")
    text = "Served after a restart."

    for name in ("runner-0", "gateway", "fakellm"):
        process = stack.processes[name]
        pid = process.pid
        stack.kill(name)
        await _until(lambda n=name: stack.restarts(n) == 1, 15, f"{name} was not restarted: {reports}")  # type: ignore[misc]
        assert process.running and process.pid != pid
        assert any(r.startswith(f"{name} exited unexpectedly (code -9)") for r in reports), reports
        assert f"{name} restarted (restart 1)" in reports
        if name == "fakellm":
            # Back on the port the runners were told (its scripts are gone with the old process).
            url = urlparse(stack.fakellm_url)
            await _until(lambda u=url: tcp_accepts(u.hostname, u.port), 15, "the fake LLM is not back on its port")  # type: ignore[misc]
        else:
            await asyncio.to_thread(process.wait_ready, 30)
        await supervised.fake.script(agent.model, [{"text": text}])
        assert await _answer(supervised, agent.id) == text

    # A stop on purpose is not undone. Proof that the supervisor looked meanwhile: a service killed
    # after it, with a back-off as long as the runner's would be, is restarted; the runner is not.
    stack.stop_service("runner")
    stack.kill("gateway")
    await _until(lambda: stack.restarts("gateway") == 2, 15, f"the gateway was not restarted again: {reports}")
    assert not stack.processes["runner-0"].running and stack.restarts("runner-0") == 1
