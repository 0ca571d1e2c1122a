"""The gateway's offers: what each answer means, and the pause after an offer nobody took."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest

from contracts import OFFER_DECLINED, OFFER_TAKEN
from gateway.offers import RunOffers

pytestmark = pytest.mark.unit


class _Nc:
    """Answers each request with the next of ``answers`` (bytes, or an exception to raise)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []

    async def request(self, subject: str, payload: bytes, timeout: float, headers: dict[str, str]) -> Any:
        self.requests.append((subject, payload, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(data=answer)


@pytest.mark.parametrize(
    ("answer", "outcome", "paused"),
    [
        (OFFER_TAKEN, "taken", False),
        (nats.errors.TimeoutError(), "unanswered", True),
        (OFFER_DECLINED, "declined", True),
        (b"something else", "declined", True),
        (nats.errors.NoRespondersError(), "no_runner", True),
        (nats.errors.ConnectionClosedError(), "not_sent", False),
    ],
)
async def test_each_answer(answer: Any, outcome: str, paused: bool) -> None:
    nc = _Nc(answer)
    offers = RunOffers(nc, "ns.run.offer.v1", pause_s=60, unanswered_pause_s=60)  # type: ignore[arg-type]
    assert offers.worth_offering()
    assert await offers.offer("run-1", b"{}", {"traceparent": "x"}, 1.0) == outcome
    assert nc.requests == [("ns.run.offer.v1", b"{}", {"traceparent": "x"})]
    assert offers.worth_offering() is not paused


async def test_offers_resume_after_the_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("gateway.offers.time.monotonic", lambda: clock[0])
    offers = RunOffers(_Nc(nats.errors.NoRespondersError()), "s", pause_s=0.05)  # type: ignore[arg-type]
    await offers.offer("run-1", b"{}", {}, 1.0)
    clock[0] += 0.049
    assert not offers.worth_offering()
    clock[0] += 0.002
    assert offers.worth_offering()


async def test_an_unanswered_offer_pauses_offers_much_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A silent runner (stalled, or dead with its subscription still on the server) would keep getting
    a share of the offers: every run is queued for a while instead."""
    clock = [100.0]
    monkeypatch.setattr("gateway.offers.time.monotonic", lambda: clock[0])
    nc = _Nc(nats.errors.TimeoutError(), nats.errors.NoRespondersError())
    offers = RunOffers(nc, "s", pause_s=0.05, unanswered_pause_s=30)  # type: ignore[arg-type]
    assert await offers.offer("run-1", b"{}", {}, 1.0) == "unanswered"
    clock[0] += 29.9
    assert not offers.worth_offering()
    clock[0] += 0.2
    assert offers.worth_offering()
    # A short pause never shortens a long one.
    offers._paused_until = clock[0] + 30
    assert await offers.offer("run-2", b"{}", {}, 1.0) == "no_runner"
    clock[0] += 1
    assert not offers.worth_offering()


async def test_offers_refused_by_nats_are_made_no_more() -> None:
    """A NATS server whose users predate offers refuses the publish and answers nothing; its error,
    heard on the connection, turns offers off for good."""
    offers = RunOffers(_Nc(), "ns.run.offer.v1")  # type: ignore[arg-type]
    offers.heard(Exception('nats: permissions violation for publish to "ns.billing.admit.v1"'))
    offers.heard(Exception("nats: slow consumer"))
    assert offers.worth_offering() and not offers.refused
    offers.heard(Exception('nats: permissions violation for publish to "ns.run.offer.v1"'))
    assert offers.refused and not offers.worth_offering()
