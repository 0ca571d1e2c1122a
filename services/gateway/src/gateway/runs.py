"""One run as the gateway sees it: its event subscription, the order check, timeouts, and cancel.

Subscribe first, then publish the request, so no event can be missed. Events arrive on core NATS
into a local queue; :meth:`RunStream.next` returns them in ``seq`` order or raises
:class:`RunStreamError` (gap, bad event, idle timeout) or :class:`ClientGone` (the HTTP client left).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from contracts import RUN_EVENT, CancelRun, ErrorInfo, RunEvent, RunRequest, Subjects
from servicekit.natsio import trace_headers

from .errors import ClientGone, RunStreamError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext

_CLIENT_GONE = object()


def _stream_error(message: str, code: str, status: int = 500) -> RunStreamError:
    return RunStreamError(ErrorInfo(status=status, type="server_error", message=message, code=code))


class RunStream:
    """The ordered event stream of one run."""

    __slots__ = ("_expected", "_nc", "_queue", "_sub", "_subjects", "closed", "on_close", "run_id", "runner_id")

    def __init__(self, nc: Client, subjects: Subjects, run_id: str) -> None:
        self._nc = nc
        self._subjects = subjects
        self.run_id = run_id
        self._queue: asyncio.Queue[bytes | RunStreamError | object] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._expected = 0
        self.closed = False
        #: The runner executing the run, once its ``started`` event named it.
        self.runner_id: str | None = None
        #: Called once when the run closes (the runner watch forgets it).
        self.on_close: Callable[[RunStream], None] | None = None

    async def _on_msg(self, msg: Msg) -> None:
        self._queue.put_nowait(msg.data)

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(self._subjects.run_events(self.run_id), cb=self._on_msg)

    async def publish(self, js: JetStreamContext, request: RunRequest | bytes, ack_wait_s: float) -> None:
        """Put the request (or its encoding) on the RUNS work queue (deduplicated by run id; carries the
        trace context)."""
        await js.publish(
            self._subjects.run_request,
            request if isinstance(request, bytes) else request.model_dump_json().encode(),
            timeout=ack_wait_s,
            headers=trace_headers({"Nats-Msg-Id": self.run_id}),
        )

    def buffered(self) -> bool:
        """Whether another event (or the client's departure) is already waiting: :meth:`next` won't wait."""
        return not self._queue.empty()

    def fail(self, info: ErrorInfo) -> None:
        """Wake :meth:`next` with a :class:`RunStreamError` (the run's runner was lost)."""
        self._queue.put_nowait(RunStreamError(info))

    def client_gone(self) -> None:
        """Wake :meth:`next` with :class:`ClientGone` (called when the HTTP client disconnects)."""
        self._queue.put_nowait(_CLIENT_GONE)

    async def next(self, wait_s: float) -> RunEvent:
        """The next event in order; no event at all (heartbeats included) within ``wait_s`` is an error."""
        try:
            data = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                async with asyncio.timeout(wait_s):
                    data = await self._queue.get()
            except TimeoutError:
                raise _stream_error(f"The agent run sent nothing for {wait_s:g} s.", "run_timeout", 504) from None
        if data is _CLIENT_GONE:
            raise ClientGone
        if isinstance(data, RunStreamError):
            raise data
        try:
            event = RUN_EVENT.validate_json(data)  # type: ignore[arg-type]
        except ValidationError:
            raise _stream_error("The agent run sent an invalid event.", "bad_event") from None
        if event.seq != self._expected:
            raise _stream_error(
                f"The agent run's events arrived out of order (expected {self._expected}, got {event.seq}).",
                "event_gap",
            )
        self._expected += 1
        return event

    async def cancel(self, reason: str = "client_disconnected") -> None:
        """Tell the runner to stop (core NATS, best effort)."""
        msg = CancelRun(run_id=self.run_id, reason=reason)  # type: ignore[arg-type]
        await self._nc.publish(self._subjects.run_cancel(self.run_id), msg.model_dump_json().encode())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.on_close is not None:
            self.on_close(self)
        if self._sub is not None:
            # The connection may be closing; the subscription dies with it then.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
