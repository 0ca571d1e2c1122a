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
        (nats.errors.TimeoutError(), "unanswered", False),
        (OFFER_DECLINED, "declined", True),
        (b"something else", "declined", True),
        (nats.errors.NoRespondersError(), "no_runner", True),
        (nats.errors.ConnectionClosedError(), "not_sent", False),
    ],
)
async def test_each_answer(answer: Any, outcome: str, paused: bool) -> None:
    nc = _Nc(answer)
    offers = RunOffers(nc, "ns.run.offer.v1", pause_s=60)  # type: ignore[arg-type]
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
