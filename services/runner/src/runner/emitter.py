"""A run's event sequence: numbering (``seq`` 0, 1, 2 … heartbeats included) and heartbeats.

Transport-free: ``publish`` is any coroutine that sends bytes on the run's subject. The sequence
number is taken and the bytes handed to ``publish`` with no await in between, so events leave in
order even when a heartbeat and a delta race.

nats-py writes from a flusher task of its own, so a published event leaves only when the run next
yields to the event loop. ``flush=True`` yields at once: for events the client is waiting on (a
call's first delta, the end), which would otherwise wait behind whatever CPU work follows (decoding a
burst of buffered chunks). ``started`` is not flushed: the provider request goes out first, and
``started`` with the run's first wait for the provider.

The events of the last :data:`REPLAY_WINDOW_S` seconds (at most :data:`REPLAY_EVENTS`) are kept:
after a reconnect (a NATS restart) the runner sends them again (:meth:`EventEmitter.replay`), because
events published while the server was coming back may have reached neither the gateway nor the
RUN_EVENTS stream; a gateway drops what it saw already. Bounding by age as well as by count keeps a
slow stream's copy small: thousands of open streams at a few tokens a second keep a few KB each.

:class:`DeltaBatch` joins the deltas that arrived together (one read from the provider) into one event:
a fast model's burst, or a runner catching up under load, then costs one message per read instead of
one per token — in the runner, in NATS and RUN_EVENTS, and in the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from contracts.events import DeltaEncoder, Heartbeat, ReasoningDelta, TextDelta, ToolCallArgumentsDelta, _RunEvent

Publish = Callable[[bytes], Awaitable[None]]

#: The per-token events, written by :class:`~contracts.events.DeltaEncoder` instead of their models.
_DELTAS = frozenset({TextDelta, ReasoningDelta, ToolCallArgumentsDelta})

#: A batch of deltas is sent once it holds this many characters, whatever else is waiting (far below
#: any NATS payload limit, even with every character escaped).
MAX_BATCH_CHARS = 16_384

#: Events of a run kept to be sent again after a reconnect, at most (a few seconds of a fast stream).
REPLAY_EVENTS = 256
#: ...and only those published this recently: longer than nats-py takes to notice a lost server and
#: reconnect to one that came back (its events sent before that reached the server already).
REPLAY_WINDOW_S = 15.0


class EventEmitter:
    def __init__(self, run_id: str, publish: Publish, heartbeat_s: float) -> None:
        self.run_id = run_id
        self.seq = 0
        self._publish = publish
        self._heartbeat_s = heartbeat_s
        self._last = time.monotonic()
        self._recent: deque[tuple[float, bytes]] = deque(maxlen=REPLAY_EVENTS)
        self._deltas = DeltaEncoder(run_id)

    async def emit(self, event_type: type[_RunEvent], /, *, flush: bool = False, **fields: Any) -> None:
        if event_type in _DELTAS:
            delta: str = fields["delta"]
            if len(delta) > MAX_BATCH_CHARS:
                # One delta larger than a message may carry (a provider's single multi-megabyte chunk):
                # sent in pieces, as if it had come so.
                for start in range(0, len(delta), MAX_BATCH_CHARS):
                    await self.emit(
                        event_type, flush=flush, **{**fields, "delta": delta[start : start + MAX_BATCH_CHARS]}
                    )
                return
            data = self._deltas.encode(event_type, self.seq, delta, fields.get("index"))  # type: ignore[arg-type]
        else:
            data = event_type(run_id=self.run_id, seq=self.seq, **fields).model_dump_json().encode()
        self.seq += 1
        self._last = now = time.monotonic()
        recent = self._recent
        recent.append((now, data))
        while recent[0][0] < now - REPLAY_WINDOW_S:
            recent.popleft()
        await self._publish(data)
        if flush:
            await asyncio.sleep(0)

    async def replay(self) -> int:
        """Send the kept events again, in order (after a reconnect); how many."""
        kept = list(self._recent)
        for _, data in kept:
            await self._publish(data)
        return len(kept)

    async def heartbeats(self) -> None:
        """Send a :class:`Heartbeat` whenever nothing was sent for ``heartbeat_s``; run as a task."""
        while True:
            wait = self._last + self._heartbeat_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self.emit(Heartbeat)


class DeltaBatch:
    """The way a model call's deltas reach the emitter. With ``hold`` (the adapter marks its pauses,
    :data:`runner.providers.base.PAUSE`), deltas are held until the loop calls :meth:`release` — at
    every pause, before any other event, at the end of the call — and sent as one event: consecutive
    deltas of one kind (and, for tool call arguments, one call) are joined; another kind, or
    :data:`MAX_BATCH_CHARS`, sends what is held first. Without ``hold`` every delta is sent as it
    comes. :meth:`first` sends a kind's first delta alone, at once, either way (time to first token)."""

    __slots__ = ("_emit", "_hold", "_index", "_kind", "_parts", "_size")

    def __init__(self, emitter: EventEmitter, *, hold: bool) -> None:
        self._emit = emitter.emit
        self._hold = hold
        self._kind: type[_RunEvent] | None = None
        self._index: int | None = None
        self._parts: list[str] = []
        self._size = 0

    async def first(self, kind: type[_RunEvent], delta: str) -> None:
        """A kind's first delta of the call: what is held goes first, then this one alone, flushed."""
        await self.release()
        await self._emit(kind, flush=True, delta=delta)

    async def add(self, kind: type[_RunEvent], delta: str, index: int | None = None) -> None:
        if not self._hold:
            if index is None:
                await self._emit(kind, delta=delta)
            else:
                await self._emit(kind, index=index, delta=delta)
            return
        if self._parts and (kind is not self._kind or index != self._index):
            await self.release()
        self._kind, self._index = kind, index
        self._parts.append(delta)
        self._size += len(delta)
        if self._size >= MAX_BATCH_CHARS:
            await self.release()

    async def release(self) -> None:
        """Send what is held, as one event."""
        if not self._parts:
            return
        assert self._kind is not None
        delta = self._parts[0] if len(self._parts) == 1 else "".join(self._parts)
        self._parts.clear()
        self._size = 0
        if self._index is None:
            await self._emit(self._kind, delta=delta)
        else:
            await self._emit(self._kind, index=self._index, delta=delta)
