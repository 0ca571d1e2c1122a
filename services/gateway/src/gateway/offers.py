"""Offering a run straight to a runner with a free slot before queueing it (see :mod:`runner.offers`).

An idle runner then starts the run one core NATS hop after the gateway sends it, instead of after a
JetStream publish, store and pull; nothing is stored or acknowledged for it. The offer is a NATS
request on :attr:`contracts.Subjects.run_offer`, which only runners with room listen to:

- ``taken``: the run is that runner's; it is not queued.
- ``declined`` (the runner filled up as the offer arrived), or *no responders* (no runner has room,
  or none is up): the run goes to the RUNS queue, exactly as without offers, and for
  :data:`PAUSE_S` this gateway queues runs without offering them first, so a busy fleet costs an
  offer now and then, not one a run.
- no answer within the timeout: a runner may have taken the run and its answer been late or lost,
  so it is **not** queued as well (a run must never run twice); the gateway waits for the run's first
  event, for :data:`UNANSWERED_START_S` rather than the whole queue timeout, and for the offer's answer
  all the while (:attr:`Offered.late`). A late ``taken`` makes it wait for the run as for any other; a
  late ``declined`` — a runner whose event loop lagged past the timeout, which declines what it can no
  longer take — means nobody has the run, so it is queued then. A runner that stays silent is
  stalled, or dead without its connection closing (a lost node: NATS keeps its subscription until
  its pings go unanswered, minutes by default), and NATS would keep handing it a share of the offers;
  so for :data:`UNANSWERED_PAUSE_S` this gateway offers nothing and queues every run, which any live
  runner takes.

A NATS server whose users predate offers refuses the gateway's publish on the offer subject, and
answers nothing: the first offer goes unanswered, and the server's permissions error (heard by the
connection, :meth:`RunOffers.heard`) turns offers off for good, with an error in the log.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Literal, NamedTuple

import nats.errors
from nats.aio.client import NO_RESPONDERS_STATUS
from nats.js.api import Header

from contracts import OFFER_TAKEN
from servicekit.natsio import permission_denied

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = logging.getLogger(__name__)

#: After an offer nobody took, how long runs are queued without being offered first.
PAUSE_S = 0.05
#: After an offer nobody answered, how long runs are queued without being offered first.
UNANSWERED_PAUSE_S = 30.0
#: After an offer nobody answered, how long its run's first event is waited for (not the whole queue
#: timeout): a runner that took it and whose answer was lost starts it at once, while a frozen one
#: would hold the client for the whole queue timeout. A quick ``503`` lets the client try again (the
#: openai SDKs do by themselves), and the queue serves the retry.
UNANSWERED_START_S = 2.0

Outcome = Literal["taken", "unanswered", "declined", "no_runner", "not_sent"]
#: Answers that settle who has the run: a runner (``taken``), or nobody (the queue's turn).
ANSWERS: frozenset[Outcome] = frozenset({"taken", "declined", "no_runner"})


class Offered(NamedTuple):
    outcome: Outcome
    #: For ``unanswered``: the answer should it still come (within the ``late_s`` the offer was given),
    #: else ``unanswered`` again, or never. None otherwise.
    late: asyncio.Future[Outcome] | None = None


_OFFERED: dict[Outcome, Offered] = {o: Offered(o) for o in ("taken", "declined", "no_runner", "not_sent")}


class RunOffers:
    """This gateway's offers of runs to runners with room."""

    def __init__(
        self, nc: Client, subject: str, *, pause_s: float = PAUSE_S, unanswered_pause_s: float = UNANSWERED_PAUSE_S
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._pause_s = pause_s
        self._unanswered_pause_s = unanswered_pause_s
        self._paused_until = 0.0
        #: NATS refused an offer (a server whose users predate offers): none is made any more.
        self.refused = False

    def worth_offering(self) -> bool:
        """False for a moment after an offer nobody took, and for good once NATS refused one."""
        return not self.refused and time.monotonic() >= self._paused_until

    def heard(self, error: Exception) -> None:
        """An error the NATS server reported on the connection: a refused offer turns offers off."""
        if not self.refused and permission_denied(error, "publish", self._subject):
            self.refused = True
            log.error(
                "NATS refuses this gateway's run offers (%s): every run is queued instead. Give the gateway's "
                "NATS user publish on %s (the chart's nats-permissions.yaml has it), or set GATEWAY_OFFER_RUNS=false",
                error,
                self._subject,
            )

    async def offer(
        self, run_id: str, payload: bytes, headers: dict[str, str], timeout_s: float, late_s: float = 0.0
    ) -> Offered:
        """Offer the run; ``taken`` or ``unanswered`` mean it must not be queued as well. An answer that
        comes after ``timeout_s`` but within ``late_s`` more is :attr:`Offered.late`'s."""
        try:
            # No headers at all rather than an empty block: nats-py would send and the runner parse one.
            answer = await _ask(self._nc, self._subject, payload, headers or None)
        except nats.errors.Error as exc:
            # Not sent (the connection is closed or draining): the queue's publish decides what happens.
            log.info("run %s: not offered (%s)", run_id, type(exc).__name__)
            return _OFFERED["not_sent"]
        try:
            await asyncio.wait_for(asyncio.shield(answer), timeout_s)
        except TimeoutError:
            log.warning(
                "run %s: no answer to its offer within %.1f s; waiting for it to start or answer, and queueing "
                "runs without offers for %.0f s",
                run_id,
                timeout_s,
                self._unanswered_pause_s,
            )
            self._pause(self._unanswered_pause_s)
            return Offered("unanswered", _late(answer, late_s))
        except asyncio.CancelledError:
            answer.cancel()
            raise
        outcome = _outcome(answer)
        if outcome != "taken":
            self._pause()
        return _OFFERED[outcome]

    def _pause(self, seconds: float | None = None) -> None:
        until = time.monotonic() + (self._pause_s if seconds is None else seconds)
        self._paused_until = max(self._paused_until, until)


async def _ask(nc: Client, subject: str, payload: bytes, headers: dict[str, str] | None) -> asyncio.Future[Msg]:
    """Publish a request, and the future of its reply (nats-py's ``request`` without its wait, which
    drops an answer that comes after its timeout: an offer's late answer still says who has the run).
    Uses the connection's reply subscription as ``Client.request`` does (nats-py 2.x, pinned; the
    offer tests against real NATS fail should it change). Cancelling the future forgets the request."""
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    if not nc._resp_sub_prefix:
        await nc._init_request_sub()
    prefix = nc._resp_sub_prefix
    assert prefix is not None
    token = nc._nuid.next()
    token.extend(secrets.token_hex(2).encode())
    key = token.decode()
    answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
    answer.add_done_callback(lambda _: nc._resp_map.pop(key, None))
    nc._resp_map[key] = answer
    try:
        await nc.publish(subject, payload, reply=(prefix + token).decode(), headers=headers)
    except BaseException:
        answer.cancel()
        raise
    return answer


def _outcome(answer: asyncio.Future[Msg]) -> Outcome:
    if answer.cancelled():
        return "unanswered"
    reply = answer.result()
    if reply.headers and reply.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
        return "no_runner"
    return "taken" if reply.data == OFFER_TAKEN else "declined"


def _late(answer: asyncio.Future[Msg], late_s: float) -> asyncio.Future[Outcome]:
    """The outcome of ``answer`` should it come within ``late_s``; ``unanswered`` if not. Cancelling it
    forgets the request."""
    loop = answer.get_loop()
    late: asyncio.Future[Outcome] = loop.create_future()
    expire = loop.call_later(late_s, answer.cancel)

    def settle(_: object) -> None:
        expire.cancel()
        if not late.done():
            late.set_result(_outcome(answer))

    answer.add_done_callback(settle)
    late.add_done_callback(lambda _: answer.cancel())
    return late
