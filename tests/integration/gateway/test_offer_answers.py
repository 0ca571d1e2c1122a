"""The gateway's offers against real NATS: what each answer means, an answer that comes after the
gateway stopped waiting, and the pauses after an offer nobody took (real time, short pauses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from contracts import OFFER_DECLINED, OFFER_TAKEN, RUNNER_QUEUE
from gateway.offers import RunOffers
from servicekit.natsio import flush_in_order

pytestmark = pytest.mark.integration


class Responder:
    """A runner's offer lane as told: answers ``answer`` after ``delay`` seconds (None: never)."""

    def __init__(self) -> None:
        self.answer: bytes | None = OFFER_TAKEN
        self.delay = 0.0
        self.offers: list[tuple[bytes, dict[str, str]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_offer(self, msg: Any) -> None:
        self.offers.append((msg.data, dict(msg.headers or {})))
        if self.answer is None:
            return
        if not self.delay:
            await msg.respond(self.answer)
            return
        task = asyncio.create_task(self._later(msg, self.answer, self.delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _later(msg: Any, answer: bytes, delay: float) -> None:
        await asyncio.sleep(delay)
        await msg.respond(answer)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
def subject(namespace: str) -> str:
    return f"{namespace}.run.offer.v1"


@pytest.fixture
async def responder(nc: Client, subject: str) -> AsyncIterator[Responder]:
    responder = Responder()
    sub = await nc.subscribe(subject, queue=RUNNER_QUEUE, cb=responder.on_offer)
    await flush_in_order(nc)
    yield responder
    await sub.unsubscribe()


def _requests_left(nc: Client) -> int:
    return len(nc._resp_map)


async def _forgotten(nc: Client) -> bool:
    """Whether the connection holds no request any more (its callbacks take a loop turn or two)."""
    for _ in range(10):
        if not _requests_left(nc):
            return True
        await asyncio.sleep(0)
    return False


@pytest.mark.parametrize(
    ("answer", "outcome", "paused"),
    [(OFFER_TAKEN, "taken", False), (OFFER_DECLINED, "declined", True), (b"something else", "declined", True)],
)
async def test_each_answer(nc: Client, subject: str, responder: Responder, answer: bytes, outcome: str, paused: bool):
    responder.answer = answer
    offers = RunOffers(nc, subject, pause_s=60, unanswered_pause_s=60)
    assert offers.worth_offering()
    offered = await offers.offer("run-1", b"{}", {"traceparent": "x"}, 2.0, late_s=1.0)
    assert offered.outcome == outcome and offered.late is None
    assert responder.offers == [(b"{}", {"traceparent": "x"})]
    assert offers.worth_offering() is not paused
    assert _requests_left(nc) == 0


async def test_no_runner_listening(nc: Client, subject: str) -> None:
    offers = RunOffers(nc, subject, pause_s=60)
    offered = await offers.offer("run-1", b"{}", {}, 2.0, late_s=1.0)
    assert offered.outcome == "no_runner" and not offers.worth_offering()
    assert _requests_left(nc) == 0


async def test_a_closed_connection_sends_nothing(nats_url: str, subject: str) -> None:
    client = await nats.connect(nats_url)
    await client.close()
    offers = RunOffers(client, subject, pause_s=60)
    assert (await offers.offer("run-1", b"{}", {}, 1.0)).outcome == "not_sent"
    assert offers.worth_offering()  # the queue's publish decides; offers are not paused for it


@pytest.mark.parametrize(("answer", "late"), [(OFFER_DECLINED, "declined"), (OFFER_TAKEN, "taken")])
async def test_an_answer_after_the_timeout_is_the_late_answer(
    nc: Client, subject: str, responder: Responder, answer: bytes, late: str
) -> None:
    responder.answer, responder.delay = answer, 0.4
    offers = RunOffers(nc, subject, unanswered_pause_s=60)
    offered = await offers.offer("run-1", b"{}", {}, 0.1, late_s=2.0)
    assert offered.outcome == "unanswered" and not offers.worth_offering()
    assert offered.late is not None and not offered.late.done()
    assert await asyncio.wait_for(offered.late, 3) == late
    assert _requests_left(nc) == 0


async def test_no_answer_even_late_is_unanswered(nc: Client, subject: str, responder: Responder) -> None:
    responder.answer = None
    offers = RunOffers(nc, subject)
    offered = await offers.offer("run-1", b"{}", {}, 0.1, late_s=0.2)
    assert offered.outcome == "unanswered" and offered.late is not None
    assert await asyncio.wait_for(offered.late, 2) == "unanswered"
    assert _requests_left(nc) == 0


async def test_a_late_answer_given_up_is_forgotten(nc: Client, subject: str, responder: Responder) -> None:
    responder.answer = None
    offered = await RunOffers(nc, subject).offer("run-1", b"{}", {}, 0.1, late_s=60)
    assert offered.late is not None and _requests_left(nc) == 1
    offered.late.cancel()
    assert await _forgotten(nc)


async def test_an_offer_given_up_by_its_caller_is_forgotten(nc: Client, subject: str, responder: Responder) -> None:
    responder.answer = None
    offering = asyncio.ensure_future(RunOffers(nc, subject).offer("run-1", b"{}", {}, 5.0, late_s=5.0))
    await asyncio.sleep(0.1)
    assert _requests_left(nc) == 1
    offering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await offering
    assert await _forgotten(nc)


async def test_offers_resume_after_the_pause(nc: Client, subject: str) -> None:
    offers = RunOffers(nc, subject, pause_s=0.2)
    assert (await offers.offer("run-1", b"{}", {}, 1.0)).outcome == "no_runner"
    assert not offers.worth_offering()
    await asyncio.sleep(0.25)
    assert offers.worth_offering()


async def test_an_unanswered_offer_pauses_offers_much_longer(nc: Client, subject: str, responder: Responder) -> None:
    """A silent runner (stalled, or dead with its subscription still on the server) would keep getting
    a share of the offers: every run is queued for a while instead."""
    responder.answer = None
    offers = RunOffers(nc, subject, pause_s=0.05, unanswered_pause_s=0.6)
    assert (await offers.offer("run-1", b"{}", {}, 0.1)).outcome == "unanswered"
    await asyncio.sleep(0.2)
    assert not offers.worth_offering()
    # A short pause never shortens a long one.
    responder.answer = OFFER_DECLINED
    assert (await offers.offer("run-2", b"{}", {}, 1.0)).outcome == "declined"
    assert not offers.worth_offering()
    await asyncio.sleep(0.5)
    assert offers.worth_offering()


def test_offers_refused_by_nats_are_made_no_more() -> None:
    """A NATS server whose users predate offers refuses the publish and answers nothing; its error,
    heard on the connection, turns offers off for good."""
    offers = RunOffers(None, "ns.run.offer.v1")  # type: ignore[arg-type]
    offers.heard(Exception('nats: permissions violation for publish to "ns.billing.admit.v1"'))
    offers.heard(Exception("nats: slow consumer"))
    assert offers.worth_offering() and not offers.refused
    offers.heard(Exception('nats: permissions violation for publish to "ns.run.offer.v1"'))
    assert offers.refused and not offers.worth_offering()
