"""A continuous pull from the shared RUNS consumer, sized to this runner's free capacity.

nats-py's ``fetch(batch=N)`` returns only when N messages arrived or its timeout ran out, so one run
published to an idle runner would wait out the whole timeout. Instead (as nats.go's ``Consume``) we
keep pull requests outstanding on the server for exactly the number of free slots, and every
RunRequest is handed over the moment the server delivers it; a slot that frees up is re-requested.
Runners therefore pull only what they can run now, which spreads load by capacity.

At most ``window`` messages are asked for at a time, however many slots are free, one pull request
per message, and each delivery asks for one more. The server takes turns among waiting pull requests,
whatever their size: a runner that had been running for a while held hundreds of one-message requests
(one per slot freed) against a restarted runner's one large request, and took nearly every new run.
Now each runner holds at most ``window`` requests of one message, and new work is shared evenly among
runners with free slots.

Bookkeeping: ``outstanding`` is how many messages our open pull requests may still bring. A delivered
message takes one off; a request that ends (408 expired, 409 …) takes off what it still had
(``Nats-Pending-Messages``). Idle heartbeats prove the requests are alive: when they stop, or the
connection was re-established, the requests are presumed gone and made again. A refused request (the
consumer was deleted …) re-creates the consumer and asks again after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

#: How long one pull request waits on the server. Short, because a runner that freezes (a stopped
#: process, a lost node whose connection the server still holds) keeps its requests there until they
#: expire, and each takes a run nobody will start: with 30 s, a frozen runner's window of requests
#: swallowed queued runs for half a minute. Renewing them costs a few messages a second per runner.
EXPIRES_S = 5.0
#: The server's idle heartbeat on each request (shorter than the expiry): silence past 2.5 of these
#: means the requests are gone.
HEARTBEAT_S = 2.0


class PullFeed:
    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        consumer: str,
        free_slots: Callable[[], int],
        deliver: Callable[[Msg], None],
        expires_s: float = EXPIRES_S,
        heartbeat_s: float = HEARTBEAT_S,
        recover: Callable[[], Awaitable[None]] | None = None,
        retry_s: float = 0.5,
        tick_s: float = 0.25,
        window: int = 16,
    ) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._free = free_slots
        self._deliver = deliver
        self._expires_ns = int(expires_s * 1e9)
        self._heartbeat_s = heartbeat_s
        self.outstanding = 0
        self._inbox = ""
        self._sub: Subscription | None = None
        self._last_heard = time.monotonic()
        self._watchdog: asyncio.Task[None] | None = None
        self._stopped = False
        self._recover = recover
        self._retry_s = retry_s
        self._tick_s = tick_s
        self._retry: asyncio.Task[None] | None = None
        self._window = window
        self._request = json.dumps(
            {"batch": 1, "expires": self._expires_ns, "idle_heartbeat": int(heartbeat_s * 1e9)}
        ).encode()

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)
        self._watchdog = asyncio.create_task(self._watch(), name="runner-pull-watchdog")
        await self.refill()

    async def refill(self) -> None:
        """Ask for as many requests as there are free slots (up to the window) not already asked for."""
        want = min(self._free(), self._window) - self.outstanding
        if want <= 0 or self._stopped:
            return
        self.outstanding += want
        # One request per message: the server takes turns among waiting requests, so runners get new
        # work in proportion to what they asked for, not to how many small requests each has left.
        for _ in range(want):
            await self._nc.publish(self._next, self._request, reply=self._inbox)

    async def _on_message(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is None or msg.data:
            self.outstanding = max(0, self.outstanding - 1)
            self._deliver(msg)
            await self.refill()  # the window's place: a no-op when no slot is free
            return
        if status == "100":  # idle heartbeat (or flow control): our requests are alive
            return
        # 408 request expired, 409 max waiting / consumer deleted, 503 no consumer …: that request is over.
        pending = msg.headers.get("Nats-Pending-Messages") if msg.headers else None
        # each request asks for one message: one that ends without saying had at most that one
        self.outstanding = max(0, self.outstanding - (int(pending) if pending else 1))
        if status == "408":
            await self.refill()
            return
        # Anything else means the consumer is in trouble: recover and ask again after a pause, never
        # in a tight loop of refused requests.
        if self._retry is None or self._retry.done():
            description = msg.headers.get("Description", "") if msg.headers else ""
            log.warning("RUNS pull refused (%s %s); recovering", status, description)
            self._retry = asyncio.create_task(self._recover_and_refill(), name="runner-pull-retry")

    async def _recover_and_refill(self) -> None:
        await asyncio.sleep(self._retry_s)
        if self._stopped:
            return
        try:
            if self._recover is not None:
                await self._recover()
            self.outstanding = 0  # requests made before the consumer came back are gone with it
            await self.refill()
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("RUNS consumer recovery failed (%s); retrying", type(exc).__name__)

    async def _watch(self) -> None:
        """Re-pull when our requests are presumed gone: after a reconnect (the server forgot them, or
        dropped them with our old connection's interest), when their heartbeats stop, or when free
        slots are not asked for (a failed recovery). Ticks often: a gap here is queueing latency."""
        reconnects = self._reconnects()
        while not self._stopped:
            await asyncio.sleep(self._tick_s)
            if not self._nc.is_connected or (self._retry is not None and not self._retry.done()):
                continue
            now = time.monotonic()
            seen = self._reconnects()
            silent = self.outstanding and now - self._last_heard > 2.5 * self._heartbeat_s
            if seen != reconnects or silent:
                log.warning(
                    "RUNS pull requests presumed lost (%s); pulling again",
                    "reconnect" if seen != reconnects else "no heartbeat",
                )
                reconnects = seen
                self.outstanding = 0
                self._last_heard = now
            if min(self._free(), self._window) > self.outstanding:
                with contextlib.suppress(nats.errors.Error):
                    await self.refill()

    def _reconnects(self) -> int:
        return int(self._nc.stats.get("reconnects", 0))

    async def stop(self) -> None:
        """Stop pulling. The inbox is drained, not dropped: a request the server sent before it saw our
        unsubscribe still reaches ``deliver`` (which hands it back), and the server discards our open
        pull requests once nobody listens on their inbox, so none of them swallows a later run."""
        self._stopped = True
        for task in (self._watchdog, self._retry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.drain()
