"""Runs offered straight to a runner with a free slot, one NATS hop instead of the RUNS queue's two.

A gateway first offers a run on :attr:`contracts.Subjects.run_offer` (core NATS request/reply, queue
group :data:`contracts.RUNNER_QUEUE`): one runner that listens gets it, answers
:data:`contracts.OFFER_TAKEN` and runs it, or :data:`contracts.OFFER_DECLINED` when it has no room
after all; a run nobody takes goes to the RUNS queue as before. A runner that is idle therefore starts
a run in one core NATS hop (about 0.3 ms here) instead of a JetStream publish, store and pull (about
0.6 ms), and nothing is stored, acknowledged or pulled again for it.

A runner listens only while it could take a run: a free slot and an event loop that keeps up
(:mod:`runner.backpressure`). When that stops, it drains its subscription (an offer already on its way
is still answered, declined), so the gateways' offers go to runners with room or, with none, straight
to the queue: NATS answers "no responders" at once. When a slot frees up it listens again.

A NATS server whose users predate offers refuses the runner's answers (they go to the gateway's
inbox) or its subscription: the lane hears the permissions error (:meth:`OfferLane.heard`) and stops
for good, and every run reaches this runner through the queue.

Nothing is lost that the queue would have kept: the queue's part ends when a runner acks a run, which
it does the moment it pulls it (a run must never run twice), and an offer is answered the moment it is
taken. Only the wait for a free runner needs the queue's storage, and an offered run does not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts import OFFER_DECLINED, OFFER_TAKEN, RUNNER_QUEUE
from servicekit.natsio import permission_denied

log = logging.getLogger(__name__)


class OfferLane:
    """This runner's subscription to offered runs, kept while :func:`can_take` says there is room."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        *,
        can_take: Callable[[], bool],
        take: Callable[[Msg], None],
        on_answer: Callable[[bool], None] | None = None,
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._can_take = can_take
        self._take = take
        self._on_answer = on_answer
        self._sub: Subscription | None = None
        self._stopped = False
        self._syncing = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return self._sub is not None

    async def start(self) -> None:
        await self.sync()

    def sync_soon(self) -> None:
        """:meth:`sync` in the background (from a callback that cannot wait)."""
        if not self._stopped and self.listening != self._can_take():
            self._in_background(self.sync())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="runner-offer-lane")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def sync(self) -> None:
        """Listen when a run could be taken, stop listening when not."""
        if self._syncing:
            return
        self._syncing = True
        try:
            while not self._stopped and self.listening != self._can_take():
                if self._sub is None:
                    self._sub = await self._nc.subscribe(self._subject, queue=RUNNER_QUEUE, cb=self._on_offer)
                else:
                    await self._drain()
            if self._stopped:  # stopped while it subscribed
                await self._drain()
        except nats.errors.Error as exc:  # a closed or reconnecting connection: the next sync tries again
            log.debug("offer lane not synced: %s", type(exc).__name__)
        finally:
            self._syncing = False

    async def _drain(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            # Drained, not dropped: an offer the server sent before it saw the unsubscribe is answered.
            with contextlib.suppress(nats.errors.Error):
                await sub.drain()

    async def _on_offer(self, msg: Msg) -> None:
        if not msg.reply:
            return
        taken = not self._stopped and self._can_take()
        if taken:
            self._take(msg)  # takes its slot now, before this callback yields
        with contextlib.suppress(nats.errors.Error):
            # The headers are not echoed (nats-py's ``respond`` would send the trace context back).
            await self._nc.publish(msg.reply, OFFER_TAKEN if taken else OFFER_DECLINED)
        if self._on_answer is not None:
            self._on_answer(taken)
        if not taken:
            self.sync_soon()

    def heard(self, error: Exception) -> None:
        """An error the NATS server reported: answers (to a gateway's inbox) or the subscription refused
        stop the lane for good. Called from the connection's reader: it must not wait (a drain waits for
        the server's answer, which that reader has to read), so the drain runs in the background."""
        if self._stopped:
            return
        if permission_denied(error, "publish", "_INBOX") or permission_denied(error, "subscription", self._subject):
            log.error(
                "NATS refuses this runner's part in run offers (%s): it takes runs from the queue only. Give "
                "the runner's NATS user subscribe on %s and allow_responses (the chart's nats-permissions.yaml "
                "has them), or set RUNNER_TAKE_OFFERS=false",
                error,
                self._subject,
            )
            self._stopped = True  # declines at once whatever arrives meanwhile
            self._in_background(self._drain())

    async def stop(self) -> None:
        """Listen no more (offers already on their way are declined)."""
        self._stopped = True
        await self._drain()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
