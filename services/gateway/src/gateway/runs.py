"""One run as the gateway sees it: its event subscription, the order check, timeouts, and cancel.

Subscribe first, then publish the request, so no event can be missed. Events arrive on core NATS
into a local queue; :meth:`RunStream.next` returns them in ``seq`` order or raises
:class:`RunStreamError` (gap, bad event, idle timeout) or :class:`ClientGone` (the HTTP client left).

Core NATS may lose events (a NATS server restart, a reconnect); every event is also kept for a while in
the RUN_EVENTS stream. An event that arrives ahead of its turn, or a reconnect (:func:`recover_all`),
makes the run read what the stream holds from its next ``seq`` on; events seen twice are dropped. Only
what the stream does not hold either is an ``event_gap``.

However a run fails — the runner's ``failed`` event, its runner lost (:meth:`RunStream.fail`), no runner
in time, the idle timeout, a bad event or a gap — :meth:`RunStream.next` logs it through
:mod:`gateway.runlog`, once per run: a ``failed`` event seen again (a runner resends its recent events
after a reconnect) is not logged again.

**A slow client.** The events wait in the local queue while the HTTP client is not reading (the relay's
write is blocked on the socket); the queue holds at most ``buffer_bytes`` of them
(``GATEWAY_STREAM_BUFFER_BYTES``). An event that would go past it stops the run: the runner is told to
cancel (it bills what was consumed), later events are dropped, and :meth:`RunStream.next` raises
``slow_client`` once the client has read what was queued; :attr:`RunStream.on_overflow` tells the relay
at once, so that a client which reads nothing more is not waited for forever. The runner never waits
for the client: it publishes on core NATS, which the gateway's connection reads whatever the HTTP side
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NoStreamResponseError, NotFoundError
from pydantic import ValidationError

from contracts import RUN_EVENT, CancelRun, ErrorInfo, RunEvent, RunFailed, RunRequest, Subjects
from contracts.subjects import MSG_ID_HEADER
from servicekit.health import nats_answers
from servicekit.natsio import trace_headers

from . import runlog
from .errors import ClientGone, RunStreamError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext

log = logging.getLogger(__name__)

_CLIENT_GONE = object()
_RECOVER = object()
_TIMED_OUT = object()
#: How many more idle timeouts a started run's stream waits while NATS itself does not answer (a
#: server stalled or restarting holds the run's events, and the run goes on): failing it then would
#: tell the client to try again, and pay again, for an answer still coming. Bounded all the same.
DEAF_WINDOWS = 4
#: Pauses between reads of RUN_EVENTS while an event is still missing (about 5 s in all: after a NATS
#: reconnect, runners send their recent events again at once and once JetStream is back), during which
#: what core NATS brings is taken too.
_RECOVER_RETRIES = (0.1, 0.3, 0.6, 1.0, 1.0, 1.0, 1.0)
#: Events read from RUN_EVENTS in one fetch.
_RECOVER_BATCH = 256
#: Every run open in this process, so a reconnect can make each read what it missed.
_OPEN: weakref.WeakSet[RunStream] = weakref.WeakSet()
#: Runs being stopped for a slow client, and lost runs' ends being recorded (the tasks, kept until done).
_BACKGROUND: set[asyncio.Future[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


#: How long recording a lost run's end in RUN_EVENTS may take (two round trips to NATS), at most.
RECORD_LOST_TIMEOUT_S = 5.0
#: Bytes of events one stream holds for its client at most, unless told otherwise.
DEFAULT_BUFFER_BYTES = 1024 * 1024
#: How many times :meth:`RunStream.publish` tries to queue a run, and its pause before trying again
#: when the stream had no leader (a lost acknowledgement is tried again at once).
PUBLISH_ATTEMPTS = 3
PUBLISH_RETRY_PAUSE_S = 0.25
#: How long :meth:`RunStream.after_output` waits at most for the run's first output.
AFTER_OUTPUT_WITHIN_S = 0.005


def recover_all() -> int:
    """Make every open run read again what RUN_EVENTS holds (after a reconnect); how many."""
    runs = list(_OPEN)
    for run in runs:
        run.recover_soon()
    return len(runs)


def _error(message: str, code: str, status: int = 500) -> ErrorInfo:
    return ErrorInfo(status=status, type="server_error", message=message, code=code)


def _stream_error(message: str, code: str, status: int = 500) -> RunStreamError:
    return RunStreamError(_error(message, code, status))


#: What the client is told when no runner started its run within the queue timeout.
NO_RUNNER_IN_TIME = _error("No agent runner could take the request in time; try again shortly.", "no_capacity", 503)


def slow_client(limit: int) -> ErrorInfo:
    """What a client that read its stream too slowly is told (as the stream's last chunk)."""
    return ErrorInfo(
        status=408,
        type="invalid_request_error",
        message=f"The stream was read too slowly: more than {limit} bytes of it waited to be sent, so the run "
        "was stopped (billed for what it had done). Read streams as they arrive.",
        code="slow_client",
    )


class _Inbox:
    """What a run's subscription hands its reader: a queue whose wait for the next item has a deadline.

    ``asyncio.Queue`` with an ``asyncio.timeout`` around each wait costs a timer armed and cancelled
    per event, and a stream waits once per token. Here one timer serves every wait: each wait moves
    the deadline, and the timer, when it fires, either finds the deadline moved (and is set again for
    it) or fails the wait that is still pending. One reader at a time (the relay's task)."""

    __slots__ = ("_deadline", "_items", "_timer", "_waiter")

    def __init__(self) -> None:
        self._items: deque[bytes | _Failure | object] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    def put_nowait(self, item: bytes | _Failure | object) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pop(self) -> bytes | _Failure | object | None:
        """The next item, or None when there is none (no exception: a stream asks once per event, and
        a wait begun inside an ``except`` block would keep the exception and its frames alive)."""
        return self._items.popleft() if self._items else None

    def empty(self) -> bool:
        return not self._items

    async def get(self, wait_s: float) -> bytes | _Failure | object:
        """The next item; :class:`TimeoutError` when none came within ``wait_s``."""
        loop = asyncio.get_running_loop()
        while not self._items:
            self._deadline = deadline = loop.time() + wait_s
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._expire)
            self._waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait sets a timer of its own
        loop = waiter.get_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire)
        else:
            waiter.set_exception(TimeoutError())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _DirectDelivery:
    """Stands in for a nats-py subscription's pending queue, so that each message reaches ``deliver`` as
    the connection's reader parses it: no task per subscription and no queue between (what nats-py's
    ``subscribe(cb=…)`` costs per message, on the path every token takes). nats-py's reader calls
    ``put_nowait`` and does its byte accounting around it (``Client._process_msg``, nats-py 2.x, pinned;
    ``tests/integration/gateway/test_direct_delivery.py`` fails should it change). ``deliver`` must
    not block; an exception in it is logged, never raised into the connection's reader."""

    __slots__ = ("_deliver", "_sub")

    def __init__(self, sub: Subscription, deliver: Callable[[bytes], None]) -> None:
        self._sub = sub
        self._deliver = deliver

    def put_nowait(self, msg: Msg) -> None:
        data = msg.data
        self._sub._pending_size -= len(data)
        try:
            self._deliver(data)
        except Exception:
            log.exception("delivering a run event failed")

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


