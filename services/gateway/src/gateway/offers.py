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
  event as it would for a queued run, and its queue timeout applies.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Literal

import nats.errors

from contracts import OFFER_TAKEN

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

#: After an offer nobody took, how long runs are queued without being offered first.
PAUSE_S = 0.05

Outcome = Literal["taken", "unanswered", "declined", "no_runner", "not_sent"]


class RunOffers:
    """This gateway's offers of runs to runners with room."""

    def __init__(self, nc: Client, subject: str, *, pause_s: float = PAUSE_S) -> None:
        self._nc = nc
        self._subject = subject
        self._pause_s = pause_s
        self._paused_until = 0.0

    def worth_offering(self) -> bool:
        """False for a moment after an offer nobody took."""
        return time.monotonic() >= self._paused_until

    async def offer(self, run_id: str, payload: bytes, headers: dict[str, str], timeout_s: float) -> Outcome:
        """Offer the run; ``taken`` or ``unanswered`` mean it must not be queued as well."""
        try:
            reply = await self._nc.request(self._subject, payload, timeout=timeout_s, headers=headers)
        except nats.errors.NoRespondersError:
            self._pause()
            return "no_runner"
        except nats.errors.TimeoutError:
            log.warning("run %s: no answer to its offer within %.1f s; waiting for it to start", run_id, timeout_s)
            return "unanswered"
        except nats.errors.Error as exc:
            # Not sent (the connection is closed or draining): the queue's publish decides what happens.
            log.info("run %s: not offered (%s)", run_id, type(exc).__name__)
            return "not_sent"
        if reply.data == OFFER_TAKEN:
            return "taken"
        self._pause()
        return "declined"

    def _pause(self) -> None:
        self._paused_until = time.monotonic() + self._pause_s
