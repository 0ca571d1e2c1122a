"""The gateway offers each run straight to a runner with room before the RUNS queue: taken, it is not
queued; declined or with nobody listening, it is queued; unanswered, it is not queued either (it may
have been taken), and its first event is waited for as a queued run's (real NATS; a fake runner)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import openai
import pytest

from contracts import OFFER_DECLINED, OFFER_TAKEN, RUNNER_QUEUE, RunClosed, RunRequest
from servicekit.natsio import flush_in_order

from .conftest import RunContext, Stack, play
from .test_chat_stream import say_hello

pytestmark = pytest.mark.integration

Answer = Literal["take", "decline", "answer_late", "frozen", "decline_late", "take_late"]
#: When the late answers come, and when a run taken late starts (seconds after the offer; the gateway
#: waits rpc_timeout_s, 1 s here, for an answer).
LATE_ANSWER_S = 1.3
LATE_START_S = 3.5


class OfferTaker:
    """A runner's offer lane as the gateway sees it, answering as told; a taken run plays its script."""

    def __init__(self, stack: Stack, answer: Answer) -> None:
        self.stack, self.answer = stack, answer
        self.offered: list[RunRequest] = []
        self.headers: list[dict[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_offer(self, msg: Any) -> None:
        request = RunRequest.model_validate_json(msg.data)
        self.offered.append(request)
        self.headers.append(dict(msg.headers or {}))
        if self.answer == "decline":
            await self.stack.nc.publish(msg.reply, OFFER_DECLINED)
            return
        if self.answer == "frozen":
            return  # a runner frozen with its subscription still on the server: nothing, ever
        if self.answer in ("decline_late", "take_late"):
            # A runner whose event loop lagged: the offer is answered after the gateway stopped waiting.
            task = asyncio.create_task(self._answer_late(msg.reply, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if self.answer == "take":
            await self.stack.nc.publish(msg.reply, OFFER_TAKEN)
        # answer_late: the gateway's wait for an answer (rpc_timeout_s, 1 s here) runs out; the run
        # starts after it all the same, as a runner's would whose answer was lost.
        delay = 1.1 if self.answer == "answer_late" else 0.0
        task = asyncio.create_task(self._play(request, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_late(self, reply: str, request: RunRequest) -> None:
        await asyncio.sleep(LATE_ANSWER_S)
        await self.stack.nc.publish(reply, OFFER_TAKEN if self.answer == "take_late" else OFFER_DECLINED)
        if self.answer == "take_late":
            await self._play(request, LATE_START_S - LATE_ANSWER_S)

    async def _play(self, request: RunRequest, delay: float) -> None:
        await asyncio.sleep(delay)
        fakes = self.stack.fakes
        await play(fakes.scripts[request.agent.id], RunContext(self.stack.nc, self.stack.subjects, request), fakes)


@pytest.fixture
def answer() -> Answer:
    return "take"


@pytest.fixture
async def taker(stack: Stack, answer: Answer) -> AsyncIterator[OfferTaker]:
    taker = OfferTaker(stack, answer)
    sub = await stack.nc.subscribe(stack.subjects.run_offer, queue=RUNNER_QUEUE, cb=taker.on_offer)
    await flush_in_order(stack.nc)
    yield taker
    await sub.unsubscribe()


def _offers(stack: Stack) -> dict[str, float]:
    metric = stack.app.state.ctx.metrics.run_offers
    outcomes = ("taken", "unanswered", "declined", "no_runner", "not_sent")
    return {o: v for o in outcomes if (v := metric.labels(o)._value.get())}


def _late_answers(stack: Stack) -> dict[str, float]:
    metric = stack.app.state.ctx.metrics.run_offers_late
    return {a: v for a in ("taken", "declined", "no_runner") if (v := metric.labels(a)._value.get())}


async def _chat(stack: Stack, stream: bool) -> str:
    async with stack.client() as client:
        if not stream:
            done = await client.chat.completions.create(
                model="agent_hello", messages=[{"role": "user", "content": "hi"}]
            )
            return done.choices[0].message.content or ""
        chunks = await client.chat.completions.create(
            model="agent_hello", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


@pytest.mark.parametrize("stream", [True, False])
async def test_a_taken_run_is_not_queued(stack: Stack, taker: OfferTaker, stream: bool) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    assert await _chat(stack, stream) == "Hello world"
    assert [r.agent.id for r in taker.offered] == ["agent_hello"]
    assert "traceparent" in taker.headers[0]
    assert stack.fakes.run_requests == []  # never on RUNS
    assert _offers(stack) == {"taken": 1}


@pytest.mark.parametrize("answer", ["decline"])
async def test_a_declined_run_is_queued_once(stack: Stack, taker: OfferTaker) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    assert await _chat(stack, True) == "Hello world"
    assert [r.run_id for r in stack.fakes.run_requests] == [r.run_id for r in taker.offered]
    assert _offers(stack) == {"declined": 1}


@pytest.mark.parametrize("answer", ["answer_late"])
async def test_an_unanswered_offer_is_not_queued_as_well(stack: Stack, taker: OfferTaker) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    assert await _chat(stack, True) == "Hello world"
    assert len(taker.offered) == 1
    assert stack.fakes.run_requests == []  # queued too, it could have run twice
    assert _offers(stack) == {"unanswered": 1}
    # The silent runner is offered nothing more for a while: the next run is queued at once.
    assert await _chat(stack, True) == "Hello world"
    assert len(taker.offered) == 1 and len(stack.fakes.run_requests) == 1


@pytest.mark.parametrize("answer", ["decline_late"])
async def test_an_offer_declined_late_is_queued_then(stack: Stack, taker: OfferTaker) -> None:
    """A runner whose loop lagged past the gateway's wait declines what it can no longer take: nobody
    has the run, so it is queued when that answer comes, and served (it was lost, a 503, before)."""
    stack.fakes.agent("agent_hello", say_hello)
    started = time.monotonic()
    assert await _chat(stack, True) == "Hello world"
    assert time.monotonic() - started >= LATE_ANSWER_S
    assert [r.run_id for r in stack.fakes.run_requests] == [r.run_id for r in taker.offered]  # queued once
    assert _offers(stack) == {"unanswered": 1}
    assert _late_answers(stack) == {"declined": 1}
    assert stack.fakes.cancels == []


@pytest.mark.parametrize("answer", ["take_late"])
@pytest.mark.parametrize("settings_overrides", [{"queue_timeout_s": 6.0}])
async def test_an_offer_taken_late_is_waited_for_as_any_run(stack: Stack, taker: OfferTaker) -> None:
    """Taken after the gateway stopped waiting for the answer: a runner has it, so its start is waited
    for as long as any run's, not only UNANSWERED_START_S (which ends before this run starts); it is
    not queued as well."""
    stack.fakes.agent("agent_hello", say_hello)
    started = time.monotonic()
    assert await _chat(stack, True) == "Hello world"
    assert time.monotonic() - started >= LATE_START_S
    assert len(taker.offered) == 1 and stack.fakes.run_requests == []
    assert _offers(stack) == {"unanswered": 1}
    assert _late_answers(stack) == {"taken": 1}


async def test_with_no_runner_listening_the_run_is_queued(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    assert await _chat(stack, True) == "Hello world"
    assert len(stack.fakes.run_requests) == 1
    assert _offers(stack) == {"no_runner": 1}


@pytest.mark.parametrize("settings_overrides", [{"offer_runs": False}])
async def test_offers_can_be_switched_off(stack: Stack, taker: OfferTaker) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    assert await _chat(stack, True) == "Hello world"
    assert taker.offered == [] and len(stack.fakes.run_requests) == 1


@pytest.mark.parametrize("answer", ["frozen"])
@pytest.mark.parametrize("settings_overrides", [{"queue_timeout_s": 10.0}])
async def test_a_frozen_runners_offer_fails_fast_and_the_retry_is_queued(stack: Stack, taker: OfferTaker) -> None:
    """Its run is not queued (it may have been taken), but the client is not held for the whole queue
    timeout: a quick 503 (no answer in rpc_timeout_s, then UNANSWERED_START_S for a first event), and
    the retry goes to the queue."""
    stack.fakes.agent("agent_hello", say_hello)
    closed: list[RunClosed] = []

    async def on_closed(msg: Any) -> None:
        closed.append(RunClosed.model_validate_json(msg.data))

    sub = await stack.nc.subscribe(stack.subjects.usage_run_closed, cb=on_closed)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as raised:
        await _chat(stack, True)
    elapsed = time.monotonic() - started
    assert raised.value.status_code == 503
    assert elapsed < 5.0, elapsed  # rpc_timeout_s (1 s) + UNANSWERED_START_S (2 s), not the 10 s queue timeout
    assert len(taker.offered) == 1 and stack.fakes.run_requests == []
    # A runner that wakes up with it drops it.
    await asyncio.wait_for(stack.fakes.cancelled.wait(), 2)
    assert [c.run_id for c in stack.fakes.cancels] == [r.run_id for r in taker.offered]
    # Nobody else would ever close it: its hold goes back at once.
    (offered,) = taker.offered
    for _ in range(100):
        if closed:
            break
        await asyncio.sleep(0.02)
    await sub.unsubscribe()
    assert [(c.run_id, c.reservation_id, c.calls) for c in closed] == [(offered.run_id, f"res_{offered.run_id}", 0)]
    assert await _chat(stack, True) == "Hello world"  # queued, without an offer
    assert len(taker.offered) == 1 and len(stack.fakes.run_requests) == 1