async def subscribe_direct(nc: Client, subject: str, deliver: Callable[[bytes], None]) -> Subscription:
    """A core NATS subscription whose messages' data go straight to ``deliver`` (:class:`_DirectDelivery`).
    Nothing arrives before this returns as long as nothing is published to ``subject`` before."""
    sub = await nc.subscribe(subject)  # no callback: nats-py starts no task for it
    sub._pending_queue = _DirectDelivery(sub, deliver)  # type: ignore[assignment]
    return sub


class _Failure:
    """A failure found outside the run's events (its runner was lost), queued to wake :meth:`RunStream.next`."""

    __slots__ = ("cause", "info", "recorded")

    def __init__(self, info: ErrorInfo, cause: str | None, recorded: bool = False) -> None:
        self.info = info
        self.cause = cause
        self.recorded = recorded


class RunStream:
    """The ordered event stream of one run."""

    __slots__ = (
        "__weakref__",
        "_about",
        "_ahead",
        "_buffer_bytes",
        "_deaf_windows",
        "_expected",
        "_failure_logged",
        "_held",
        "_js",
        "_nc",
        "_on_output",
        "_output_timer",
        "_queue",
        "_sub",
        "_subjects",
        "closed",
        "on_close",
        "on_overflow",
        "overflowed",
        "run_id",
        "runner_id",
    )

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        run_id: str,
        js: JetStreamContext | None = None,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> None:
        self._nc = nc
        self._js = js
        self._subjects = subjects
        self.run_id = run_id
        #: Events that arrived before their turn, by seq.
        self._ahead: dict[int, RunEvent] = {}
        self._queue = _Inbox()
        self._sub: Subscription | None = None
        self._expected = 0
        self._deaf_windows = 0
        self._failure_logged = False
        self.closed = False
        #: The runner executing the run, once its ``started`` event named it.
        self.runner_id: str | None = None
        #: Called once when the run closes (the runner watch forgets it).
        self.on_close: Callable[[RunStream], None] | None = None
        #: Bytes of events queued and not yet read by :meth:`next`, and the most it may hold.
        self._held = 0
        self._buffer_bytes = buffer_bytes
        #: Whether the client fell more than ``buffer_bytes`` behind (the run was stopped for it).
        self.overflowed = False
        #: Called once when that happens (the relay stops waiting for the client soon after).
        self.on_overflow: Callable[[], None] | None = None
        self._about = runlog.current()
        self._on_output: Callable[[], None] | None = None
        self._output_timer: asyncio.TimerHandle | None = None

    def after_output(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, off the path to the run's first token: when :meth:`next` hands over
        the first event after ``started`` (the first output, or the run's end), when the stream
        closes, or after :data:`AFTER_OUTPUT_WITHIN_S` — whichever comes first. Work that can wait
        (the next runs admitted ahead) is started there rather than while the run is starting."""
        self._on_output = callback
        self._output_timer = asyncio.get_running_loop().call_later(AFTER_OUTPUT_WITHIN_S, self._output_seen)

    def _output_seen(self) -> None:
        callback, self._on_output = self._on_output, None
        if self._output_timer is not None:
            self._output_timer.cancel()
            self._output_timer = None
        if callback is not None:
            callback()

    def _on_data(self, data: bytes) -> None:
        if self.overflowed:
            return  # the run is being stopped; what it still sends has nowhere to go
        held = self._held + len(data)
        if held > self._buffer_bytes:
            self.overflowed = True
            _in_background(self._overflow())
            return
        self._held = held
        self._queue.put_nowait(data)

    async def _overflow(self) -> None:
        """The client is ``buffer_bytes`` behind: stop the run, and end the stream after what is queued."""
        self.overflowed = True
        info = slow_client(self._buffer_bytes)
        cause = f"the client read too slowly: {self._held} bytes of events waited for it"
        if not self._failure_logged:
            self._failure_logged = True
            runlog.failed(self.run_id, info, cause, runner_id=self.runner_id, about=self._about)
        self._queue.put_nowait(_Failure(info, cause))
        try:
            # The cancel every runner reads (the client is gone as far as the run is concerned); the
            # reason in the gateway's log and metrics is slow_client.
            await self.cancel()
        except Exception:
            log.warning("cancelling run %s for a slow client failed", self.run_id, exc_info=True)
        if self.on_overflow is not None:
            self.on_overflow()

    async def open(self) -> None:
        self._sub = await subscribe_direct(self._nc, self._subjects.run_events(self.run_id), self._on_data)
        _OPEN.add(self)

    def recover_soon(self) -> None:
        """Make :meth:`next` read what RUN_EVENTS holds before it waits again (after a reconnect)."""
        self._queue.put_nowait(_RECOVER)

    async def publish(self, js: JetStreamContext, request: RunRequest | bytes, ack_wait_s: float) -> None:
        """Put the request (or its encoding) on the RUNS work queue (deduplicated by run id; carries the
        trace context).

        An acknowledgement that does not come within ``ack_wait_s`` (a loaded machine: a full garbage
        collection of a gateway carrying thousands of streams has taken most of a second), or a stream
        with no leader for a moment, is tried again, :data:`PUBLISH_ATTEMPTS` times in all: the
        message id makes a second copy of a request that was stored after all a duplicate JetStream
        drops, so the run is queued once either way."""
        data = request if isinstance(request, bytes) else request.model_dump_json().encode()
        headers = trace_headers({"Nats-Msg-Id": self.run_id})
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await js.publish(self._subjects.run_request, data, timeout=ack_wait_s, headers=headers)
                return
            except (TimeoutError, NoStreamResponseError) as exc:
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                log.info("queueing run %s: %s; trying again", self.run_id, type(exc).__name__)
                if isinstance(exc, NoStreamResponseError):
                    await asyncio.sleep(PUBLISH_RETRY_PAUSE_S)

    def buffered(self) -> bool:
        """Whether another event (or the client's departure) is already waiting: :meth:`next` won't wait."""
        return self._expected in self._ahead or not self._queue.empty()

    def fail(self, info: ErrorInfo, cause: str | None = None, *, record: bool = False) -> None:
        """Wake :meth:`next` with a :class:`RunStreamError` (the run's runner was lost); ``cause`` is for
        the log line, never the client. With ``record``, the failure also becomes the run's last event
        in RUN_EVENTS (:meth:`record_failure`), in the background."""
        recorded = record and self._js is not None
        self._queue.put_nowait(_Failure(info, cause, recorded))
        if recorded:
            _in_background(self.record_failure(info))

    async def record_failure(self, info: ErrorInfo) -> None:
        """Store a ``failed`` event after the run's last one in RUN_EVENTS, for a run whose runner can
        no longer end it (lost): whoever reads the run again — a retry of its ``Idempotency-Key``, on
        any gateway — then gets this failure at once, instead of waiting out the idle timeout for events
        that will never come. Stored once, whichever gateways record it (its message id). Best effort:
        NATS unreachable, the retry times out as before; a runner that was only slow, not gone, and
        publishes again is read after this end by nobody."""
        if self._js is None:
            return
        subject = self._subjects.run_events(self.run_id)
        try:
            async with asyncio.timeout(RECORD_LOST_TIMEOUT_S):
                try:
                    last = await self._js.get_last_msg(self._subjects.run_events_stream, subject)
                    seq = RUN_EVENT.validate_json(last.data).seq + 1 if last.data else 0
                except NotFoundError:
                    seq = 0
                event = RunFailed(run_id=self.run_id, seq=seq, error=info)
                await self._js.publish(
                    subject, event.model_dump_json().encode(), headers={MSG_ID_HEADER: f"{self.run_id}:lost"}
                )
        except Exception as exc:  # best effort, and expected while NATS is away: one line, no trace
            log.warning(
                "run %s: its end could not be recorded in RUN_EVENTS (%s: %s)", self.run_id, type(exc).__name__, exc
            )

    def _found_failure(self, failure: _Failure) -> RunStreamError:
        # Recorded (record_failure) as the event after the last one read: numbered so.
        return self._failed(failure.info, failure.cause, self._expected if failure.recorded else None)

    def _failed(self, info: ErrorInfo, cause: str | None, seq: int | None = None) -> RunStreamError:
        """Log the run's failure (the first one only) and return the error to raise."""
        if not self._failure_logged:
            self._failure_logged = True
            runlog.failed(self.run_id, info, cause, runner_id=self.runner_id)
        return RunStreamError(info, seq)

    def client_gone(self) -> None:
        """Wake :meth:`next` with :class:`ClientGone` (called when the HTTP client disconnects)."""
        self._queue.put_nowait(_CLIENT_GONE)

    async def next(self, wait_s: float) -> RunEvent:
        """The next event in order; no event at all (heartbeats included) within ``wait_s`` is an error."""
        while True:
            if self._ahead:
                ready = self._ahead.pop(self._expected, None)
                if ready is not None:
                    self._expected += 1
                    if self._on_output is not None and ready.seq:
                        self._output_seen()
                    return ready
            data = self._queue.pop()
            if data is None:
                try:
                    data = await self._queue.get(wait_s)
                except TimeoutError:
                    data = _TIMED_OUT  # decided outside the except block (no exception kept alive)
                if data is _TIMED_OUT:
                    if await self._deaf():
                        continue
                    raise self._timed_out(wait_s)
            if data is _CLIENT_GONE:
                raise ClientGone
            if isinstance(data, _Failure):
                raise self._found_failure(data)
            if data is _RECOVER:
                await self._recover()
                continue
            event = self._decode(data)  # type: ignore[arg-type]
            if event.seq == self._expected:
                self._expected += 1
                if self._on_output is not None and event.seq:
                    self._output_seen()
                return event
            if event.seq < self._expected:
                continue  # seen already (read again from RUN_EVENTS)
            # Ahead of its turn: core NATS lost the events between. The stream has them — or will in a
            # moment, when JetStream has just restarted with the NATS server: ask it a few times. The
            # runner sends its recent events again after a reconnect, so core NATS may bring them first
            # (in a cluster, RUN_EVENTS may be electing a leader while the servers left relay at once).
            # The whole gap, not only its first event: what RUN_EVENTS had not stored yet when it was read
            # will not come over core NATS again, and the event beyond it is already here.
            self._ahead[event.seq] = event
            for pause in _RECOVER_RETRIES:
                await self._recover()
                if self._first_missing() is None:
                    break
                await self._take_queued(pause)
                if self._first_missing() is None:
                    break
            missing = self._first_missing()
            if missing is not None:
                message = f"The agent run's events arrived out of order (expected {missing}, got {event.seq})."
                raise self._failed(_error(message, "event_gap"), "events missing from both NATS and RUN_EVENTS")

    def _first_missing(self) -> int | None:
        """The first event not here between the next one and the furthest one ahead (None: none missing)."""
        if not self._ahead:
            return None
        return next((seq for seq in range(self._expected, max(self._ahead)) if seq not in self._ahead), None)

    async def _take_queued(self, wait_s: float) -> None:
        """For up to ``wait_s``, or until the missing events come, move what core NATS delivers into
        ``_ahead``. The client's departure or a failure ends the wait as :meth:`next` would end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self._first_missing() is not None and (left := deadline - loop.time()) > 0:
            try:
                data = await self._queue.get(left)
            except TimeoutError:
                return
            if data is _CLIENT_GONE:
                raise ClientGone
            if isinstance(data, _Failure):
                raise self._found_failure(data)
            if data is _RECOVER:
                continue  # reading RUN_EVENTS again is what this wait is between
            event = self._decode(data)  # type: ignore[arg-type]
            if event.seq >= self._expected:
                self._ahead.setdefault(event.seq, event)

    def _decode(self, data: bytes) -> RunEvent:
        """An event taken from the queue (no longer held for the client); one that does not parse ends
        the stream (``bad_event``). A run's failure is logged as it arrives, even ahead of its turn."""
        self._held -= len(data)
        try:
            event = RUN_EVENT.validate_json(data)
        except ValidationError as exc:
            cause = f"an event that does not parse: {exc.errors()[0].get('msg', 'invalid')}"
            raise self._failed(_error("The agent run sent an invalid event.", "bad_event"), cause) from None
        if type(event) is RunFailed and event.seq >= self._expected and not self._failure_logged:
            self._failure_logged = True
            runlog.failed(self.run_id, event.error, event.detail, runner_id=self.runner_id)
        return event

    async def _deaf(self) -> bool:
        """Whether an idle timeout of this started run is NATS's silence, not the run's: NATS does not
        answer a round trip (then the stream waits another window, :data:`DEAF_WINDOWS` at most)."""
        if self._expected == 0 or self._js is None or self._deaf_windows >= DEAF_WINDOWS:
            return False
        if await nats_answers(self._nc):
            return False
        self._deaf_windows += 1
        log.info("run %s: no event, and NATS does not answer either: waiting again", self.run_id)
        return True

    def _timed_out(self, wait_s: float) -> RunStreamError:
        """No event within ``wait_s``: before the first, no runner took the run in time (a 503); after
        it, the run fell idle (a 504)."""
        if self._expected == 0:
            return self._failed(NO_RUNNER_IN_TIME, f"no runner started the run within {wait_s:g} s (queue timeout)")
        info = _error(f"The agent run sent nothing for {wait_s:g} s.", "run_timeout", 504)
        return self._failed(info, f"no event for {wait_s:g} s (idle timeout)")

    async def _recover(self) -> None:
        """Read the run's events from RUN_EVENTS (from the next one on) into ``_ahead``."""
        if self._js is None:
            return
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        try:
            psub = await self._js.pull_subscribe(
                self._subjects.run_events(self.run_id), stream=self._subjects.run_events_stream, config=config
            )
        except Exception:
            log.warning("reading run %s's events again failed", self.run_id, exc_info=True)
            return
        try:
            while True:
                try:
                    msgs = await psub.fetch(_RECOVER_BATCH, timeout=1.0)
                except TimeoutError:
                    break
                for msg in msgs:
                    try:
                        event = RUN_EVENT.validate_json(msg.data)
                    except ValidationError:
                        continue
                    if event.seq >= self._expected:
                        self._ahead.setdefault(event.seq, event)
                if len(msgs) < _RECOVER_BATCH:
                    break
        except Exception:
            log.warning("reading run %s's events again failed", self.run_id, exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def cancel(self, reason: str = "client_disconnected") -> None:
        """Tell the runner to stop (core NATS, best effort)."""
        msg = CancelRun(run_id=self.run_id, reason=reason)  # type: ignore[arg-type]
        await self._nc.publish(self._subjects.run_cancel(self.run_id), msg.model_dump_json().encode())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        self._queue.close()
        if self._on_output is not None:
            self._output_seen()
        if self.on_close is not None:
            self.on_close(self)
        if self._sub is not None:
            # The connection may be closing; the subscription dies with it then.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


class RunReplay:
    """A run's events read again from RUN_EVENTS, then live as the runner publishes them; those after
    ``after_seq`` are returned (-1: all).

    What resumes a stream on any gateway replica: an ordered JetStream consumer on the run's subject
    (history first, then new events, in stream order). Events the stream holds twice (a runner sends
    its recent events again after a NATS reconnect) are dropped; a missing one is an ``event_gap``.
    :meth:`next` raises :class:`RunStreamError` (``run_timeout``) when nothing arrives within its wait:
    heartbeats count, so a live run does not time out, while a run whose events expired does.

    The consumer delivers into a local queue. A reader for a client passes ``buffer_bytes``: past it
    (the client reads too slowly) the consumer stops, :attr:`on_overflow` is called, and :meth:`next`
    raises ``slow_client`` after what was queued — the run itself goes on (a replay does not own it).
    Without it, the queue is not bounded (the gateway's own readers, which read as fast as it comes).
    """

    __slots__ = (
        "_after",
        "_buffer_bytes",
        "_caught_up",
        "_expected",
        "_held",
        "_js",
        "_queue",
        "_stopping",
        "_sub",
        "_subjects",
        "on_overflow",
        "overflowed",
        "run_id",
    )

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        run_id: str,
        after_seq: int = -1,
        *,
        buffer_bytes: int | None = None,
    ) -> None:
        self._js = js
        self._subjects = subjects
        self.run_id = run_id
        self._after = after_seq
        self._sub: Any = None
        self._expected = 0
        self._caught_up = False
        self._queue: asyncio.Queue[tuple[bytes, bool] | ErrorInfo] = asyncio.Queue()
        self._held = 0
        self._buffer_bytes = buffer_bytes
        self.overflowed = False
        self.on_overflow: Callable[[], None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    async def open(self, timeout_s: float) -> None:
        """Create the consumer (ephemeral, in memory, gone when this reader is)."""
        async with asyncio.timeout(timeout_s):
            self._sub = await self._js.subscribe(
                self._subjects.run_events(self.run_id),
                stream=self._subjects.run_events_stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=30.0,
                cb=self._on_msg,
            )

    async def _on_msg(self, msg: Msg) -> None:
        if self.overflowed:
            return
        data = msg.data
        limit = self._buffer_bytes
        if limit is not None and self._held + len(data) > limit:
            self.overflowed = True
            info = ErrorInfo(
                status=408,
                type="invalid_request_error",
                message=f"The stream was read too slowly: more than {limit} bytes of it waited to be sent, so it "
                "was ended. Read it again from where it stopped.",
                code="slow_client",
            )
            self._queue.put_nowait(info)
            log.warning("run %s: a replayed stream's client read too slowly; the stream ends", self.run_id)
            if self.on_overflow is not None:
                self.on_overflow()
            self._stopping = asyncio.ensure_future(self._stop())  # not from within the subscription's callback
            return
        self._held += len(data)
        caught_up = False
        with contextlib.suppress(Exception):
            caught_up = msg.metadata.num_pending == 0
        self._queue.put_nowait((data, caught_up))

    async def _stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    @property
    def caught_up(self) -> bool:
        """Whether the last event returned was the newest the stream held when it was delivered."""
        return self._caught_up

    async def next(self, wait_s: float) -> RunEvent:
        """The run's next event in order."""
        assert self._sub is not None, "open() first"
        while True:
            # Not get_nowait's QueueEmpty: a wait inside its ``except`` block keeps the exception alive.
            if self._queue.empty():
                try:
                    async with asyncio.timeout(wait_s):
                        item = await self._queue.get()
                except TimeoutError:
                    raise _stream_error(f"The agent run sent nothing for {wait_s:g} s.", "run_timeout", 504) from None
            else:
                item = self._queue.get_nowait()
            if isinstance(item, ErrorInfo):
                raise RunStreamError(item)
            data, self._caught_up = item
            self._held -= len(data)
            try:
                event = RUN_EVENT.validate_json(data)
            except ValidationError:
                raise _stream_error("The agent run sent an invalid event.", "bad_event") from None
            if event.seq < self._expected:
                continue
            if event.seq > self._expected:
                raise _stream_error(
                    f"The agent run's events are no longer all kept (expected {self._expected}, got {event.seq}).",
                    "event_gap",
                )
            self._expected += 1
            if event.seq > self._after:
                return event

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
